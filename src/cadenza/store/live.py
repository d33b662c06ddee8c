"""Live views of the metadata store: what the server's event stream and `/metrics` poll.

What belongs here: cheap read-only queries (one indexed range per run, GROUP BY counts over
indexed columns) returning `core.progress` records. What does not: diffing them into events
(`api/events.py`), Prometheus objects (`api/metrics.py`), any write. Nothing here is on the
engine's commit path: the live views poll what the engine committed, so a run pays nothing
for being watched.

Get one with `live_store(run_store)`; it shares the RunStore's engine.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import bindparam, func, select

from cadenza.core.errors import RunNotFound
from cadenza.core.progress import FinishedAttempt, RunProgress, StoreCounts, TaskInstanceProgress
from cadenza.core.states import RunState, TaskState
from cadenza.store.db import translated
from cadenza.store.runs import RunStore
from cadenza.store.tables import (
    attempts_table,
    runs_table,
    sla_misses_table,
    task_instances_table,
    trigger_events_table,
)

_runs = runs_table
_tis = task_instances_table
_attempts = attempts_table

_UNFINISHED = tuple(s.value for s in RunState if not s.is_final)

_SELECT_RUN = select(
    _runs.c.run_id, _runs.c.pipeline, _runs.c.state, _runs.c.started_at, _runs.c.ended_at,
    _runs.c.error,
).where(_runs.c.run_id == bindparam("run_id"))
# The primary key's prefix: one index range per run.
_SELECT_TI_STATES = (
    select(_tis.c.task_id, _tis.c.map_index, _tis.c.state, _tis.c.attempt, _tis.c.queued_at,
           _tis.c.started_at, _tis.c.ended_at, _tis.c.reason)
    .where(_tis.c.run_id == bindparam("run_id"))
    .order_by(_tis.c.task_id, _tis.c.map_index)
)
# Index (state, created_at): an index-only count on PostgreSQL.
_COUNT_RUNS = select(_runs.c.state, func.count()).group_by(_runs.c.state)
# Unfinished runs are few (index (state, created_at)); their task instances by primary key.
_COUNT_ACTIVE_TIS = (
    select(_tis.c.state, func.count())
    .select_from(_tis.join(_runs, _runs.c.run_id == _tis.c.run_id))
    .where(_runs.c.state.in_(_UNFINISHED))
    .group_by(_tis.c.state)
)
_COUNT_SLA = select(sla_misses_table.c.pipeline, func.count()).group_by(
    sla_misses_table.c.pipeline)
_COUNT_EVENTS = select(trigger_events_table.c.status, func.count()).group_by(
    trigger_events_table.c.status)


class LiveStore:
    """Read-only live views (see the module docstring).

    Example:
        >>> live = live_store(open_store())
        >>> live.run_progress("20260101-abc").state
        <RunState.RUNNING: 'running'>
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.url = store.url
        self._read_engine = store._read_engine

    @translated("reading a run's progress")
    def run_progress(self, run_id: str) -> RunProgress:
        """The run's state and its task instances' state columns. RunNotFound if absent.

        The run row is read before its task instances, in one read transaction (one
        snapshot on SQLite; on PostgreSQL the second statement sees at least what the first
        did): when the run reads as final, its task instances read as at least as new as
        the commit that ended it, so a stream never shows a run ended with tasks behind.
        """
        with self._read_engine.connect() as conn:
            row = conn.execute(_SELECT_RUN, {"run_id": run_id}).first()
            if row is None:
                raise RunNotFound(f"no run with id '{run_id}'",
                                  hint="list run ids with `cadenza runs list`")
            tis = tuple(
                TaskInstanceProgress(task_id=t[0], map_index=t[1], state=TaskState(t[2]),
                                     attempt=t[3], queued_at=t[4], started_at=t[5],
                                     ended_at=t[6], reason=t[7] or "")
                for t in conn.execute(_SELECT_TI_STATES, {"run_id": run_id})
            )
        return RunProgress(run_id=row[0], pipeline=row[1], state=RunState(row[2]),
                           started_at=row[3], ended_at=row[4], error=row[5],
                           task_instances=tis)

    @translated("counting runs")
    def counts(self) -> StoreCounts:
        """Runs by state, task instances of unfinished runs by state, SLA misses by pipeline,
        trigger events by status: four GROUP BY reads in one connection."""
        with self._read_engine.connect() as conn:
            runs = {RunState(s): int(n) for s, n in conn.execute(_COUNT_RUNS)}
            tis = {TaskState(s): int(n) for s, n in conn.execute(_COUNT_ACTIVE_TIS)}
            sla = {str(p): int(n) for p, n in conn.execute(_COUNT_SLA)}
            events = {str(s): int(n) for s, n in conn.execute(_COUNT_EVENTS)}
        return StoreCounts(runs=runs, active_task_instances=tis, sla_misses=sla,
                           trigger_events=events)

    @translated("listing recent runs")
    def recent_runs(self, *, created_since: datetime) -> dict[str, RunState]:
        """Unfinished runs and runs created at or after `created_since`, with their state
        (two index ranges: (state, created_at) and created_at)."""
        q = select(_runs.c.run_id, _runs.c.state).where(
            _runs.c.state.in_(_UNFINISHED) | (_runs.c.created_at >= created_since))
        with self._read_engine.connect() as conn:
            return {str(r): RunState(s) for r, s in conn.execute(q)}

    @translated("reading finished attempts")
    def finished_attempts(self, run_ids: Collection[str], *,
                          ended_since: datetime) -> list[FinishedAttempt]:
        """Attempts of these runs that ended at or after `ended_since` (by primary key
        prefix, a few hundred run ids per statement)."""
        ids = sorted(run_ids)
        found: list[FinishedAttempt] = []
        a = _attempts.c
        with self._read_engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = (
                    select(a.run_id, _runs.c.pipeline, a.task_id, a.map_index, a.attempt,
                           a.state, a.started_at, a.ended_at)
                    .select_from(_attempts.join(_runs, _runs.c.run_id == a.run_id))
                    .where(a.run_id.in_(ids[i:i + 500]), a.started_at.is_not(None),
                           a.ended_at.is_not(None), a.ended_at >= ended_since)
                )
                found.extend(
                    FinishedAttempt(run_id=r[0], pipeline=r[1], task_id=r[2], map_index=r[3],
                                    attempt=r[4], state=TaskState(r[5]), started_at=r[6],
                                    ended_at=r[7])
                    for r in conn.execute(q)
                )
        return found


def live_store(store: RunStore) -> LiveStore:
    """The LiveStore sharing `store`'s engine (one per RunStore)."""
    live: LiveStore | None = getattr(store, "_live", None)
    if live is None:
        live = LiveStore(store)
        store._live = live  # type: ignore[attr-defined]
    return live


__all__ = ["LiveStore", "live_store"]
