"""The executor protocol: how the engine hands work out and gets outcomes back.

A documented extension point. The engine builds a `TaskCall`, calls `Executor.submit(call,
sink)`, and the executor calls `sink(outcome)` exactly once per call, from any thread, when
the attempt ends in any way (success, exception, timeout, worker lost, cancelled). Outputs are
written by the worker straight to the artifact store; only a `ValueRef` travels back.

Executors are looked up by name (`get_executor("processes")`); concrete modules are imported
only when first asked for, so `import cadenza` stays fast.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cadenza.core.errors import ConfigError
from cadenza.core.frozen import fast_init
from cadenza.core.results import ErrorInfo, ErrorKind, ValueRef


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCall:
    """One attempt of one task instance, ready to execute.

    `inputs` maps parameter names to values in which `ValueRef`s may appear anywhere
    (nested in lists, tuples and dicts: a fan-in arrives as a list of refs); the worker
    loads each ref before calling. `call_kinds` says how each name is passed
    (`inspect.Parameter.kind` names), so *args and **kwargs survive.
    """

    run_id: str
    pipeline: str
    task_id: str
    map_index: int
    attempt: int
    fn: Callable[..., Any]
    fn_key: str  # identity of `fn` (module:qualname + code fingerprint) for worker caching
    inputs: Mapping[str, Any]
    call_kinds: Mapping[str, str]
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: str | None = None
    artifact_root: str = ""
    inline_limit_bytes: int = 64 * 1024
    # What get_context() shows inside the task.
    context: Mapping[str, Any] = field(default_factory=dict)
    # The pipeline's experiment tracker and what its start_run returned (core.tracking).
    tracker: Any = None
    tracking_info: Mapping[str, Any] = field(default_factory=dict)
    # The task's own environment (`@task(requirements=..., python=...)`): when either is set,
    # every executor runs the call in a child process on that environment's interpreter
    # (`executors/envs.py`) instead of its usual worker.
    requirements: tuple[str, ...] = ()
    python: str | None = None
    # What the task declared in `resources=`, for executors that place work on other machines
    # (ray): "cpu", "gpu", "memory" (bytes) and custom names. Empty when it declared none.
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def isolated(self) -> bool:
        return bool(self.requirements) or self.python is not None

    @property
    def label(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOutcome:
    """How one attempt ended. Exactly one per submitted TaskCall."""

    run_id: str
    task_id: str
    map_index: int
    attempt: int
    ok: bool
    output: ValueRef | None = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker: str | None = None
    log_path: str | None = None  # set when the attempt wrote any log output
    metrics: tuple[tuple[str, float | str, str], ...] = ()  # (name, value, "metric"|"param")
    # In-process executors hand the live object back so the driver can reuse it without
    # reading the artifact store again; None when the worker ran in another process.
    value: Any = None
    has_value: bool = False


Sink = Callable[[TaskOutcome], None]
# Leads a wait on an `Outcomes` (see there): (outcomes, timeout) -> whether it led.
Pump = Callable[["Outcomes", "float | None"], bool]


class Outcomes:
    """The queue a driver takes its outcomes from; its `put` is the sink the driver hands
    every executor (None wakes the driver without an outcome).

    Leader/follower: an executor whose outcomes arrive on pipes it watches (processes)
    `attach`es a pump. A `get` that would block then runs the pump in the waiting thread,
    which reads the pipes itself while no other thread does, until an item is here or the
    time is up, instead of sleeping until the executor's own thread has read the outcome and
    handed it over (a thread wake and a GIL hand-off per outcome, on the critical path of a
    chain). While a pump leads, a `put` from another thread wakes it with the pump's waker.
    Without a pump, or when the pump cannot lead (another thread reads the pipes), `get`
    waits on the queue as any queue."""

    __slots__ = ("_items", "_leader", "_pump", "_waker")

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[TaskOutcome | None] = queue.SimpleQueue()
        self._pump: Pump | None = None
        self._waker: Callable[[], None] | None = None
        self._leader: int | None = None  # the thread a pump leads in

    def put(self, item: TaskOutcome | None) -> None:
        self._items.put(item)
        waker = self._waker
        if waker is not None and self._leader != threading.get_ident():
            waker()

    def empty(self) -> bool:
        return self._items.empty()

    def get_nowait(self) -> TaskOutcome | None:
        return self._items.get_nowait()

    def get(self, timeout: float | None = None) -> TaskOutcome | None:
        """The next item; raises queue.Empty once `timeout` seconds have passed."""
        items = self._items
        pump = self._pump
        if pump is not None and items.empty():
            deadline = None if timeout is None else time.monotonic() + timeout
            if pump(self, timeout):
                if not items.empty():
                    return items.get_nowait()
                if deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
        return items.get(timeout=timeout)

    def attach(self, pump: Pump) -> None:
        """Let `pump` lead this queue's waits (the executor calls it when it takes a call
        whose sink is this queue's `put`)."""
        self._pump = pump

    def leading(self, waker: Callable[[], None] | None) -> None:
        """The pump's: it leads a wait in this thread and `waker` interrupts it (None: it
        stopped leading). Set before the pump checks `empty()`, so no put is missed."""
        if waker is None:
            self._waker = None
            self._leader = None
        else:
            self._leader = threading.get_ident()
            self._waker = waker


