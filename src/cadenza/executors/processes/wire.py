"""The wire between the pool and its worker processes: messages, and the codecs that keep
them cheap.

What belongs here: the message tuples both sides exchange, turning a TaskCall into a call
message (without its function, which travels once per worker) and a function into bytes,
the flat-tuple outcome codec, the error a message that cannot be (un)pickled becomes.
What does not: processes and pipes (`pool.py`), the worker's loop (`child.py`).
"""

from __future__ import annotations

import operator
import pickle
import socket
import traceback
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.core.records import ErrorInfo, ErrorKind, ValueRef
from cadenza.executors.base import TaskCall, TaskOutcome, describe_exception

HOSTNAME = socket.gethostname()

# TaskCall travels as a tuple of its fields without `fn`, in this order.
CALL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(TaskCall) if f.name != "fn")
call_values = operator.attrgetter(*CALL_FIELDS)

# TaskOutcome travels as a flat tuple: pickling the slotted dataclasses goes through Python-level
# __getstate__/__setstate__, and an aware datetime costs 17 us to pickle and 12 us to unpickle
# (copyreg for timezone.utc). As a tuple with datetimes in integer microseconds, an outcome
# costs 1-2 us each way instead of 32 us (measured on the 2-core CI machine).
_OUTCOME_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(TaskOutcome))
_outcome_values = operator.attrgetter(*_OUTCOME_FIELDS)
_VALUEREF_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(ValueRef))
_valueref_values = operator.attrgetter(*_VALUEREF_FIELDS)
_I_OUTPUT = _OUTCOME_FIELDS.index("output")
_I_TIMES = (_OUTCOME_FIELDS.index("started_at"), _OUTCOME_FIELDS.index("ended_at"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def encode_outcome(outcome: TaskOutcome) -> tuple[Any, ...]:
    values = list(_outcome_values(outcome))
    ref = values[_I_OUTPUT]
    if type(ref) is ValueRef:
        values[_I_OUTPUT] = _valueref_values(ref)
    for i in _I_TIMES:
        at = values[i]
        if type(at) is datetime and at.tzinfo is UTC:
            values[i] = (at - _EPOCH) // _ONE_US
    return tuple(values)


def decode_outcome(values: tuple[Any, ...]) -> TaskOutcome:
    fields = dict(zip(_OUTCOME_FIELDS, values))
    ref = values[_I_OUTPUT]
    if type(ref) is tuple:
        fields["output"] = ValueRef(**dict(zip(_VALUEREF_FIELDS, ref)))
    for i in _I_TIMES:
        at = values[i]
        if type(at) is int:
            fields[_OUTCOME_FIELDS[i]] = _EPOCH + timedelta(microseconds=at)
    return TaskOutcome(**fields)


# Messages, driver -> worker (pickled tuples):
#   ("F", wire_key, fn_bytes, evict_key | None, sys_path | None)
#                                                 a function, sent once per worker (with the
#                                                 driver's sys.path when it changed)
#   ("C", wire_key, fields)                       run this call
#   ("S",)                                        stop
# worker -> driver:
#   "ready"                                       booted; ready for calls
#   b"" (an empty frame, not pickled)             a call with a timeout: its function starts
#                                                 now (the driver's deadline counts from here)
#   ("ok", encoded TaskOutcome)                   a call ended (whatever the task did)
#   ("fail", ErrorInfo, drop_fn: bool)            the call could not even start or return
READY = "ready"
START_FRAME = b""
STOP_MSG = pickle.dumps(("S",), protocol=pickle.HIGHEST_PROTOCOL)
PROTOCOL = pickle.HIGHEST_PROTOCOL


def fail_message(error: ErrorInfo, *, drop_fn: bool = False) -> bytes:
    return pickle.dumps(("fail", error, drop_fn), protocol=PROTOCOL)


def error_info(exc: BaseException, kind: ErrorKind, message: str) -> ErrorInfo:
    base = describe_exception(exc, kind=kind)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(
        kind=kind, type=base.type, message=message, traceback=tb, type_mro=base.type_mro
    )


def call_label(f: dict[str, Any]) -> str:
    """TaskCall.label, before the TaskCall exists."""
    task_id, map_index = f["task_id"], f["map_index"]
    return str(task_id) if map_index < 0 else f"{task_id}[{map_index}]"


class Unpicklable(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


def pickle_fn(call: TaskCall) -> bytes:
    """The task's function as bytes (cloudpickle: a function of `__main__` travels by value).
    Unpicklable with a serialization error when it cannot be pickled."""
    fn = call.fn
    import cloudpickle  # type: ignore[import-untyped,unused-ignore]

    try:
        blob: bytes = cloudpickle.dumps(fn, protocol=PROTOCOL)
    except Exception as exc:  # becomes a serialization outcome
        name = getattr(fn, "__qualname__", repr(fn))
        raise Unpicklable(
            error_info(
                exc,
                ErrorKind.SERIALIZATION,
                f"task '{call.label}' of pipeline '{call.pipeline}': its function {name} "
                f"cannot be pickled to send it to a worker process: {type(exc).__name__}: "
                f"{exc}. Fix: define the function at module level, or make the variables "
                "its closure captures picklable (no locks, open files, connections or "
                "generators); or run it with executor='threads'",
            )
        ) from exc
    return blob


def pickle_call(call: TaskCall, wire_key: str) -> bytes:
    """The call message for a worker: the call without its function (that travels once per
    worker, as `wire_key`)."""
    msg = ("C", wire_key, call_values(call))
    try:
        data: bytes | None = pickle.dumps(msg, protocol=PROTOCOL)
    except Exception:  # noqa: BLE001 - e.g. a lambda in the inputs: cloudpickle below
        data = None
    # An instance of a class of the driver's script pickles by reference, as
    # `__main__.Cls`, which the worker cannot resolve (workers do not import the script):
    # cloudpickle sends it by value. Scanning the payload costs ~0.1 us.
    if data is not None and b"__main__" not in data:
        return data
    import cloudpickle  # type: ignore[import-untyped,unused-ignore]

    try:
        blob: bytes = cloudpickle.dumps(msg, protocol=PROTOCOL)
    except Exception as exc:  # becomes a serialization outcome
        raise Unpicklable(
            error_info(
                exc,
                ErrorKind.SERIALIZATION,
                f"task '{call.label}' of pipeline '{call.pipeline}': its inputs cannot "
                f"be pickled to send them to a worker process: {type(exc).__name__}: "
                f"{exc}. Fix: pass data between tasks as return values (they go through "
                "the artifact store), or make the parameter values picklable",
            )
        ) from exc
    return blob
