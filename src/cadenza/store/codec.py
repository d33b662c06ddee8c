"""Record <-> row conversion for the metadata store's run tables.

What belongs here: turning `cadenza.core.records` (and `core.scheduling`'s) into the parameter dicts the prebuilt DML
binds, and result rows back into records, in the column order of `tables.py` (select with
`select(*tables.RUN_COLUMNS)` etc. to get rows in the order the `*_from_row` functions unpack).
Imports no SQLAlchemy: the SQLite run path (`sqlite_store.py`) uses it too.
What does not: statements and transactions (`runs.py`, `scheduling.py`, `dml.py`), table
definitions (`tables.py`).

Plain functions over tuples, no ORM and no pydantic: these run for every row the engine
writes or reads (`RunStore.write` is called once per scheduler step).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cadenza.core.records import (
    ArtifactRecord,
    AssetEventRecord,
    AttemptRecord,
    ErrorInfo,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
)
from cadenza.core.states import RunState, TaskState

if TYPE_CHECKING:
    # Imported where a row becomes one (the scheduler's reads): the run path imports this
    # module, and core/scheduling.py's five dataclasses are ~21 M instructions of a cold start.
    from cadenza.core.scheduling import ScheduleState, TriggerEventRecord


def run_params(r: RunRecord) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "pipeline": r.pipeline,
        "state": r.state.value,
        "params": r.params,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "executor": r.executor,
        "trigger": r.trigger,
        "logical_date": r.logical_date,
        "data_interval_start": r.data_interval_start,
        "data_interval_end": r.data_interval_end,
        "source": r.source,
        "driver_id": r.driver_id,
        "heartbeat_at": r.heartbeat_at,
        "error": r.error,
        "tags": list(r.tags),
        "extra": r.extra,
        "cancel_requested_at": r.cancel_requested_at,
    }


def run_update_params(r: RunRecord) -> dict[str, Any]:
    return {
        "k_run_id": r.run_id,
        "pipeline": r.pipeline,
        "state": r.state.value,
        "params": r.params,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "executor": r.executor,
        "trigger": r.trigger,
        "logical_date": r.logical_date,
        "data_interval_start": r.data_interval_start,
        "data_interval_end": r.data_interval_end,
        "source": r.source,
        "driver_id": r.driver_id,
        "hb_at": r.heartbeat_at,
        "error": r.error,
        "tags": list(r.tags),
        "extra": r.extra,
    }


def run_from_row(row: Sequence[Any]) -> RunRecord:
    (
        run_id,
        pipeline,
        state,
        params,
        created_at,
        started_at,
        ended_at,
        executor,
        trigger,
        logical_date,
        data_interval_start,
        data_interval_end,
        source,
        driver_id,
        heartbeat_at,
        error,
        tags,
        extra,
        cancel_requested_at,
    ) = row
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        state=RunState(state),
        params=params,
        created_at=created_at,
        started_at=started_at,
        ended_at=ended_at,
        executor=executor,
        trigger=trigger,
        logical_date=logical_date,
        data_interval_start=data_interval_start,
        data_interval_end=data_interval_end,
        source=source,
        driver_id=driver_id,
        heartbeat_at=heartbeat_at,
        error=error,
        tags=tuple(tags),
        extra=extra,
        cancel_requested_at=cancel_requested_at,
    )


def ti_params(t: TaskInstanceRecord) -> dict[str, Any]:
    output = t.output
    error = t.error
    return {
        "run_id": t.run_id,
        "task_id": t.task_id,
        "map_index": t.map_index,
        "state": t.state.value,
        "attempt": t.attempt,
        "pool": t.pool,
        "queued_at": t.queued_at,
        "started_at": t.started_at,
        "ended_at": t.ended_at,
        "next_retry_at": t.next_retry_at,
        "output": None if output is None else output.to_json(),
        "error": None if error is None else error.to_json(),
        "cache_key": t.cache_key,
        "cache_origin": t.cache_origin,
        "worker": t.worker,
        "map_count": t.map_count,
        "reason": t.reason,
        "cache_detail": t.cache_detail,
    }


def ti_update_params(t: TaskInstanceRecord) -> dict[str, Any]:
    output = t.output
    error = t.error
    return {
        "k_run_id": t.run_id,
        "k_task_id": t.task_id,
        "k_map_index": t.map_index,
        "state": t.state.value,
        "attempt": t.attempt,
        "pool": t.pool,
        "queued_at": t.queued_at,
        "started_at": t.started_at,
        "ended_at": t.ended_at,
        "next_retry_at": t.next_retry_at,
        "output": None if output is None else output.to_json(),
        "error": None if error is None else error.to_json(),
        "cache_key": t.cache_key,
        "cache_origin": t.cache_origin,
        "worker": t.worker,
        "map_count": t.map_count,
        "reason": t.reason,
        "cache_detail": t.cache_detail,
    }


def ti_from_row(row: Sequence[Any]) -> TaskInstanceRecord:
    (
        run_id,
        task_id,
        map_index,
        state,
        attempt,
        pool,
        queued_at,
        started_at,
        ended_at,
        next_retry_at,
        output,
        error,
        cache_key,
        cache_origin,
        worker,
        map_count,
        reason,
        cache_detail,
    ) = row
    return TaskInstanceRecord(
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        state=TaskState(state),
        attempt=attempt,
        pool=pool,
        queued_at=queued_at,
        started_at=started_at,
        ended_at=ended_at,
        next_retry_at=next_retry_at,
        output=None if output is None else ValueRef.from_json(output),
        error=None if error is None else ErrorInfo.from_json(error),
        cache_key=cache_key,
        cache_origin=cache_origin,
        worker=worker,
        map_count=map_count,
        reason=reason,
        cache_detail=cache_detail,
    )


def attempt_params(a: AttemptRecord) -> dict[str, Any]:
    error = a.error
    return {
        "run_id": a.run_id,
        "task_id": a.task_id,
        "map_index": a.map_index,
        "attempt": a.attempt,
        "state": a.state.value,
        "started_at": a.started_at,
        "ended_at": a.ended_at,
        "worker": a.worker,
        "error": None if error is None else error.to_json(),
        "log_path": a.log_path,
    }


def attempt_from_row(row: Sequence[Any]) -> AttemptRecord:
    run_id, task_id, map_index, attempt, state, started_at, ended_at, worker, error, log_path = row
    return AttemptRecord(
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        attempt=attempt,
        state=TaskState(state),
        started_at=started_at,
        ended_at=ended_at,
        worker=worker,
        error=None if error is None else ErrorInfo.from_json(error),
        log_path=log_path,
    )


def metric_params(m: MetricRecord) -> dict[str, Any]:
    value = m.value
    is_text = isinstance(value, str)
    return {
        "run_id": m.run_id,
        "task_id": m.task_id,
        "map_index": m.map_index,
        "attempt": m.attempt,
        "name": m.name,
        "kind": m.kind,
        "value_num": None if is_text else float(value),
        "value_text": value if is_text else None,
        "at": m.at,
    }


def by_sha(a: ArtifactRecord) -> str:
    """Artifacts are written in sha256 order (store/lineage.py, rule 3)."""
    return a.sha256


def artifact_params(a: ArtifactRecord, now: datetime) -> dict[str, Any]:
    return {
        "sha256": a.sha256,
        "uri": a.uri,
        "size": a.size,
        "serializer": a.serializer,
        "type_name": a.type_name,
        "run_id": a.run_id,
        "task_id": a.task_id,
        "map_index": a.map_index,
        "attempt": a.attempt,
        "code_fingerprint": a.code_fingerprint,
        "created_at": a.created_at or now,
    }


def artifact_input_params(ordered: Sequence[ArtifactRecord]) -> list[dict[str, Any]]:
    """The lineage edges of these artifacts (each input once, in argument order)."""
    return [
        {
            "artifact_sha256": a.sha256,
            "run_id": a.run_id,
            "task_id": a.task_id,
            "map_index": a.map_index,
            "attempt": a.attempt,
            "input_sha256": sha,
            "position": i,
        }
        for a in ordered
        for i, sha in enumerate(dict.fromkeys(a.input_sha256s))
    ]


def asset_event_params(e: AssetEventRecord, now: datetime) -> dict[str, Any]:
    return {
        "asset": e.asset,
        "run_id": e.run_id,
        "task_id": e.task_id,
        "map_index": e.map_index,
        "attempt": e.attempt,
        "artifact_sha256": e.artifact_sha256,
        "created_at": e.created_at or now,
    }


def schedule_state_from_row(row: Sequence[Any]) -> ScheduleState:
    from cadenza.core.scheduling import ScheduleState

    pipeline, paused, last, versions, updated = row
    return ScheduleState(pipeline=pipeline, paused=bool(paused), last_logical_date=last,
                         asset_versions={str(k): int(v) for k, v in (versions or {}).items()},
                         updated_at=updated)


def trigger_event_from_row(row: Any) -> TriggerEventRecord:
    from cadenza.core.scheduling import TriggerEventRecord

    return TriggerEventRecord(id=row.id, pipeline=row.pipeline, source=row.source,
                              message_id=row.message_id, status=row.status, run_id=row.run_id,
                              error=row.error, payload=row.payload, received_at=row.received_at)
