"""`feast_materialize` and `feast_historical_features`: a Feast feature repository as
Cadenza tasks (SPEC §9).

What belongs here: the definition side. Called in a `@pipeline` body, each adds a task whose
function runs Feast in the worker (`run.py`) and returns its output reference; called
anywhere else, it runs now. Retries, timeouts, pools, caching and resume are the engine's.

Feast's own environment. Feast pins pandas<3 (Cadenza's data extra has pandas 3) and many
other packages, so its tasks run, by default, in a per-task uv environment holding
`FEAST_REQUIREMENTS` (executors/envs.py: built once per machine and kept). A training frame
crosses that boundary as Parquet, so the next task reads it with the driver's pandas. Pass
your own `requirements=[...]` (another Feast version, its extras for other stores), or
`requirements=[]` to use a Feast installed where Cadenza runs.

The repository is applied (`feast apply`) before each task by default (`apply=True`): cheap
and idempotent with the local provider, and a repository never applied would otherwise fail.

Cache keys: the repository's files (feature_store.yaml, the definitions, file sources inside
it; not its SQLite registry and online store, which runs write) are a closure value of the
task's function, hashed by content; start, end, the entity frame and the feature names are
the task's arguments.

Example:
    @pipeline
    def features(day: str = "2026-01-02"):
        loaded = feast_materialize("feature_repo", start="2026-01-01", end=day)
        frame = feast_historical_features("feature_repo", entities(day),
                                          ["driver_stats:trips", "driver_stats:rating"])
        loaded >> frame
        train(frame)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cadenza.authoring.builder import current_builder
from cadenza.authoring.task import TaskDef
from cadenza.core.errors import DefinitionError, Problem
from cadenza.integrations.files import caller_dir, folder_digest, resolve_folder

# Tested end to end with the local provider (tests/integration/test_feast.py).
FEAST_REQUIREMENTS: tuple[str, ...] = ("feast==0.67.0",)
_WRITTEN = (".db", ".db-journal", ".db-wal", ".db-shm")  # registry and online store files


def _repo(repo_path: Any, depth: int, task: str) -> tuple[str, list[Problem], str]:
    repo = resolve_folder(repo_path, caller_dir(depth + 1))
    assert repo is not None
    if not (repo / "feature_store.yaml").is_file():
        return str(repo), [Problem(
            message=f"no Feast repository at {repo} (feature_store.yaml not found)", task=task,
            hint="pass the folder holding feature_store.yaml, relative to the pipeline's file "
            "or absolute")], ""
    return str(repo), [], folder_digest(Path(repo), skip_suffixes=_WRITTEN)


def _finish(fn: Callable[..., Any], task_name: str, name: str | None,
            requirements: Sequence[str] | None, options: dict[str, Any],
            problems: list[Problem], arguments: dict[str, Any]) -> Any:
    fn.__name__ = task_name
    # A name of its own per task: the processes pool keeps one pickled function per name.
    fn.__qualname__ = f"{fn.__qualname__.split('.')[0]}.<{task_name}>"
    options = {**options, "requirements": list(FEAST_REQUIREMENTS if requirements is None
                                                else requirements)}
    tdef = TaskDef(fn, name=task_name, explicit=name is not None, **options)
    tdef.problems.extend(problems)
    if current_builder() is None and tdef.problems:
        raise DefinitionError(None, list(tdef.problems))  # outside a pipeline: it runs now
    return tdef(**arguments)


def feast_materialize(repo_path: str | os.PathLike[str], start: Any, end: Any, *,
                      feature_views: Sequence[str] | None = None, apply: bool = True,
                      name: str | None = None, requirements: Sequence[str] | None = None,
                      **options: Any) -> Any:
    """Load the features of [start, end) from the offline store into the online store
    (`FeatureStore.materialize`); inside a `@pipeline` body, add the task and return its
    output reference (the feature views loaded and the interval, as ISO text).

    `start`/`end` are datetimes, dates or ISO text (naive means UTC) and may be pipeline
    parameters or upstream outputs; `feature_views` limits it to some views (default all).
    Other keyword arguments are @task's options.

    Example:
        feast_materialize("feature_repo", start=since, end=day, retries=2, timeout=1800)
    """
    task_name = name or "feast_materialize"
    repo, problems, digest = _repo(repo_path, 1, task_name)
    views = None if feature_views is None else [str(v) for v in feature_views]
    config: dict[str, Any] = {"repo": repo, "digest": digest, "feature_views": views,
                              "apply": bool(apply)}

    def materialize(start: Any, end: Any) -> dict[str, Any]:
        from cadenza.integrations.feast.run import materialize as run

        return run(config["repo"], start, end, config["feature_views"], apply=config["apply"])

    return _finish(materialize, task_name, name, requirements, options, problems,
                   {"start": start, "end": end})


def feast_historical_features(repo_path: str | os.PathLike[str], entity_df: Any,
                              features: Sequence[str], *, full_feature_names: bool = False,
                              apply: bool = True, name: str | None = None,
                              requirements: Sequence[str] | None = None,
                              **options: Any) -> Any:
    """A point-in-time correct training frame (`get_historical_features(...).to_df()`):
    for each row of `entity_df` (entity keys and an `event_timestamp`; usually an upstream
    task's DataFrame) the feature values as of that time. Inside a `@pipeline` body, add the
    task and return its output reference (a pandas DataFrame, Parquet in the artifact store).

    `features` are "feature_view:feature" names. Other keyword arguments are @task's options.

    Example:
        frame = feast_historical_features("feature_repo", labels(day),
                                          ["driver_stats:trips", "driver_stats:rating"])
        train(frame)
    """
    task_name = name or "feast_features"
    repo, problems, digest = _repo(repo_path, 1, task_name)
    if isinstance(features, str) or not features or not all(
            isinstance(f, str) and ":" in f for f in features):
        problems.append(Problem(
            message=f"features must be a list of 'feature_view:feature' names, got {features!r}",
            task=task_name, hint='features=["driver_stats:trips", "driver_stats:rating"]'))
    config: dict[str, Any] = {"repo": repo, "digest": digest,
                              "full_feature_names": bool(full_feature_names),
                              "apply": bool(apply)}

    def historical_features(entity_df: Any, features: list[str]) -> Any:
        from cadenza.integrations.feast.run import historical_features as run

        return run(config["repo"], entity_df, features,
                   full_feature_names=config["full_feature_names"], apply=config["apply"])

    return _finish(historical_features, task_name, name, requirements, options, problems,
                   {"entity_df": entity_df,
                    "features": list(features) if not isinstance(features, str) else []})
