"""Cancel a run from any process: the engine's side of `cadenza runs cancel RUN_ID`.

`cancel_run`, by case:
  1. The run has ended -> nothing changes (outcome "finished").
  2. A live driver holds it (`cadenza run`, a script, a scheduler: lease fresh, process
     alive) -> the request is recorded in the store; that driver's heartbeat thread sees it
     within `lease.CANCEL_POLL_S` and calls `RunDriver.cancel()`, which kills running
     attempts on `processes` (the worker's process group) and interrupts them on
     `threads`/`inline` at their next Python bytecode, then records everything unfinished
     as cancelled. We wait up to `wait_s` for the run to end (outcome "cancelled", or
     "requested" if it has not ended yet: it still will).
  3. Nobody drives it (queued and never claimed, or its driver died) -> we claim it
     (compare-and-set: if a scheduler claims it first, case 2 applies) and cancel it here:
     every unfinished task instance moves to CANCELLED through `core/states.py`, an attempt
     a dead driver left running is recorded cancelled, and the run ends CANCELLED.
The run stays resumable in every case: `cadenza resume RUN_ID` runs the cancelled and
unfinished tasks again and keeps the finished ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from cadenza.core import clock
from cadenza.core.ids import new_driver_id
from cadenza.core.records import AttemptRecord, ErrorInfo, ErrorKind, RunRecord, WriteBatch
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState, TaskState, move_run
from cadenza.engine.active import cancel_rows
from cadenza.engine.lease import is_held, is_orphaned

log = logging.getLogger(__name__)

# The reason recorded on task instances a cancel request stopped.
CANCEL_REASON = "cancelled on request (cadenza runs cancel)"
_POLL_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelReport:
    """What `cancel_run` did.

    outcome: "cancelled" (the run has ended cancelled), "finished" (it had already ended:
    nothing to cancel), "requested" (recorded; its driver has not stopped it within the wait).
    by: "driver" (the live driver stopped it) or "engine" (nobody drove it: cancelled here).
    """

    run_id: str
    pipeline: str
    outcome: str
    by: str
    was: RunState  # the run's state when we were asked
    state: RunState  # its state now
    executor: str
    orphaned: bool  # its driver was gone (crashed) when we were asked
    driver_id: str | None


def cancel_run(run_id: str, *, settings: Settings | None = None,
               wait_s: float = 30.0) -> CancelReport:
    """Cancel run `run_id` (a unique prefix is enough), whoever drives it. See the module
    docstring for the cases. RunNotFound if there is no such run.

    Example:
        >>> report = cancel_run("r-2026...")
        >>> report.outcome, report.state
        ('cancelled', <RunState.CANCELLED: 'cancelled'>)
    """
    from cadenza.store import open_store

    settings = settings or get_settings()
    store = open_store(settings.database_url)
    run_id = store.resolve_run_id(run_id)
    run = store.get_run(run_id)
    first = run
    orphaned = is_orphaned(run, lease=settings.lease_s)

    def report(outcome: str, by: str, now: RunRecord) -> CancelReport:
        return CancelReport(run_id=run_id, pipeline=first.pipeline, outcome=outcome, by=by,
                            was=first.state, state=now.state, executor=now.executor or "",
                            orphaned=orphaned, driver_id=first.driver_id)

    if run.state.is_final or not store.request_cancel(run_id):
        return report("finished", "driver", store.get_run(run_id))
    deadline = time.monotonic() + wait_s
    while True:
        run = store.get_run(run_id)
        if run.state.is_final:
            return report("cancelled" if run.state is RunState.CANCELLED else "finished",
                          "driver", run)
        nobody = not is_held(run.driver_id, run.heartbeat_at, lease=settings.lease_s)
        if nobody and cancel_undriven(store, run, lease_s=settings.lease_s):
            return report("cancelled", "engine", store.get_run(run_id))
        if time.monotonic() >= deadline:
            return report("requested", "driver", run)
        time.sleep(_POLL_S)  # the driver's thread acts on it; we only watch the store


def cancel_undriven(store: Any, run: RunRecord, *, lease_s: float,
                    reason: str = CANCEL_REASON) -> bool:
    """Cancel `run`, which no live driver holds, here; False if a driver holds it now.

    We claim the run first, expecting the driver we saw (None for a queued run): a
    scheduler or resume that claims it before us wins, and cancels it from the request.
    """
    me = new_driver_id()
    dead = run.driver_id is not None and not is_held(run.driver_id, run.heartbeat_at,
                                                     lease=lease_s)
    if not store.claim_run(run.run_id, me, lease_s=0.0 if dead else lease_s,
                           expected_driver=run.driver_id):
        return False
    try:
        run = store.get_run(run.run_id)
        if run.state.is_final:
            return True
        now = clock.now()
        batch = WriteBatch()
        rows = store.get_task_instances(run.run_id)
        for ti in rows:
            if ti.state in (TaskState.QUEUED, TaskState.RUNNING) and ti.attempt > 0 \
                    and ti.map_count is None:
                batch.attempts.append(AttemptRecord(
                    run_id=run.run_id, task_id=ti.task_id, map_index=ti.map_index,
                    attempt=ti.attempt, state=TaskState.CANCELLED, started_at=ti.started_at,
                    ended_at=now, worker=ti.worker,
                    error=ErrorInfo(kind=ErrorKind.CANCELLED,
                                    type="cadenza.core.errors.TaskCancelled",
                                    message="cancelled: the driver running this attempt "
                                    "was gone"),
                ))
        batch.task_instance_updates.extend(cancel_rows(rows, reason=reason))
        batch.run_updates.append(move_run(run, RunState.CANCELLED, ended_at=now,
                                          driver_id=None))
        store.write(batch)
    except BaseException:
        store.release_run(run.run_id, me)
        raise
    log.info("run %s of %s: cancelled (no live driver held it)", run.run_id, run.pipeline)
    return True
