"""The processes executor's wire codec (executors/processes/wire.py): what a call and an
outcome become on the way to and from a worker comes back equal, field by field, although
the codec builds the records without their dataclass __init__."""

from __future__ import annotations

import pickle
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cadenza.core.records import ErrorInfo, ErrorKind, ValueRef
from cadenza.executors.base import TaskCall, TaskOutcome
from cadenza.executors.processes import wire


def double(x: int) -> int:
    return 2 * x


def every_field(cls: type[Any], obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(cls)}


ART = ValueRef(kind="artifact", uri="file:///a/b", sha256="ab" * 32, serializer="npy", size=12,
               type_name="numpy.ndarray")


def a_call(inputs: dict[str, Any], **more: Any) -> TaskCall:
    return TaskCall(
        run_id="r1", pipeline="p", task_id="t", map_index=more.pop("map_index", -1), attempt=2,
        fn=double, fn_key="tests:double", inputs=inputs, call_kinds={k: "KEYWORD_ONLY"
                                                                      for k in inputs},
        timeout_s=more.pop("timeout_s", None), env={"A": "1"}, log_path="/logs/t.2.log",
        artifact_root="/art", inline_limit_bytes=10, context={"params": {"n": 1}},
        tracking_info={"run": "x"}, **more,
    )


@pytest.mark.parametrize("inputs", [
    {},
    {"x": ValueRef(kind="json", value=19)},
    {"x": ART, "n": 3, "name": "plain"},
    {"xs": [ValueRef(kind="json", value=i) for i in range(3)] + [ART]},  # a fan-in
    {"mixed": [ART, 1], "empty": [], "tup": (ART,), "nested": {"k": [ART]}},
    {"looks_packed": ("x", 1, (1, 2, 3, 4, 5, 6, 7))},
])
def test_a_packed_call_comes_back_equal(inputs: dict[str, Any]) -> None:
    call = a_call(inputs, timeout_s=1.5, map_index=4, resources={"cpu": 1.0})
    msg = pickle.loads(wire.pack_call(call, "tests:double#1"))
    assert msg[:2] == ("C", "tests:double#1")
    back = wire.unpack_call(double, msg[2])
    assert type(back) is TaskCall and back == call
    assert every_field(TaskCall, back) == every_field(TaskCall, call)
    assert wire.packed_label(msg[2]) == call.label == "t[4]"
    for name, value in inputs.items():
        assert type(back.inputs[name]) is type(value)


def test_an_outcome_comes_back_equal_with_every_field_set() -> None:
    at = datetime(2026, 12, 7, 2, 30, 1, 123456, tzinfo=UTC)
    outcome = TaskOutcome(
        run_id="r1", task_id="t", map_index=3, attempt=2, ok=False, output=ART,
        error=ErrorInfo(kind=ErrorKind.EXCEPTION, type="builtins.ValueError", message="no"),
        started_at=at, ended_at=at + timedelta(microseconds=7), worker="pid:1@h",
        log_path="/l", metrics=(("loss", 0.5, "metric"),),
    )
    back = wire.decode_outcome(pickle.loads(pickle.dumps(wire.encode_outcome(outcome))))
    assert type(back) is TaskOutcome and back == outcome
    assert every_field(TaskOutcome, back) == every_field(TaskOutcome, outcome)
    assert back.started_at is not None and back.started_at.tzinfo is UTC
    assert type(back.output) is ValueRef


def test_an_outcome_with_unset_and_non_utc_fields_comes_back_equal() -> None:
    other_tz = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    outcome = TaskOutcome(run_id="r", task_id="t", map_index=-1, attempt=1, ok=True,
                          output=ValueRef(kind="json", value=[1, 2]), started_at=other_tz)
    back = wire.decode_outcome(wire.encode_outcome(outcome))
    assert back == outcome and back.started_at == other_tz and back.ended_at is None


def test_the_builder_refuses_a_class_it_would_build_wrong() -> None:
    # A field left out would be missing on the built object (no __init__ fills defaults in).
    with pytest.raises(TypeError, match="every field"):
        wire._builder(ValueRef, ("kind", "value"))
