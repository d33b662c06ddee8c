"""Backfill: create the missing interval runs of a date range, idempotently, and drive them.

What belongs here: `backfill()` (what `cadenza backfill FILE:PIPELINE --start D --end D
[--max-active N]` calls). What does not: interval arithmetic (`cron.py`), the unique keys
that make it idempotent (`store/scheduling.py`).

Backfilled runs share their keys ("interval:<logical date>") with scheduled runs, so an
interval is never run twice whichever of the two created it, and a second backfill of the
same range creates nothing. Runs are created `queued` in batches of `batch` per transaction
(the bench measures this), then driven here with at most `max_active` at once; a scheduler
running at the same time may claim some of them, which is fine: each run has one driver.
Only intervals that have ended by now are created; `start_date`/`end_date` still bound them
(the dates a range loses to `start_date` are listed in `BackfillResult.dropped`).

Failures are part of the result: `failed` lists every interval of the range whose run ended
failed or cancelled (driven by this call or an earlier one), so a second call of a range
with failures is not "ok" just because it created nothing. `rerun_failed=True` resumes those
runs in place (finished tasks keep their outputs), with the same concurrency as new ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import UsageError
from cadenza.core.ids import new_driver_id
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState
from cadenza.engine.api import drive_run, new_run
from cadenza.graph.plan import HasPlan, Plan, plan_of
from cadenza.triggers.cron import Interval, Timetable

log = logging.getLogger(__name__)

Progress = Callable[["BackfillProgress"], None]

# How often a backfill worker asks again for a run of a pipeline at its max_active_runs.
CAP_WAIT_S = 0.2
# At most this many dropped intervals are listed (a range of years on an hourly schedule).
DROPPED_LIMIT = 1000
_UNFINISHED = (RunState.FAILED, RunState.CANCELLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillProgress:
    """Passed to `on_progress` after the runs are created and after each run ends."""

    total: int  # runs this backfill drives
    done: int
    run_id: str | None = None
    state: RunState | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedInterval:
    """An interval of the range whose run did not succeed."""

    interval: Interval
    run_id: str
    state: RunState


@dataclass(slots=True, kw_only=True)
class BackfillResult:
    pipeline: str
    intervals: list[Interval] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # run ids created by this call
    existing: int = 0  # intervals that already had a run
    # Runs of those intervals still queued and unclaimed (an earlier backfill was stopped,
    # or ran with drive=False): this call drives them too.
    queued: list[str] = field(default_factory=list)
    states: dict[str, RunState] = field(default_factory=dict)  # runs driven here -> end state
    # Failed or cancelled runs of the range that this call resumed (rerun_failed=True).
    rerun: list[str] = field(default_factory=list)
    # Every interval of the range whose run ended failed or cancelled, oldest first, once
    # this call is done (whoever drove it).
    failed: list[FailedInterval] = field(default_factory=list)
    # Intervals of the range before the pipeline's start_date: not created (at most
    # DROPPED_LIMIT of them).
    dropped: list[Interval] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and all(s is RunState.SUCCESS for s in self.states.values())


def backfill(
    pipeline: Plan | HasPlan,
    start: Any,
    end: Any,
    *,
    max_active: int | None = None,
    drive: bool = True,
    executor: str | None = None,
    settings: Settings | None = None,
    batch: int = 1000,
    on_progress: Progress | None = None,
    rerun_failed: bool = False,
) -> BackfillResult:
    """Create the runs of every interval with start <= logical_date <= end that has none
    (naive dates are read in the pipeline's time zone), then drive them.

    Args:
        max_active: runs driven at once (default: the pipeline's max_active_runs, else 4).
        drive: False only creates the runs (queued): a scheduler will run them.
        rerun_failed: also resume the range's runs that ended failed or cancelled (ignored
            when drive is False).

    Example:
        >>> result = backfill(daily_report, "2026-01-01", "2026-01-31", max_active=4)
        >>> len(result.created), result.ok
        (31, True)
        >>> backfill(daily_report, "2026-01-01", "2026-01-31").created
        []
    """
    from cadenza.core.scheduling import NewRun
    from cadenza.store import open_store
    from cadenza.store.scheduling import scheduling_store

    pipeline = plan_of(pipeline)
    tt = Timetable.of(pipeline)
    if tt is None:
        raise UsageError("backfill needs a pipeline with a schedule", pipeline=pipeline.name,
                         hint='@pipeline(schedule="@daily", start_date="2026-01-01")')
    settings = settings or get_settings()
    sched = scheduling_store(open_store(settings.database_url))
    now = clock.now()
    result = BackfillResult(pipeline=pipeline.name,
                            intervals=list(tt.intervals(start, end, now=now)),
                            dropped=tt.before_start(start, end, limit=DROPPED_LIMIT))
    _, params = pipeline.validate_params({})
    for i in range(0, len(result.intervals), batch):
        chunk = result.intervals[i:i + batch]
        runs = []
        for interval in chunk:
            run, tis = new_run(pipeline, params, trigger="backfill", stored_params=params,
                               logical_date=interval.start,
                               data_interval=(interval.start, interval.end), created_at=now)
            runs.append(NewRun(run=run, task_instances=tis, key=interval.key))
        result.created.extend(sched.create_runs(pipeline.name, runs))
    result.existing = len(result.intervals) - len(result.created)
    log.info("backfill of %s: %d intervals, %d runs created, %d existed", pipeline.name,
             len(result.intervals), len(result.created), result.existing)
    if drive and result.existing:
        result.queued = _still_queued(sched, pipeline.name, result)
        if rerun_failed:
            result.rerun = [f.run_id for f in _failed_in_range(sched, pipeline.name, result)]
    if drive and (result.created or result.queued or result.rerun):
        limit = max_active or pipeline.max_active_runs or 4
        _drive_all(pipeline, result, limit, executor, settings, on_progress)
    if result.existing or any(s in _UNFINISHED for s in result.states.values()):
        result.failed = _failed_in_range(sched, pipeline.name, result)
    return result


def _failed_in_range(sched: Any, pipeline: str, result: BackfillResult) -> list[FailedInterval]:
    """The range's intervals whose run ended failed or cancelled, oldest first."""
    unfinished = {r.run_id: r.state for state in _UNFINISHED
                  for r in sched.store.list_runs(pipeline=pipeline, state=state,
                                                 limit=1_000_000)}
    if not unfinished:
        return []
    by_key = sched.runs_for_keys(pipeline, [i.key for i in result.intervals])
    return [FailedInterval(interval=i, run_id=by_key[i.key], state=unfinished[by_key[i.key]])
            for i in result.intervals if by_key.get(i.key) in unfinished]


def _still_queued(sched: Any, pipeline: str, result: BackfillResult) -> list[str]:
    """Run ids of the range's existing runs that are queued with no driver, oldest first."""
    created = set(result.created)
    keys = [i.key for i in result.intervals]
    by_key = sched.runs_for_keys(pipeline, keys)
    existing = [by_key[k] for k in keys if k in by_key and by_key[k] not in created]
    if not existing:
        return []
    queued = {r.run_id for r in sched.store.list_runs(
        pipeline=pipeline, state=RunState.QUEUED, limit=1_000_000) if r.driver_id is None}
    return [run_id for run_id in existing if run_id in queued]


def _drive_all(pipeline: Plan, result: BackfillResult, limit: int, executor: str | None,
               settings: Settings, on_progress: Progress | None) -> None:
    from cadenza.store import open_store
    from cadenza.store.scheduling import scheduling_store

    store = open_store(settings.database_url)
    sched = scheduling_store(store)
    # Claimed like a scheduler claims: under the pipeline's lock and max_active_runs, so
    # backfill and schedulers together never run more of it at once than the cap.
    caps = {pipeline.name: pipeline.max_active_runs}
    driver_id = new_driver_id()
    rerun = set(result.rerun)
    pending = [*result.rerun, *result.queued, *result.created]  # each oldest interval first
    total = len(pending)
    lock = threading.Lock()
    done = 0
    if on_progress is not None:
        on_progress(BackfillProgress(total=total, done=0))

    def claim(run_id: str) -> Any:
        """The run, claimed for us; None if another driver has it (or it has ended)."""
        while True:
            claimed = sched.claim_queued(driver_id, caps, limit=1, only=[run_id])
            if claimed:
                return claimed[0]
            current = store.get_run(run_id)
            if current.state is not RunState.QUEUED or current.driver_id is not None:
                return None  # a scheduler claimed it first: it is that scheduler's run
            time.sleep(CAP_WAIT_S)  # the pipeline is at max_active_runs

    def worker() -> None:
        nonlocal done
        while True:
            with lock:
                if not pending:
                    return
                run_id = pending.pop(0)
            state: RunState | None = None
            if run_id in rerun:
                state = _resume(pipeline, run_id, executor, settings, store)
                result.states[run_id] = state
            elif (run := claim(run_id)) is not None:
                try:
                    state = drive_run(run, pipeline, executor=executor, settings=settings).state
                except Exception:
                    log.exception("backfill of %s: run %s could not be driven",
                                  pipeline.name, run_id)
                    state = store.get_run(run_id).state
                result.states[run_id] = state
            with lock:
                done += 1
                progress = BackfillProgress(total=total, done=done, run_id=run_id, state=state)
            if on_progress is not None:
                on_progress(progress)

    threads = [threading.Thread(target=worker, name=f"cadenza-backfill-{i}", daemon=True)
               for i in range(min(limit, total))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _resume(pipeline: Plan, run_id: str, executor: str | None, settings: Settings,
            store: Any) -> RunState:
    """Resume a failed run of the range in place; its end state."""
    from cadenza.engine.resume import resume_run

    try:
        state: RunState = resume_run(run_id, executor=executor, pipeline=pipeline,
                                     settings=settings).state
    except Exception:
        log.exception("backfill of %s: run %s could not be resumed", pipeline.name, run_id)
        state = store.get_run(run_id).state
    return state
