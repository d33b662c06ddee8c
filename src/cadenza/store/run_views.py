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

import functools
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, select, tuple_

from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.states import RunState, TaskState
from cadenza.store.codec import run_from_row, ti_from_row
from cadenza.store.db import translated
from cadenza.store.runs import RunStore, _run_not_found
from cadenza.store.tables import (
    RUN_COLUMNS,
    TI_COLUMNS,
    UTCDateTime,
    runs_table,
    task_instances_table,
)

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


_PAGE_KEYS = ("pipeline", "states", "created_from", "created_to", "logical_from", "logical_to",
              "after")


# What a runs list shows of a run, in this order (`runs_list_rows`): not `extra` (the task
# order, which can be long), `source`, the driver's id or its heartbeat.
RUN_LIST_FIELDS = ("run_id", "pipeline", "state", "trigger", "params", "tags", "created_at",
                   "started_at", "ended_at", "logical_date", "data_interval_start",
                   "data_interval_end", "executor", "error", "cancel_requested_at")
_RUN_LIST_COLUMNS = tuple(_runs.c[name] for name in RUN_LIST_FIELDS)


@functools.lru_cache(maxsize=128)
def _page_statement(shape: tuple[bool, ...], brief: bool = False) -> Select[Any]:
    """The runs page query for a filter shape (which of _PAGE_KEYS are set), with bound
    parameters. Built once per shape: a statement built per request cost more Python than
    the rest of the request (SQLAlchemy's cache key and result column map, ~0.85 ms of CPU
    a call on the CI VM; cProfile)."""
    r = _runs.c
    on = dict(zip(_PAGE_KEYS, shape, strict=True))
    q = select(*(_RUN_LIST_COLUMNS if brief else RUN_COLUMNS))
    if on["pipeline"]:
        q = q.where(r.pipeline == bindparam("pipeline"))
    if on["states"]:
        q = q.where(r.state.in_(bindparam("states", expanding=True)))
    if on["created_from"]:
        q = q.where(r.created_at >= bindparam("created_from", type_=UTCDateTime()))
    if on["created_to"]:
        q = q.where(r.created_at <= bindparam("created_to", type_=UTCDateTime()))
    if on["logical_from"]:
        q = q.where(r.logical_date >= bindparam("logical_from", type_=UTCDateTime()))
    if on["logical_to"]:
        q = q.where(r.logical_date <= bindparam("logical_to", type_=UTCDateTime()))
    if on["after"]:
        at = bindparam("after_at", type_=UTCDateTime())
        # The row value seeks the (..., created_at, run_id) index; the plain bound helps
        # planners that do not range-scan on row values.
        q = q.where(r.created_at <= at,
                    tuple_(r.created_at, r.run_id) < tuple_(at, bindparam("after_id")))
    return q.order_by(r.created_at.desc(), r.run_id.desc()).limit(bindparam("limit"))


@translated("listing runs")
def runs_page(store: RunStore, where: RunFilter, *, after: tuple[datetime, str] | None,
              limit: int) -> list[RunRecord]:
    """Up to `limit` runs matching `where`, newest first by (created_at, run_id), starting
    after the key `after` (the last run of the previous page)."""
    statement, values = _page_query(where, after, limit, brief=False)
    with _reading(store) as conn:
        return [run_from_row(row) for row in conn.execute(statement, values)]


@translated("listing runs")
def runs_list_rows(store: RunStore, where: RunFilter, *, after: tuple[datetime, str] | None,
                   limit: int) -> list[tuple[Any, ...]]:
    """As `runs_page`, but only what a runs list shows, as plain tuples of RUN_LIST_FIELDS
    (state as its string value; params and tags decoded): the API's runs lists serialise
    them straight to JSON. No RunRecord per row and no `extra` decoded (cProfile, a 50-run
    page on PostgreSQL, read and serialised: 5,247 Python calls -> 3,722)."""
    statement, values = _page_query(where, after, limit, brief=True)
    with _reading(store) as conn:
        return [tuple(row) for row in conn.execute(statement, values).all()]


def _page_query(where: RunFilter, after: tuple[datetime, str] | None, limit: int, *,
                brief: bool) -> tuple[Select[Any], dict[str, Any]]:
    params: dict[str, Any] = {
        "pipeline": where.pipeline,
        "states": [RunState(s).value for s in where.states] or None,
        "created_from": where.created_from, "created_to": where.created_to,
        "logical_from": where.logical_from, "logical_to": where.logical_to,
        "after": after,
    }
    shape = tuple(params[k] is not None for k in _PAGE_KEYS)
    del params["after"]
    if after is not None:
        params["after_at"], params["after_id"] = after
    values = {k: v for k, v in params.items() if v is not None}
    values["limit"] = limit
    return _page_statement(shape, brief), values


_RECENT = (select(_runs.c.run_id, _runs.c.state, _runs.c.created_at, _runs.c.logical_date)
           .where(_runs.c.pipeline == bindparam("pipeline"))
           .order_by(_runs.c.created_at.desc(), _runs.c.run_id.desc())
           .limit(bindparam("limit")))


