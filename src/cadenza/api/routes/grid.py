"""`/api/v1/pipelines/{name}/grid`: a pipeline's runs x tasks states, for the grid view.

What belongs here: the one read the UI's grid needs, compactly encoded (see `GridOut`).
A page is one runs query (keyset, newest first) plus one query of the task instance
states of those runs (summary rows only; the primary key's run_id prefix answers it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from cadenza.api.auth import RequireViewer
from cadenza.api.deps import CatalogDep, StoreDep
from cadenza.api.errors import FieldError
from cadenza.api.pagination import Cursor, decode_cursor, encode_cursor
from cadenza.api.schemas import GridOut, RunBriefOut
from cadenza.core.states import TaskState
from cadenza.store.run_views import RunFilter, runs_page, task_states

router = APIRouter(prefix="/pipelines", tags=["pipelines"])

CODES: tuple[TaskState, ...] = tuple(TaskState)
_LETTER = {state: chr(ord("a") + i) for i, state in enumerate(CODES)}


@router.get("/{name}/grid", dependencies=[RequireViewer])
def pipeline_grid(
    name: Annotated[str, Path(max_length=200)], store: StoreDep, catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Runs per page.")] = 100,
    cursor: Cursor = None,
) -> GridOut:
    """The newest `limit` runs of the pipeline and each one's task states, tasks in the
    pipeline's graph order (tasks only older runs had come last)."""
    plan = catalog.get(name)  # 404 naming the pipelines when unknown
    after = None
    if cursor:
        at, run_id = decode_cursor(cursor, (datetime, str))
        if at is None:
            raise FieldError([("query", "cursor")], "not a cursor of this list")
        after = (at, run_id)
    runs = runs_page(store, RunFilter(pipeline=name), after=after, limit=limit + 1)
    page = runs[:limit]
    states = task_states(store, [r.run_id for r in page])
    tasks = plan.topological_ids()
    known = set(tasks)
    for per_run in states.values():
        for task_id in sorted(per_run.keys() - known):
            known.add(task_id)
            tasks.append(task_id)
    cells = ["".join(_LETTER[s] if (s := states[r.run_id].get(t)) else "." for t in tasks)
             for r in page]
    nxt = (encode_cursor(page[-1].created_at, page[-1].run_id)
           if len(runs) > limit and page else None)
    return GridOut(
        tasks=tasks, codes=list(CODES), cells=cells, next_cursor=nxt,
        runs=[RunBriefOut(run_id=r.run_id, state=r.state, created_at=r.created_at,
                          logical_date=r.logical_date) for r in page])
