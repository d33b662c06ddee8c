"""Resume: rebuild a RunDriver from the store and finish the run in place.

Finished work is kept: task instances in `success` or `cached` keep their outputs (and the
skips their successes decided stay decided). Everything else (failed, upstream_failed,
cancelled, and whatever a dead driver left queued or running) goes back to pending and runs
again; a mapped task resumes per map index. An attempt that was running when its driver died
is recorded as interrupted.

Only one driver may hold a run: resume claims the run's lease first. A lease held by a live
driver is refused with RunConflict; one held by a dead process on this host, or one whose
heartbeat has expired, is taken over.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import RunConflict
from cadenza.core.ids import new_driver_id
from cadenza.core.records import AttemptRecord, ErrorInfo, ErrorKind, TaskInstanceRecord
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState, TaskState, reopen_run
from cadenza.engine.active import KEEP, ActiveRun
from cadenza.graph.plan import HasPlan, Plan, plan_of

log = logging.getLogger(__name__)

S = TaskState


def load_pipeline(source: str) -> Plan:
    """The Plan of the pipeline named by a run's `source` ("path/to/file.py:name" or
    "module:name"), through the one loader (engine/loading.py)."""
    from cadenza.engine.loading import load_source

    return load_source(source)


def claim_for_resume(store: Any, run: Any, driver_id: str) -> None:
    """Claim the run for a resume (RunConflict while a live driver holds it). A pending
    cancel request is forgotten: resuming is asking the run to go on."""
    from cadenza.engine.lease import driver_is_dead, lease_s

    lease = lease_s()
    ok = store.claim_run(run.run_id, driver_id,
                         lease_s=lease if run.driver_id and not driver_is_dead(run.driver_id)
                         else 0.0,
                         expected_driver=run.driver_id, clear_cancel=True)
    if not ok:
        current = store.get_run(run.run_id)
        raise RunConflict(
            f"run {run.run_id} is being driven by {current.driver_id} "
            f"(last heartbeat {current.heartbeat_at})",
            pipeline=run.pipeline,
            hint="wait for it to finish, or stop it with `cadenza runs cancel "
            f"{run.run_id}`; a dead driver's lease expires after {lease:g} s",
        )


def resume_run(
    run_id: str,
    *,
    executor: str | None = None,
    pipeline: Plan | HasPlan | None = None,
    settings: Settings | None = None,
    on_start: Any = None,
) -> Any:
    """Finish run `run_id` from its point of failure. Returns a RunResult."""
    from cadenza.engine.api import (
        _executor_for,
        check_artifact_root,
        make_driver,
        preflight_executor,
        result_from_store,
    )
    from cadenza.engine.cancel import CANCEL_REASON
    from cadenza.engine.lease import heartbeats
    from cadenza.store import open_store

    settings = settings or get_settings()
    store = open_store(settings.database_url)
    run_id = store.resolve_run_id(run_id)
    run = store.get_run(run_id)
    if run.state is RunState.SUCCESS:
        return result_from_store(store, run_id, settings.artifact_root)
    pipe = plan_of(pipeline) if pipeline is not None else load_pipeline(run.source)
    check_artifact_root(settings, pipe.name)
    values, _ = pipe.validate_params(run.params)
    executor_name = executor or run.executor or settings.executor
    ex = _executor_for(executor_name)
    preflight_executor(ex, settings, pipe.name)
    driver_id = new_driver_id()
    claim_for_resume(store, run, driver_id)
    now = clock.now()
    # started_at: a run cancelled while it was queued starts now.
    run = reopen_run(run, ended_at=None, error=None, driver_id=driver_id, heartbeat_at=now,
                     executor=executor_name, started_at=run.started_at or now)
    driver = make_driver(pipe, run, values, store=store, settings=settings, executor=ex)
    rows = store.get_task_instances(run_id)
    interrupted = rebuild(driver.active, run_id, rows)
    driver.batch.run_updates.append(run)
    driver.batch.attempts.extend(interrupted)
    if on_start is not None:
        on_start(driver)
    try:
        with heartbeats().holding(store, run_id, driver_id,
                                  on_cancel=lambda: driver.cancel(reason=CANCEL_REASON),
                                  on_taken=driver.taken_over):
            driver.drive()
    finally:
        store.release_run(run_id, driver_id)
    result = result_from_store(store, run_id, settings.artifact_root, driver.values)
    result._pipeline = pipe
    return result


def rebuild(active: ActiveRun, run_id: str, rows: list[TaskInstanceRecord], *,
            rerun: frozenset[str] | None = None) -> list[AttemptRecord]:
    """Replay run `run_id`'s stored rows into its state owner (`engine/active.py`, a new
    driver's `active`); what must run again goes back to pending there, through the state
    table (`rerun`: only these tasks, see `ActiveRun.replay`). Touches nothing else of the
    driver.

    Returns attempt records for attempts a dead driver left running (marked interrupted).
    """
    now = clock.now()
    interrupted = [
        AttemptRecord(
            run_id=run_id, task_id=row.task_id, map_index=row.map_index,
            attempt=row.attempt, state=S.FAILED, started_at=row.started_at, ended_at=now,
            worker=row.worker,
            error=ErrorInfo(kind=ErrorKind.INTERRUPTED, type="cadenza.core.errors.WorkerLost",
                            message="the driver stopped while this attempt ran"),
        )
        for row in active.replay(rows, rerun=rerun)
    ]
    _distrust_broken_inputs(active, run_id)
    active.settle_kept()
    return interrupted


def _artifact_ok(ref: Any) -> bool:
    """The artifact exists and its bytes still hash to its name."""
    import hashlib

    from cadenza.artifacts.store import artifact_store

    try:
        data = artifact_store("").get_bytes(ref.uri)
    except (OSError, ValueError):
        return False
    return not ref.sha256 or hashlib.sha256(data).hexdigest() == ref.sha256


def _discard(uri: str) -> None:
    """Remove a corrupted artifact so that recomputing it writes it afresh (and no cache
    entry can serve it again)."""
    path = uri.removeprefix("file://")
    if "://" in path:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("could not remove corrupted artifact %s: %s", uri, exc)


def _distrust_broken_inputs(active: ActiveRun, run_id: str) -> None:
    """A kept output that a re-running task will read must still be intact; if it is not,
    its producer runs again too (and so on upstream). Outputs nobody will read again are
    not checked, so resume costs nothing for them."""
    checked: set[int] = set()
    changed = True
    while changed:
        changed = False
        for ns in active.nodes.values():
            if ns.summary.state in KEEP:
                continue
            for up_id in ns.node.data_upstream:
                up = active.nodes[up_id]
                if up.summary.state not in KEEP:
                    continue
                for inst in (up.children or [up.summary]):
                    ref = inst.output
                    if (id(inst) in checked or ref is None or ref.kind != "artifact"
                            or ref.uri is None):
                        continue
                    checked.add(id(inst))
                    if not _artifact_ok(ref):
                        _discard(ref.uri)
                        log.warning("run %s: output of %s is missing or corrupted (%s); "
                                    "running it again", run_id, inst.label, ref.uri)
                        reason = "resumed: its output artifact was missing or corrupted"
                        active.reset(inst, reason=reason)
                        if inst is not up.summary:
                            active.reset(up.summary, reason=reason)
                        changed = True