@translated("reading recent runs")
def recent_runs(store: RunStore, pipelines: Sequence[str], per_pipeline: int
                ) -> dict[str, list[RunBrief]]:
    """The newest `per_pipeline` runs of each pipeline, newest first: one indexed read of
    (pipeline, created_at) per pipeline, on one connection."""
    out: dict[str, list[RunBrief]] = {}
    if per_pipeline <= 0:
        return {name: [] for name in pipelines}
    with _reading(store) as conn:
        for name in pipelines:
            rows = conn.execute(_RECENT, {"pipeline": name, "limit": per_pipeline})
            out[name] = [RunBrief(run_id=row[0], pipeline=name, state=RunState(row[1]),
                                  created_at=row[2], logical_date=row[3]) for row in rows]
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RunTasks:
    """A run's task instances without mapped children (map index -1 rows: plain tasks and
    mapped tasks' summaries), and per mapped task how many children are in each state."""

    instances: list[TaskInstanceRecord]
    map_states: dict[str, dict[TaskState, int]]


_RUN = select(*RUN_COLUMNS).where(_runs.c.run_id == bindparam("run_id"))
_SUMMARY_TIS = (select(*TI_COLUMNS)
                .where(_tis.c.run_id == bindparam("run_id"), _tis.c.map_index == -1)
                .order_by(_tis.c.task_id))
_MAP_STATES = (select(_tis.c.task_id, _tis.c.state, func.count())
               .where(_tis.c.run_id == bindparam("run_id"), _tis.c.map_index >= 0)
               .group_by(_tis.c.task_id, _tis.c.state))


@translated("reading a run")
def run_with_tasks(store: RunStore, run_id: str) -> tuple[RunRecord, RunTasks]:
    """The run and its task instances (as `RunTasks`), on one connection; RunNotFound if
    there is no such run."""
    key = {"run_id": run_id}
    with _reading(store) as conn:
        row = conn.execute(_RUN, key).first()
        if row is None:
            raise _run_not_found(run_id)
        instances = [ti_from_row(ti) for ti in conn.execute(_SUMMARY_TIS, key)]
        counts: dict[str, dict[TaskState, int]] = {}
        if any(ti.map_count is not None for ti in instances):
            for task_id, state, n in conn.execute(_MAP_STATES, key):
                counts.setdefault(task_id, {})[TaskState(state)] = int(n)
    return run_from_row(row), RunTasks(instances=instances, map_states=counts)


# What a run's detail shows of each task instance, in this order (`run_detail_rows`): not
# the output reference, cache key or cache detail (which can be long).
TI_DETAIL_FIELDS = ("task_id", "map_index", "state", "attempt", "pool", "queued_at",
                    "started_at", "ended_at", "next_retry_at", "error", "cache_origin",
                    "worker", "map_count", "reason")
_DETAIL_RUN = (select(*_RUN_LIST_COLUMNS, _runs.c.extra)
               .where(_runs.c.run_id == bindparam("run_id")))
_DETAIL_TIS = (select(*(_tis.c[name] for name in TI_DETAIL_FIELDS))
               .where(_tis.c.run_id == bindparam("run_id"), _tis.c.map_index == -1)
               .order_by(_tis.c.task_id))


_MAP_COUNT = TI_DETAIL_FIELDS.index("map_count")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDetailRows:
    """A run's detail as plain rows: `run` in RUN_LIST_FIELDS order, its `extra` (the task
    order), its task instances without mapped children in TI_DETAIL_FIELDS order (states
    as strings, JSON decoded), and per mapped task its children's count per state."""

    run: tuple[Any, ...]
    extra: dict[str, Any]
    instances: list[tuple[Any, ...]]
    map_states: dict[str, dict[str, int]]


@translated("reading a run")
def run_detail_rows(store: RunStore, run_id: str) -> RunDetailRows:
    """As `run_with_tasks`, but only what a run's detail shows, as plain tuples (no
    RunRecord or TaskInstanceRecord): the API serialises them straight to JSON (a run of
    10 tasks on PostgreSQL, read: ~1,180 Python calls -> ~560, cProfile). RunNotFound if
    there is no such run."""
    key = {"run_id": run_id}
    with _reading(store) as conn:
        row = conn.execute(_DETAIL_RUN, key).first()
        if row is None:
            raise _run_not_found(run_id)
        instances = [tuple(ti) for ti in conn.execute(_DETAIL_TIS, key).all()]
        counts: dict[str, dict[str, int]] = {}
        if any(ti[_MAP_COUNT] is not None for ti in instances):  # a mapped task's summary
            for task_id, state, n in conn.execute(_MAP_STATES, key):
                counts.setdefault(task_id, {})[state] = int(n)
    *run, extra = row
    return RunDetailRows(run=tuple(run), extra=extra or {}, instances=instances,
                         map_states=counts)


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


__all__ = ["RUN_LIST_FIELDS", "TI_DETAIL_FIELDS", "RunBrief", "RunDetailRows", "RunFilter",
           "RunTasks", "recent_runs", "run_detail_rows", "run_with_tasks", "runs_list_rows",
           "runs_page", "task_states"]
