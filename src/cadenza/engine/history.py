"""Past runs as data: the RunResult of any stored run, as `cadenza.get_run` returns it.

What belongs here: finding stored runs (by id or unique prefix, or by pipeline and state)
and building their RunResults with outputs that load from the artifact store on first read.
What does not: reading artifacts (the RunResult's lazy outputs in `api.py` do that, through
`artifacts/`), or changing runs (resume is `resume.py`).

The store is the one the settings name (CADENZA_HOME, cadenza.toml, CADENZA_DATABASE_URL),
as for every other entry point.
"""

from __future__ import annotations

import logging
from typing import Any

from cadenza.core.errors import RunNotFound, UsageError
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState
from cadenza.engine.api import RunResult, result_from_store
from cadenza.graph.plan import HasPlan, Plan, plan_of

log = logging.getLogger(__name__)


def _open(settings: Settings | None) -> tuple[Any, Settings]:
    from cadenza.store import open_store

    settings = settings or get_settings()
    return open_store(settings.database_url), settings


def _store_where(store: Any) -> str:
    from cadenza.store import mask_url

    return mask_url(store.url)


def get_run(run_id: str, *, settings: Settings | None = None) -> RunResult:
    """The RunResult of a stored run, by id or a unique prefix of it (as the CLI takes).

    `state`, `task_states` and `failed` are read at once; `outputs[task_id]` is loaded from
    the artifact store the first time it is read, then kept (a mapped task's output is the
    list of its instances' outputs, in map order). `resume()` finishes a failed run; it
    loads the pipeline from where the run was started, or takes `pipeline=`.

    Raises RunNotFound (naming the store searched) if no run matches, UsageError if the
    prefix matches several runs.

    Example:
        >>> import cadenza
        >>> result = cadenza.get_run("6931a2f4c1")
        >>> result.state, result.outputs["train"]
        (<RunState.SUCCESS: 'success'>, LogisticRegression(...))
    """
    store, settings = _open(settings)
    try:
        full_id = store.resolve_run_id(run_id)
    except RunNotFound as exc:
        raise RunNotFound(
            f"no run with id '{run_id}' in the store at {_store_where(store)}",
            hint="list run ids with `cadenza runs list` or cadenza.get_runs(); the store is "
            "chosen by CADENZA_HOME, cadenza.toml or CADENZA_DATABASE_URL: open the "
            "notebook from the project folder or set them",
        ) from exc
    return result_from_store(store, full_id, settings.artifact_root)


def get_runs(
    *,
    pipeline: str | Plan | HasPlan | None = None,
    state: RunState | str | None = None,
    limit: int = 20,
    settings: Settings | None = None,
) -> list[RunResult]:
    """Stored runs as RunResults, newest first; outputs load lazily, as with `get_run`.

    `pipeline` is a name or the pipeline itself; `state` a RunState or its name
    ("success", "failed", ...); at most `limit` runs.

    Example:
        >>> [r.outputs["evaluate"]["auc"] for r in cadenza.get_runs(pipeline="training",
        ...                                                         state="success", limit=5)]
        [0.91, 0.9, 0.88, 0.9, 0.87]
    """
    name = pipeline if pipeline is None or isinstance(pipeline, str) else plan_of(pipeline).name
    wanted = None if state is None else _run_state(state)
    store, settings = _open(settings)
    return [result_from_store(store, run.run_id, settings.artifact_root, run=run)
            for run in store.list_runs(pipeline=name, state=wanted, limit=limit)]


def _run_state(state: RunState | str) -> RunState:

    try:
        return RunState(state)
    except ValueError:
        raise UsageError(f"unknown run state '{state}'",
                         hint=f"use one of {', '.join(s.value for s in RunState)}") from None


__all__ = ["get_run", "get_runs"]
