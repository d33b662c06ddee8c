"""The worker side of the Feast tasks: load the repository, apply it, materialise, read
historical features; Feast's errors become FeastFailed naming the repository and the fix.

Runs in the task's own uv environment (Feast pins pandas<3 and much else, see `tasks.py`):
imports the standard library and `cadenza.integrations.errors` at module level, Feast and
pandas inside the functions.

Outcomes, by case:
  1. materialise: every feature view asked for is loaded for [start, end) ->
     {"feature_views": [...], "start": ISO, "end": ISO};
  2. historical features -> the training frame (a pandas DataFrame: Parquet downstream);
  3. the repository does not load or apply (feature_store.yaml, the definitions) ->
     FeastFailed with Feast's message;
  4. a feature view or feature named that the repository lacks -> FeastFailed listing what
     it has;
  5. start/end that are not dates, or end before start -> FeastFailed saying so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cadenza.integrations.errors import FeastFailed, IntegrationMissing, task_location


def _fail(message: str, hint: str) -> FeastFailed:
    pipeline, task = task_location()
    return FeastFailed(message, pipeline=pipeline, task=task, hint=hint)


def moment(value: Any, what: str) -> datetime:
    """A datetime from a datetime, a date or ISO text; naive means UTC."""
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, date):
        found = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            found = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(f"{what} is not a date or time: {value!r}",
                        f"pass a datetime or ISO text, e.g. {what}='2026-01-01T00:00:00'") from None
    else:
        raise _fail(f"{what} must be a datetime or ISO text, got {type(value).__name__}",
                    f"{what}=datetime(2026, 1, 1, tzinfo=timezone.utc)")
    return found if found.tzinfo else found.replace(tzinfo=UTC)


@contextlib.contextmanager
def _kept_cwd() -> Iterator[None]:
    """Feast's apply changes the working directory to the repository: put it back."""
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def open_store(repo_path: str, *, apply: bool) -> Any:
    """The repository's FeatureStore, applied first when `apply` (case 3 on failure)."""
    try:
        from feast import FeatureStore
        from feast.repo_config import load_repo_config
        from feast.repo_operations import apply_total
    except ImportError as exc:
        pipeline, task = task_location()
        raise IntegrationMissing(
            f"feast is not installed in this task's environment ({exc})", pipeline=pipeline,
            task=task, hint="leave requirements= unset (Feast runs in its own environment), "
            "or install feast where the task runs") from exc
    repo = Path(repo_path)
    yaml = repo / "feature_store.yaml"
    try:
        with _kept_cwd():
            config = load_repo_config(repo, yaml)
            if apply:
                print(f"[cadenza] feast apply {repo}", flush=True)
                apply_total(config, repo, skip_source_validation=False)
            return FeatureStore(repo_path=str(repo))
    except SystemExit as exc:  # Feast exits on some definition errors
        raise _fail(f"feast could not apply the repository at {repo} (it exited with "
                    f"{exc.code}; the task log has its message)",
                    "fix the feature definitions, then run the task again") from None
    except Exception as exc:
        raise _fail(f"the Feast repository at {repo} did not load: {_first_line(exc)}",
                    "check feature_store.yaml and the feature definitions (`feast plan` in "
                    "the repository shows the problem)") from exc


def materialize(repo_path: str, start: Any, end: Any, feature_views: Sequence[str] | None,
                *, apply: bool) -> dict[str, Any]:
    """`FeatureStore.materialize` for [start, end) (case 1)."""
    begin, until = moment(start, "start"), moment(end, "end")
    if until < begin:
        raise _fail(f"end ({until.isoformat()}) is before start ({begin.isoformat()})",
                    "pass an end after the start")
    store = open_store(repo_path, apply=apply)
    known = sorted(fv.name for fv in store.list_feature_views())
    names = list(feature_views) if feature_views else known
    missing = [n for n in names if n not in known]
    if missing:
        raise _fail(f"the repository has no feature view {', '.join(map(repr, missing))}; "
                    f"it has: {', '.join(known) or 'none'}",
                    "name feature views the repository defines in feature_views=, or leave "
                    "it out to materialise them all")
    print(f"[cadenza] feast materialize {begin.isoformat()} {until.isoformat()} "
          f"{' '.join(names)}", flush=True)
    try:
        with _kept_cwd():
            store.materialize(start_date=begin, end_date=until, feature_views=names)
    except Exception as exc:
        raise _fail(f"feast materialize failed: {_first_line(exc)}",
                    "the task log has Feast's output; check the sources' data and the "
                    "online store in feature_store.yaml") from exc
    return {"feature_views": names, "start": begin.isoformat(), "end": until.isoformat()}


def historical_features(repo_path: str, entity_df: Any, features: Sequence[str],
                        *, full_feature_names: bool, apply: bool) -> Any:
    """`get_historical_features(...).to_df()` (case 2)."""
    store = open_store(repo_path, apply=apply)
    known = {f"{fv.name}:{f.name}" for fv in store.list_feature_views() for f in fv.features}
    missing = [f for f in features if f not in known]
    if missing:
        raise _fail(f"the repository has no feature {', '.join(map(repr, missing))}; it has: "
                    f"{', '.join(sorted(known)) or 'none'}",
                    "name features as 'feature_view:feature'")
    try:
        with _kept_cwd():
            job = store.get_historical_features(entity_df=entity_df, features=list(features),
                                                full_feature_names=full_feature_names)
            return job.to_df()
    except Exception as exc:
        raise _fail(f"feast could not read historical features: {_first_line(exc)}",
                    "the entity frame needs the entity key columns and an event_timestamp "
                    "column; the task log has Feast's output") from exc
