"""Run reads for browsing surfaces (the REST API, the UI): pages of runs, the newest runs of
each pipeline, a run's task instances without its mapped children. (`browse.py` pages
pools, assets, events, SLA misses and attempts.)

What belongs here: keyset-paginated, index-backed reads that take and return core
records. What does not: writes, or the engine's reads (`runs.py`).

Every list is ordered by a unique key and read "after" the previous page's last key (seek
pagination): the runs list is newest first by (created_at, run_id), which the indexes
(created_at), (pipeline, created_at) and (state, created_at) of `runs` answer without
reading the rows of earlier pages.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, tuple_

from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.states import RunState, TaskState
from cadenza.store.codec import RUN_COLUMNS, TI_COLUMNS, run_from_row, ti_from_row
from cadenza.store.db import translated
from cadenza.store.runs import RunStore, _run_not_found
from cadenza.store.tables import runs_table, task_instances_table

_runs = runs_table
_tis = task_instances_table


@contextmanager
def _reading(store: RunStore) -> Iterator[Connection]:
    """A connection for one request's reads. On PostgreSQL in autocommit: each statement
    is its own snapshot either way (READ COMMITTED), and no BEGIN/ROLLBACK travels to the
    server (a run's detail: 4 round trips -> 2, counted as psycopg waits). SQLite keeps its
    read transaction: one snapshot across the statements, and BEGIN costs no round trip."""
    with store._read_engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Which runs a list shows (every field optional; ranges are inclusive)."""

    pipeline: str | None = None
    states: Collection[RunState] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None
    logical_from: datetime | None = None
    logical_to: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunBrief:
    run_id: str
    pipeline: str
    state: RunState
    created_at: datetime
    logical_date: datetime | None


@translated("listing runs")
def runs_page(store: RunStore, where: RunFilter, *, after: tuple[datetime, str] | None,
              limit: int) -> list[RunRecord]:
    """Up to `limit` runs matching `where`, newest first by (created_at, run_id), starting
    after the key `after` (the last run of the previous page)."""
    r = _runs.c
    q = select(*RUN_COLUMNS)
    if where.pipeline is not None:
        q = q.where(r.pipeline == where.pipeline)
    if where.states:
        q = q.where(r.state.in_([RunState(s).value for s in where.states]))
    if where.created_from is not None:
        q = q.where(r.created_at >= where.created_from)
    if where.created_to is not None:
        q = q.where(r.created_at <= where.created_to)
    if where.logical_from is not None:
        q = q.where(r.logical_date >= where.logical_from)
    if where.logical_to is not None:
        q = q.where(r.logical_date <= where.logical_to)
    if after is not None:
        at, run_id = after
        # The row value seeks the (..., created_at, run_id) index; the plain bound helps
        # planners that do not range-scan on row values.
        q = q.where(r.created_at <= at, tuple_(r.created_at, r.run_id) < tuple_(at, run_id))
    q = q.order_by(r.created_at.desc(), r.run_id.desc()).limit(limit)
    with _reading(store) as conn:
        return [run_from_row(row) for row in conn.execute(q)]


@translated("reading recent runs")
def recent_runs(store: RunStore, pipelines: Sequence[str], per_pipeline: int
                ) -> dict[str, list[RunBrief]]:
    """The newest `per_pipeline` runs of each pipeline, newest first: one indexed read of
    (pipeline, created_at) per pipeline, on one connection."""
    r = _runs.c
    out: dict[str, list[RunBrief]] = {}
    if per_pipeline <= 0:
        return {name: [] for name in pipelines}
    with _reading(store) as conn:
        for name in pipelines:
            rows = conn.execute(
                select(r.run_id, r.state, r.created_at, r.logical_date)
                .where(r.pipeline == name)
                .order_by(r.created_at.desc(), r.run_id.desc())
                .limit(per_pipeline))
            out[name] = [RunBrief(run_id=row[0], pipeline=name, state=RunState(row[1]),
                                  created_at=row[2], logical_date=row[3]) for row in rows]
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RunTasks:
    """A run's task instances without mapped children (map index -1 rows: plain tasks and
    mapped tasks' summaries), and per mapped task how many children are in each state."""

    instances: list[TaskInstanceRecord]
    map_states: dict[str, dict[TaskState, int]]


@translated("reading a run")
def run_with_tasks(store: RunStore, run_id: str) -> tuple[RunRecord, RunTasks]:
    """The run and its task instances (as `RunTasks`), on one connection; RunNotFound if
    there is no such run."""
    r, t = _runs.c, _tis.c
    with _reading(store) as conn:
        row = conn.execute(select(*RUN_COLUMNS).where(r.run_id == run_id)).first()
        if row is None:
            raise _run_not_found(run_id)
        rows = conn.execute(select(*TI_COLUMNS).where(t.run_id == run_id, t.map_index == -1)
                            .order_by(t.task_id))
        instances = [ti_from_row(ti) for ti in rows]
        counts: dict[str, dict[TaskState, int]] = {}
        if any(ti.map_count is not None for ti in instances):
            for task_id, state, n in conn.execute(
                    select(t.task_id, t.state, func.count())
                    .where(t.run_id == run_id, t.map_index >= 0)
                    .group_by(t.task_id, t.state)):
                counts.setdefault(task_id, {})[TaskState(state)] = int(n)
    return run_from_row(row), RunTasks(instances=instances, map_states=counts)


@translated("reading task states of runs")
def task_states(store: RunStore, run_ids: Collection[str]) -> dict[str, dict[str, TaskState]]:
    """For each run, its tasks' states (a mapped task by its summary row): what a runs x
    tasks grid draws. One query on the primary key's (run_id, ...) prefix, three columns."""
    t = _tis.c
    out: dict[str, dict[str, TaskState]] = {run_id: {} for run_id in run_ids}
    if not out:
        return out
    with _reading(store) as conn:
        rows = conn.execute(select(t.run_id, t.task_id, t.state)
                            .where(t.run_id.in_(list(out)), t.map_index == -1))
        for run_id, task_id, state in rows:
            out[run_id][task_id] = TaskState(state)
    return out


__all__ = ["RunBrief", "RunFilter", "RunTasks", "recent_runs", "run_with_tasks", "runs_page",
           "task_states"]