class Executor(Protocol):
    """What the engine needs from an executor.

    Besides the methods, each executor declares its capabilities as class attributes; the
    engine reads them (never with getattr) to choose how it waits and what it keeps:

    - `in_process`: calls run in the driver's interpreter, so an outcome may hand back the
      live value (`TaskOutcome.value`) and the driver keeps it instead of reading the
      artifact store again (inline, threads).
    - `runs_in_caller`: `submit()` runs the call to its end in the caller's thread before it
      returns (inline). The driver then commits the task's 'running' row from a watch thread
      while the call runs, and after a cancel expects no outcome from the interrupted call.
    - `places_resources`: the executor places each call's `TaskCall.resources` on machines of
      its own (ray): the engine admits pools only, not this machine's CPUs, memory and GPUs,
      and fills `TaskCall.resources` (empty otherwise).
    """

    name: str
    in_process: bool
    runs_in_caller: bool
    places_resources: bool

    def start(self) -> None:
        """Start workers (idempotent)."""

    def free_slots(self) -> int:
        """How many more calls would start at once if submitted now."""

    def submit(self, call: TaskCall, sink: Sink) -> None:
        """Start `call`; call `sink` once when it ends. May call `sink` before returning."""

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        """Stop a running call; its sink receives a cancelled outcome."""

    def shutdown(self) -> None:
        """Stop all workers."""

    def timeout_note(self) -> str | None:
        """None when every call is stopped at its `TaskCall.timeout_s` deadline (processes
        kills the worker). Otherwise how the deadline is enforced when it cannot be (threads,
        inline off the main thread): the engine prints it once at run start for the tasks
        that have a timeout."""

    def preflight(self, artifact_root: str, *, pipeline: str) -> None:
        """Before a run of `pipeline` starts: raise a ConfigError naming the fix when this
        executor's workers cannot use the artifact store at `artifact_root` (ray: a folder
        only the driver's machine has). Executors whose workers share the driver's machine
        have nothing to check."""

    def env_lock(self, requirements: tuple[str, ...], python: str | None, *, build: bool,
                 run_id: str | None = None) -> str | None:
        """The resolved lock (`uv pip freeze`) of the environment a call with these
        `requirements`/`python` would run in (`executors/envs.py`), built first when `build`;
        None when it is not built and `build` is False. Raises a CadenzaError (uv's message)
        when it cannot be built. The engine keys a cached task by its digest."""


_REGISTRY: dict[str, str] = {
    "inline": "cadenza.executors.inline:InlineExecutor",
    "threads": "cadenza.executors.threads:ThreadExecutor",
    "processes": "cadenza.executors.processes:ProcessExecutor",
    "ray": "cadenza.executors.ray:RayExecutor",
}
_shared: dict[str, Executor] = {}
_shared_lock = threading.Lock()


def register_executor(name: str, target: str) -> None:
    """Register an executor class by dotted path "module:Class"."""
    _REGISTRY[name] = target


def executor_names() -> list[str]:
    return sorted(_REGISTRY)


def _load(name: str) -> type[Any]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown executor '{name}'",
            hint=f"use one of: {', '.join(executor_names())}",
        ) from None
    module, _, attr = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


def get_executor(name: str, **options: Any) -> Executor:
    """The process-wide executor of that name, created and started on first use.

    Executors are persistent: a second run in the same process reuses the same worker
    pool. Passing options creates a private instance instead (the caller shuts it down).
    """
    if options:
        ex: Executor = _load(name)(**options)
        ex.start()
        return ex
    with _shared_lock:
        shared = _shared.get(name)
        if shared is None:
            shared = _load(name)()
            shared.start()
            _shared[name] = shared
        return shared


SENSOR_POLLER_THREADS = 8


def sensor_poller() -> Executor:
    """The process-wide threads the engine pokes sensor steps on.

    A poke is short (a glob, a query), so it runs on one of these threads in the driver's
    process: between pokes a waiting sensor holds nothing, and a poke never takes a worker
    process or a slot of the run's executor or pool."""
    with _shared_lock:
        shared = _shared.get("sensor-poller")
        if shared is None:
            shared = _load("threads")(max_workers=SENSOR_POLLER_THREADS)
            shared.start()
            _shared["sensor-poller"] = shared
        return shared


def shutdown_all() -> None:
    with _shared_lock:
        executors = list(_shared.values())
        _shared.clear()
    for ex in executors:
        ex.shutdown()


def describe_exception(exc: BaseException, *, kind: ErrorKind = ErrorKind.EXCEPTION,
                       tb: str = "") -> ErrorInfo:
    """An ErrorInfo for `exc`, keeping its class hierarchy by name for retry_on."""
    cls = type(exc)
    mro = tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__ if c is not object)
    try:
        message = str(exc)
    except Exception as str_error:  # noqa: BLE001 - an outcome must be made all the same
        # (a library's exception whose str() asks a service that is gone: a stopped JVM)
        message = f"{cls.__name__} (its message could not be read: {str_error!r})"
    return ErrorInfo(
        kind=kind,
        type=f"{cls.__module__}.{cls.__qualname__}",
        message=message,
        traceback=tb,
        type_mro=mro,
    )
