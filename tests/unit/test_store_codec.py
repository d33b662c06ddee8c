"""store/codec.py: a record written as parameters and read back as a row (in the column
order the queries select) is the same record, for every field."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza.core.records import (
    AttemptRecord,
    ErrorInfo,
    ErrorKind,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
)
from cadenza.core.states import RunState, TaskState
from cadenza.store import codec, tables

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ERR = ErrorInfo(kind=ErrorKind.EXCEPTION, type="builtins.ValueError", message="bad", traceback="tb",
                type_mro=("builtins.ValueError", "builtins.Exception"))


def _row(columns: tuple[Any, ...], params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params[c.name] for c in columns)


def test_run_round_trips_through_params_and_row() -> None:
    run = RunRecord(
        run_id="r1", pipeline="p", state=RunState.RUNNING, params={"n": 1}, created_at=T0,
        started_at=T0, ended_at=T0 + timedelta(seconds=1), executor="threads",
        trigger="schedule", logical_date=T0, data_interval_start=T0,
        data_interval_end=T0 + timedelta(days=1), source="f.py:p", driver_id="d1",
        heartbeat_at=T0, error="e", tags=("a", "b"), extra={"x": [1]},
        cancel_requested_at=T0,
    )
    assert codec.run_from_row(_row(tables.RUN_COLUMNS, codec.run_params(run))) == run
    update = codec.run_update_params(run)
    assert update["k_run_id"] == "r1" and update["hb_at"] == T0
    assert "cancel_requested_at" not in update  # another process owns that column


def test_task_instance_round_trips_through_params_and_row() -> None:
    ti = TaskInstanceRecord(
        run_id="r1", task_id="t", map_index=3, state=TaskState.FAILED, attempt=2, pool="gpu",
        queued_at=T0, started_at=T0, ended_at=T0, next_retry_at=T0,
        output=ValueRef(kind="json", value={"k": 1}), error=ERR, cache_key="ck",
        cache_origin={"run_id": "r0"}, worker="w", map_count=4, reason="why",
        cache_detail={"why": "miss"},
    )
    assert codec.ti_from_row(_row(tables.TI_COLUMNS, codec.ti_params(ti))) == ti
    update = codec.ti_update_params(ti)
    assert (update["k_run_id"], update["k_task_id"], update["k_map_index"]) == ("r1", "t", 3)


def test_attempt_round_trips_through_params_and_row() -> None:
    a = AttemptRecord(run_id="r1", task_id="t", map_index=-1, attempt=1,
                      state=TaskState.UP_FOR_RETRY, started_at=T0, ended_at=T0, worker="w",
                      error=ERR, log_path="logs/x.log")
    assert codec.attempt_from_row(_row(tables.ATTEMPT_COLUMNS, codec.attempt_params(a))) == a


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_error_kind_is_stored_as_its_plain_string_and_read_back_as_the_member(
        kind: ErrorKind) -> None:
    stored = json.loads(json.dumps(replace(ERR, kind=kind).to_json()))
    assert stored["kind"] == kind.value and type(stored["kind"]) is str
    back = ErrorInfo.from_json(stored)
    assert back.kind is kind and back == replace(ERR, kind=kind)


def test_error_rows_with_a_kind_this_version_does_not_know_still_read() -> None:
    row = {**ERR.to_json(), "kind": "quota_exceeded"}  # e.g. written by a newer Cadenza
    back = ErrorInfo.from_json(row)
    assert back.kind is ErrorKind.UNKNOWN
    assert (back.type, back.message, back.traceback) == (ERR.type, "bad", "tb")
    assert back.first_line() == "ValueError: bad"


def test_error_rows_without_a_kind_read_as_an_exception() -> None:
    row = {k: v for k, v in ERR.to_json().items() if k != "kind"}  # the oldest rows
    assert ErrorInfo.from_json(row).kind is ErrorKind.EXCEPTION
