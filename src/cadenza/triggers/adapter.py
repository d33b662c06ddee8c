"""Adapter between the scheduler and the engine: create a run as `queued`, drive a claimed
queued run, take over a run whose driver died.

TEMPORARY: the engine's public API (`engine/api.py`) only has `run_pipeline` (create AND
drive in the calling thread) and `resume_run`. Until it grows the hooks below, this module
reaches into engine internals (the private helpers of `engine/api.py` and a RunDriver
subclass); it is the ONLY module of `triggers/` that does, so replacing it is one file.
Engine hooks wanted (signatures the rest of `triggers/` already codes against):

    engine.api.new_run(pipeline, params, *, trigger, logical_date=None, data_interval=None,
                       extra=None, run_id=None, state=RunState.QUEUED)
        -> tuple[RunRecord, list[TaskInstanceRecord]]      # validated, not written
    engine.api.drive_run(run_id, *, pipeline=None, executor=None, driver_id,
                         settings=None, on_start=None) -> RunResult
        # drive a queued run this driver has claimed (store.claim_queued / claim_run):
        # QUEUED -> RUNNING (started_at set) -> final, with heartbeats; no "resumed" reasons
    engine.api.fail_run(run_id, *, driver_id, error) -> None
        # a claimed queued run that cannot start (its parameters no longer validate)
    RunDriver._build_call: TaskCall.context["extra"] = {"trigger": run.extra["trigger"]}
        # so get_context().extra["trigger"] shows what triggered the run (asset versions,
        # the event's source and message id, the sensor's value), also after a resume.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import CadenzaError
from cadenza.core.ids import new_run_id
from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState, TaskState

log = logging.getLogger(__name__)


def source_of(pipeline: Any) -> str:
    """Where a run's pipeline can be loaded from again ("path/file.py:name")."""
    path = getattr(pipeline, "source_file", None)
    if path:
        return f"{path}:{pipeline.name}"
    return getattr(pipeline.graph, "source", "") or pipeline.name


def new_run(
    pipeline: Any,
    params: Mapping[str, Any],
    *,
    trigger: str,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    extra: dict[str, Any] | None = None,
    run_id: str | None = None,
    created_at: datetime | None = None,
    stored_params: dict[str, Any] | None = None,
) -> tuple[RunRecord, list[TaskInstanceRecord]]:
    """A queued run of `pipeline` and its task instances, ready to insert (not written).

    Parameters are validated here (ParameterError names the problem), unless
    `stored_params` (already validated JSON form) is given.
    """
    if stored_params is None:
        _, stored_params = pipeline.validate_params(params)
    rid = run_id or new_run_id()
    run = RunRecord(
        run_id=rid,
        pipeline=pipeline.name,
        state=RunState.QUEUED,
        params=stored_params,
        created_at=created_at or clock.now(),
        trigger=trigger,
        logical_date=logical_date,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        source=source_of(pipeline),
        tags=tuple(getattr(pipeline, "tags", ()) or ()),
        extra=dict(extra or {}),
    )
    tis = [TaskInstanceRecord(run_id=rid, task_id=node.id, map_index=-1,
                              state=TaskState.PENDING, pool=node.options.pool)
           for node in pipeline.graph]
    return run, tis


def _driver_class() -> type[Any]:
    from cadenza.engine.driver import RunDriver

    class TriggerContextDriver(RunDriver):
        """RunDriver that shows run.extra["trigger"] in get_context().extra (engine hook
        3 in the module docstring)."""

        def _build_call(self, inst: Any) -> Any:
            call = super()._build_call(inst)
            trigger = self.run.extra.get("trigger")
            if call is not None and trigger is not None:
                call = replace(call, context={**call.context, "extra": {"trigger": trigger}})
            return call

    return TriggerContextDriver


_DRIVER: type[Any] | None = None


def drive_claimed_run(
    run: RunRecord,
    pipeline: Any,
    *,
    executor: str | None = None,
    settings: Settings | None = None,
    on_start: Any = None,
) -> RunState:
    """Drive a queued run that `run.driver_id` has claimed, in this thread, to its end."""
    global _DRIVER
    from cadenza.engine.api import _admission_for, _cache_for, _executor_for, _pipeline_hooks
    from cadenza.engine.lease import heartbeats
    from cadenza.store import open_store

    if _DRIVER is None:
        _DRIVER = _driver_class()
    settings = settings or get_settings()
    store = open_store(settings.database_url)
    error: str | None = None
    try:
        values, _ = pipeline.validate_params(run.params)
    except CadenzaError as exc:  # the pipeline changed since the run was queued
        values, error = {}, f"the run cannot start: {exc}"
    executor_name = executor or settings.executor
    driver_id = run.driver_id
    assert driver_id, "drive_claimed_run needs a claimed run"
    now = clock.now()
    run = replace(run, state=RunState.RUNNING, started_at=now, executor=executor_name,
                  heartbeat_at=now)
    driver = _DRIVER(
        graph=pipeline.graph,
        run=run,
        param_values=values,
        store=store,
        executor=_executor_for(executor_name),
        artifact_root=settings.artifact_root,
        logs_dir=str(settings.logs_dir),
        inline_limit_bytes=settings.inline_limit_bytes,
        admission=_admission_for(store),
        driver_id=driver_id,
        cache=_cache_for(store, settings),
        tracker=getattr(pipeline, "tracking", None),
        pipeline_callbacks=_pipeline_hooks(pipeline),
    )
    driver.initial_rows()  # the rows were written with the queued run
    driver.batch.run_updates.append(run)  # QUEUED -> RUNNING, committed before any task
    if error is not None:
        # Fail it rather than leave it claimed forever (engine hook wanted: fail_run).
        log.error("run %s of %s: %s", run.run_id, pipeline.name, error)
        failed: RunState = driver._finish(error=error)
        return failed
    if on_start is not None:
        on_start(driver)
    with heartbeats().holding(store, run.run_id, driver_id):
        state: RunState = driver.drive()
    log.info("run %s of %s (%s) ended %s", run.run_id, pipeline.name, run.trigger, state)
    return state


def take_over_run(run_id: str, pipeline: Any, *, executor: str | None = None,
                  settings: Settings | None = None) -> Any:
    """Finish a run whose driver died (resume: finished tasks keep their outputs).

    Raises RunConflict when its driver is still alive (another scheduler won the race)."""
    from cadenza.engine.resume import resume_run

    return resume_run(run_id, executor=executor, pipeline=pipeline, settings=settings)
