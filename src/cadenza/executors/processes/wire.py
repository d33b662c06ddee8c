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
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.core.results import ErrorInfo, ErrorKind, ValueRef
from cadenza.executors.base import TaskCall, TaskOutcome, describe_exception

HOSTNAME = socket.gethostname()

# TaskCall travels as a tuple of its fields without `fn`, in this order.
CALL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(TaskCall) if f.name != "fn")
call_values = operator.attrgetter(*CALL_FIELDS)
_I_INPUTS = CALL_FIELDS.index("inputs")
_I_LABEL = (CALL_FIELDS.index("task_id"), CALL_FIELDS.index("map_index"))

def _builder(cls: type[Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """`build(*values)`, equal to `cls(**dict(zip(names, values)))` for a frozen slotted
    dataclass `cls` whose every field is in `names`, without its `__init__`.

    Why by hand (STYLE: speed): a frozen dataclass's `__init__` sets each field through
    `object.__setattr__`, ~1.9 k instructions a field on CPython 3.11 (TaskOutcome: 26 k,
    a two-argument ValueRef: 13 k); the slots' own setters cost a fraction of that. Built
    with exec like dataclasses' own `__init__`, once per class at import."""
    if {f.name for f in dataclass_fields(cls)} != set(names) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__qualname__}: a builder must set every field, and the class "
                        "must have no __post_init__ (it would be skipped)")
    setters = {f"_set_{name}": cls.__dict__[name].__set__ for name in names}
    body = "".join(f"    _set_{name}(obj, {name})\n" for name in names)
    source = f"def build({', '.join(names)}):\n    obj = _new(_cls)\n{body}    return obj\n"
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, **setters}
    exec(source, namespace)  # noqa: S102 - source built from the dataclass's field names only
    build: Callable[..., Any] = namespace["build"]
    return build


# TaskOutcome travels as a flat tuple: pickling the slotted dataclasses goes through Python-level
# __getstate__/__setstate__, and an aware datetime costs 17 us to pickle and 12 us to unpickle
# (copyreg for timezone.utc). As a tuple with datetimes in integer microseconds, an outcome
# costs 1-2 us each way instead of 32 us (measured on the 2-core CI machine).
_OUTCOME_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(TaskOutcome))
_outcome_values = operator.attrgetter(*_OUTCOME_FIELDS)
_new_outcome = _builder(TaskOutcome, _OUTCOME_FIELDS)
_VALUEREF_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(ValueRef))
_valueref_values = operator.attrgetter(*_VALUEREF_FIELDS)
new_valueref = _builder(ValueRef, _VALUEREF_FIELDS)
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
    out = list(values)
    ref = out[_I_OUTPUT]
    if type(ref) is tuple:
        out[_I_OUTPUT] = new_valueref(*ref)
    for i in _I_TIMES:
        at = out[i]
        if type(at) is int:
            out[i] = _EPOCH + timedelta(microseconds=at)
    outcome: TaskOutcome = _new_outcome(*out)
    return outcome


_new_call = _builder(TaskCall, ("fn", *CALL_FIELDS))
# How an input travels in a call message (`pack_call`): (name, how, what).
_PLAIN, _REF, _REFS = 0, 1, 2


def _pack_inputs(inputs: Any) -> tuple[tuple[str, int, Any], ...]:
    """A call's inputs with its references (ValueRef, or a list of them: a fan-in) as
    tuples: pickling a ValueRef goes through its Python-level __getstate__ (~27 k
    instructions each way on CPython 3.11); a tuple of its fields costs ~1 k."""
    packed: list[tuple[str, int, Any]] = []
    for name, value in inputs.items():
        kind = type(value)
        if kind is ValueRef:
            packed.append((name, _REF, _valueref_values(value)))
        elif kind is list and value and all(type(v) is ValueRef for v in value):
            packed.append((name, _REFS, [_valueref_values(v) for v in value]))
        else:
            packed.append((name, _PLAIN, value))
    return tuple(packed)


def _unpack_inputs(packed: tuple[tuple[str, int, Any], ...]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for name, how, what in packed:
        if how == _REF:
            inputs[name] = new_valueref(*what)
        elif how == _REFS:
            inputs[name] = [new_valueref(*ref) for ref in what]
        else:
            inputs[name] = what
    return inputs


def unpack_call(fn: Callable[..., Any], values: tuple[Any, ...]) -> TaskCall:
    """The TaskCall of a `pack_call` message's values, with its function."""
    unpacked = list(values)
    unpacked[_I_INPUTS] = _unpack_inputs(values[_I_INPUTS])
    call: TaskCall = _new_call(fn, *unpacked)
    return call


def packed_label(values: tuple[Any, ...]) -> str:
    """TaskCall.label of a `pack_call` message's values, before the TaskCall exists."""
    task_id, map_index = values[_I_LABEL[0]], values[_I_LABEL[1]]
    return str(task_id) if map_index < 0 else f"{task_id}[{map_index}]"


# Messages, driver -> worker (pickled tuples):
#   ("F", wire_key, fn_bytes, evict_key | None, sys_path | None)
#                                                 a function, sent once per worker (with the
#                                                 driver's sys.path when it changed)
#   ("E", changed, removed, cwd)                  the driver's environment variables that
#                                                 changed (dict) or went (list) since the
#                                                 worker last got them, and its working
#                                                 directory (executors/environ.py)
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
    return _cloudpickle_call(call, msg)


def _cloudpickle_call(call: TaskCall, msg: tuple[Any, ...]) -> bytes:
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


def pack_call(call: TaskCall, wire_key: str) -> bytes:
    """The call message for a processes worker (`child.py`, read by `unpack_call`): as
    `pickle_call`, with the inputs' references packed as tuples."""
    values = list(call_values(call))
    values[_I_INPUTS] = _pack_inputs(call.inputs)
    msg = ("C", wire_key, tuple(values))
    try:
        data: bytes | None = pickle.dumps(msg, protocol=PROTOCOL)
    except Exception:  # noqa: BLE001 - e.g. a lambda in the inputs: cloudpickle below
        data = None
    if data is not None and b"__main__" not in data:  # see pickle_call
        return data
    return _cloudpickle_call(call, msg)
