"""The processes executor: a persistent pool of worker processes, the default executor.

What belongs here: starting, feeding, watching, killing and replacing worker processes, and
shipping functions and calls to them. What does not: running a call (that is
`executors/worker.py`, which every executor shares), resource admission (the engine, with
`executors/resources.py`), retries (the engine).

How it works. Each worker is a long-lived child process with one duplex
pipe to the driver. `submit` pickles the call without its function (the function travels
once per worker, keyed by `fn_key`) and writes it to an idle worker's pipe, or queues it in a
FIFO backlog. One collector thread in the driver blocks on every worker pipe, every worker's
process sentinel and a wake-up pipe, with a timeout equal to the nearest deadline (task
timeout or kill grace); it never polls. The wait is a persistent `selectors` selector (epoll):
`multiprocessing.connection.wait()` is the same mechanism rebuilt on every call, 15 us per
wake-up with 2 workers and 290 us with 64, against 2 us for the persistent one. It reads
outcomes, detects dead workers, enforces timeouts by killing, replaces lost workers and hands
out backlog work. Every sink is called from that thread, so an engine's sink never runs
concurrently with itself for this executor (shutdown() is the one exception: it delivers the
outcomes of interrupted calls itself, after the collector has stopped).

Start method: worker start latency, Process.start() until the worker has imported
`cadenza.executors.worker` and said it is ready (2-core CI VM, Python 3.11,
`bench/executor_roundtrip.py`, medians of 5; ranges span a quiet and a loaded machine):
    fork         4-7 ms      but unsafe: the driver always has threads (this collector, the
                             engine's, SQLAlchemy's pool), and forking a threaded process can
                             deadlock the child on a lock another thread held at fork time.
    forkserver   10-25 ms    the first worker also pays 200-400 ms once, for the server to
                             start and preload the worker modules (without the preload each
                             worker would import them: +100 ms). Children fork from a clean,
                             single-threaded server. Python 3.14 made it the Linux default.
    spawn        200-300 ms  a fresh interpreter importing everything again, per worker.
So the default is forkserver (spawn where it is unavailable); CADENZA_START_METHOD or
`start_method=` overrides it. A worker that dies while starting says so.

Workers never import the driver's `__main__` (standard multiprocessing children do, which
re-runs a script's unguarded top level, `pipeline.run()` included): scripts need no
`if __name__ == "__main__":` guard. Functions and classes of `__main__` travel by value
(cloudpickle, with the module-level values they read; inputs that refer to `__main__` too),
as Ray and Dask ship them; how and why in `_keep_main_out_of_workers`. In the worker, those
names are put into its `__main__` so that a task's own pickling by reference finds them, and
its `__main__` points at the driver's script so that a pool the task starts behaves as it
would in the driver.

Workers survive neither the driver nor their own task's children: each worker leads its own
process group (so a kill also stops what the task spawned, and Ctrl-C in the terminal reaches
the driver only), and a watchdog thread in the worker blocks on the parent-process sentinel
and kills the group when the driver goes away, even by SIGKILL.
"""

from __future__ import annotations

import atexit
import heapq
import importlib
import importlib.machinery
import logging
import multiprocessing
import multiprocessing.spawn
import operator
import os
import pickle
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection, wait
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import ConfigError, TaskCancelled, TaskTimeout, WorkerLost
from cadenza.core.records import ErrorInfo, ValueRef
from cadenza.executors.base import Sink, TaskCall, TaskOutcome, describe_exception

log = logging.getLogger(__name__)

START_METHOD_ENV = "CADENZA_START_METHOD"
# The function each worker runs a call with; imported once per worker process.
EXECUTE_TARGET = "cadenza.executors.worker:execute"
# Modules the forkserver imports once, so that each forked worker starts warm (~100 ms saved
# per worker start: `python -X importtime -c "import cadenza.executors.worker"`).
_PRELOAD = ["cadenza.executors.processes", "cadenza.executors.worker"]

KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL if the worker is still alive after this long
SHUTDOWN_GRACE_S = 5.0
# A worker that dies before it is ready is a boot failure; after this many in a row the pool
# stops respawning (instead of spinning) until work arrives again.
MAX_BOOT_FAILURES = 3
# ...and for this long after giving up, calls fail at once instead of forking more workers.
BOOT_RETRY_AFTER_S = 5.0
FN_CACHE_PER_WORKER = 256  # functions a worker keeps loaded (LRU, evicted by the driver)
FN_CACHE_DRIVER = 1024  # pickled functions the driver keeps (LRU)

_HOSTNAME = socket.gethostname()

# TaskCall travels as a tuple of its fields without `fn`, in this order.
_CALL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(TaskCall) if f.name != "fn")
_call_values = operator.attrgetter(*_CALL_FIELDS)

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


def _encode_outcome(outcome: TaskOutcome) -> tuple[Any, ...]:
    values = list(_outcome_values(outcome))
    ref = values[_I_OUTPUT]
    if type(ref) is ValueRef:
        values[_I_OUTPUT] = _valueref_values(ref)
    for i in _I_TIMES:
        at = values[i]
        if type(at) is datetime and at.tzinfo is UTC:
            values[i] = (at - _EPOCH) // _ONE_US
    return tuple(values)


def _decode_outcome(values: tuple[Any, ...]) -> TaskOutcome:
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
#   ("ok", encoded TaskOutcome)                   a call ended (whatever the task did)
#   ("fail", ErrorInfo, drop_fn: bool)            the call could not even start or return
_READY = "ready"
_STOP_MSG = pickle.dumps(("S",), protocol=pickle.HIGHEST_PROTOCOL)
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def default_start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _resolve_start_method(requested: str | None) -> str:
    method = requested or os.environ.get(START_METHOD_ENV) or default_start_method()
    available = multiprocessing.get_all_start_methods()
    if method not in available:
        source = "start_method=" if requested else f"{START_METHOD_ENV}="
        raise ConfigError(
            f"unknown multiprocessing start method {source}'{method}'",
            hint=f"use one of: {', '.join(available)} (default: {default_start_method()})",
        )
    return method


# --- workers do not import the driver's __main__ -------------------------------------------

# Set while this thread starts one of our workers (`_spawn_locked`).
_spawning = threading.local()
_main_guard_lock = threading.Lock()


def _keep_main_out_of_workers() -> None:
    """Start our workers without the driver's `__main__` (idempotent).

    With forkserver and spawn, multiprocessing tells each child to re-import the parent's
    main script (`init_main_from_path`) or module (`init_main_from_name`, for `python -m`), so
    that functions pickled by reference as `__main__.f` resolve there. That import re-runs
    every unguarded top-level statement of the user's script, `pipeline.run()` included. Our
    workers never need it: cloudpickle ships `__main__` functions and classes by value (with
    the module-level values they read), and `_pickled_call` does the same for inputs that
    refer to `__main__`. So the preparation data of our workers leaves both keys out, as loky
    (joblib's pool) does with its `init_main_module=False`.

    `multiprocessing.spawn.get_preparation_data(name)` is the one place both start methods
    (popen_forkserver and popen_spawn_posix, Python 3.4 to 3.14) read that from, through the
    module attribute. The wrapper installed here changes its answer only on the thread that is
    inside `_spawn_locked`'s `process.start()`; every other process started in the driver
    (the user's own pools) gets the standard data. tests/integration/test_unguarded_scripts.py
    checks on every supported Python that a worker does not run the script's top level.
    """
    with _main_guard_lock:
        original = multiprocessing.spawn.get_preparation_data
        if getattr(original, "_cadenza_keeps_main_out", False):
            return

        def get_preparation_data(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            data: dict[str, Any] = original(name, *args, **kwargs)
            if getattr(_spawning, "worker", False):
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
        get_preparation_data._cadenza_keeps_main_out = True  # type: ignore[attr-defined]
        multiprocessing.spawn.get_preparation_data = get_preparation_data


# --- the worker process -----------------------------------------------------------------------


def _main_identity() -> tuple[str | None, str | None]:
    """(path, module name) of the driver's `__main__`, as multiprocessing would read them."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if isinstance(path, str):
        path = os.path.abspath(path)
    return (path if isinstance(path, str) else None,
            spec_name if isinstance(spec_name, str) else None)


def _stand_in_for_main(path: str | None, spec_name: str | None) -> None:
    """Worker: let this process's `__main__` say where the driver's comes from.

    The worker did not import the user's script (see `_keep_main_out_of_workers`), so its
    `__main__` is multiprocessing's bootstrap module. A task that starts its own spawn or
    forkserver pool (ProcessPoolExecutor on Python 3.14, torch with `spawn`) should behave as
    it would in the driver: its children import the script as `__mp_main__`, with the usual
    `if __name__ == "__main__":` rule for the user's own pools.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__file__", None) is not None:
        return
    if spec_name is not None:
        main.__spec__ = importlib.machinery.ModuleSpec(spec_name, None)
    elif path is not None:
        main.__file__ = path


def _adopt_main_names(fn: Callable[..., Any]) -> None:
    """Worker: make the `__main__` functions and classes a task reads findable by name.

    cloudpickle rebuilt `fn` and the `__main__` globals it reads by value; this process's
    `__main__` module does not hold them. Code inside the task that pickles them by reference
    (a ProcessPoolExecutor mapping a function of the script over forked children, pickle.dumps
    of an instance of a class of the script) looks them up as `__main__.<name>`: put them there.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return
    space = main.__dict__
    found: dict[str, Any] = getattr(fn, "__globals__", {})
    for name, value in list(found.items()):
        if (
            not name.startswith("__")
            and getattr(value, "__module__", None) == "__main__"
            and getattr(value, "__qualname__", None) == name
        ):
            space[name] = value
    name = getattr(fn, "__qualname__", "")
    if name.isidentifier():
        space[name] = fn


def _watch_parent(sentinel: int) -> None:
    """Worker watchdog: block until the driver is gone, then take the task down with us."""
    wait([sentinel])
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)  # the worker and whatever its task started
    finally:
        os._exit(1)


def _apply_environment(env: dict[str, str]) -> None:
    # forkserver children inherit the server's environment as of its start, not the driver's
    # current one; make the worker see what the driver sees now.
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _fail(error: ErrorInfo, *, drop_fn: bool = False) -> bytes:
    return pickle.dumps(("fail", error, drop_fn), protocol=_PROTOCOL)


def _error_info(exc: BaseException, kind: str, message: str) -> ErrorInfo:
    base = describe_exception(exc, kind=kind)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(
        kind=kind, type=base.type, message=message, traceback=tb, type_mro=base.type_mro
    )


def _worker_main(conn: Connection, boot: tuple[Any, ...]) -> None:
    """Entry point of a worker process: load functions, run calls, send outcomes back."""
    sys_path, cwd, env, target, main_identity = boot
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # stays in the driver's group: kills then reach only this process
    sys.path[:] = sys_path
    try:
        os.chdir(cwd)
    except OSError:
        pass  # the driver's folder went away; the task sees the inherited one
    _apply_environment(env)
    _stand_in_for_main(*main_identity)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_watch_parent, args=(parent.sentinel,), name="cadenza-watchdog", daemon=True
        ).start()

    module_name, _, attr = target.partition(":")
    execute: Callable[..., TaskOutcome] = getattr(importlib.import_module(module_name), attr)
    ident = f"pid:{os.getpid()}@{_HOSTNAME}"
    conn.send_bytes(pickle.dumps(_READY, protocol=_PROTOCOL))

    raw_fns: dict[str, bytes] = {}
    fns: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the driver closed the pipe or went away
        try:
            msg = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
            conn.send_bytes(
                _fail(
                    _error_info(
                        exc,
                        "serialization",
                        "the inputs of the task could not be unpickled in the worker "
                        f"process: {exc}. Fix: pass only values whose classes are importable "
                        "from the worker (defined at module level of an importable module)",
                    )
                )
            )
            continue
        tag = msg[0]
        if tag == "F":
            _, key, blob, evict, new_path = msg
            if new_path is not None:
                sys.path[:] = new_path
            raw_fns[key] = blob
            if evict is not None:
                fns.pop(evict, None)
                raw_fns.pop(evict, None)
            continue
        if tag == "S":
            return
        _, key, values = msg
        call_fields = dict(zip(_CALL_FIELDS, values))
        label = _label(call_fields)
        fn = fns.get(key)
        if fn is None:
            blob = raw_fns.pop(key, None)
            if blob is None:  # the driver believed we had it; it resends next time
                conn.send_bytes(
                    _fail(
                        ErrorInfo(
                            kind="serialization",
                            type="cadenza.core.errors.CadenzaError",
                            message=f"the function of task '{label}' was not loaded in this "
                            "worker (a Cadenza bug); it will be sent again on the next attempt",
                        ),
                        drop_fn=True,
                    )
                )
                continue
            try:
                fn = pickle.loads(blob)
            except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
                conn.send_bytes(
                    _fail(
                        _error_info(
                            exc,
                            "serialization",
                            f"the function of task '{label}' could not be loaded in the "
                            f"worker process: {type(exc).__name__}: {exc}. Fix: make the "
                            "module that defines it importable from the driver's sys.path and "
                            "working directory, or define the task in the script you run",
                        ),
                        drop_fn=True,
                    )
                )
                continue
            if getattr(fn, "__module__", None) == "__main__":
                _adopt_main_names(fn)
            fns[key] = fn
        try:
            outcome = execute(TaskCall(fn=fn, **call_fields), enforce_timeout=False, worker=ident)
        except BaseException as exc:  # noqa: BLE001 - e.g. sys.exit() in the task
            conn.send_bytes(
                _fail(
                    _error_info(
                        exc,
                        "exception",
                        f"task '{label}' ended the worker's call with {type(exc).__name__}: {exc}",
                    )
                )
            )
            continue
        try:
            reply = pickle.dumps(("ok", _encode_outcome(outcome)), protocol=_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
            reply = _fail(
                _error_info(
                    exc,
                    "serialization",
                    f"the outcome of task '{label}' could not be pickled to send it back to the "
                    f"driver: {exc} (a Cadenza bug: outcomes hold plain records only)",
                )
            )
        conn.send_bytes(reply)


def _label(f: dict[str, Any]) -> str:
    """TaskCall.label, before the TaskCall exists."""
    task_id, map_index = f["task_id"], f["map_index"]
    return str(task_id) if map_index < 0 else f"{task_id}[{map_index}]"


# --- the driver side --------------------------------------------------------------------------


class _Job:
    __slots__ = (
        "call",
        "deadline",
        "done",
        "fn_blob",
        "payload",
        "sink",
        "started_at",
        "stop_reason",
        "unsent",
        "wire_key",
        "worker",
    )

    def __init__(
        self, call: TaskCall, sink: Sink, payload: bytes, wire_key: str, fn_blob: bytes
    ) -> None:
        self.call = call
        self.sink = sink
        self.payload = payload
        self.wire_key = wire_key
        self.fn_blob = fn_blob
        self.worker: _Worker | None = None
        self.started_at: Any = None
        self.deadline: float | None = None
        self.stop_reason: str | None = None  # "timeout" | "cancelled" once we kill for it
        self.done = False
        self.unsent = False  # the worker died before we could even write the call


class _Worker:
    __slots__ = (
        "conn",
        "dead",
        "eof",
        "fn_keys",
        "job",
        "pid",
        "process",
        "ready",
        "sentinel",
        "spawned_at",
        "sys_path",
    )

    def __init__(
        self, process: Any, conn: Connection, spawned_at: float, sys_path: list[str]
    ) -> None:
        self.process = process
        self.sys_path = sys_path
        self.conn = conn
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel
        self.fn_keys: OrderedDict[str, None] = OrderedDict()
        self.job: _Job | None = None
        self.ready = False
        self.spawned_at = spawned_at
        self.dead = False
        self.eof = False  # its pipe is closed: wait on the sentinel only


def _signal(worker: _Worker, sig: int) -> None:
    """Send `sig` to the worker's process group (its task's children too)."""
    try:
        os.killpg(worker.pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not yet its own group leader (still booting), or already gone.
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass


def _describe_exit(exitcode: int | None) -> tuple[str, str]:
    """(what happened, how to fix it) for a worker's exit code."""
    if exitcode is None:
        return "vanished", "check the machine's logs (dmesg) for why the process ended"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return (
                f"was killed by {name}",
                (
                    "SIGKILL usually means the machine ran out of memory (the kernel's OOM "
                    "killer) or someone ran kill -9; declare resources={'memory': ...} or "
                    "make the task use less memory"
                ),
            )
        if -exitcode in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL):
            return (
                f"crashed with {name}",
                (
                    "a native extension crashed; run the task with executor='inline' under "
                    "a debugger, or check the versions of its compiled libraries"
                ),
            )
        return f"was killed by {name}", "find out what sent the signal"
    return (
        f"exited with code {exitcode}",
        (
            "the task (or a library it calls) ended the process, e.g. with os._exit(); "
            "raise an exception instead"
        ),
    )


class ProcessExecutor:
    """A persistent pool of worker processes.

    Example:
        ex = ProcessExecutor(max_workers=4)
        ex.start()
        ex.submit(call, outcomes.put)   # outcomes.put(TaskOutcome) is called exactly once
        ex.shutdown()

    How a call can end, each reported exactly once through its sink:
      1. the worker returns an outcome (success, or any exception the task raised);
      2. the worker process dies mid-call -> kind="worker_lost"; the worker is replaced;
      3. `timeout_s` passes -> the worker is killed, kind="timeout"; replaced;
      4. `cancel()` -> dropped from the backlog, or the worker is killed; kind="cancelled";
      5. the function or inputs cannot be pickled, or the outcome cannot come back
         -> kind="serialization";
      6. `shutdown()` while queued or running -> kind="cancelled".
    """

    name = "processes"
    in_process = False

    def __init__(self, max_workers: int | None = None, start_method: str | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigError(
                f"max_workers must be at least 1, got {max_workers}",
                hint="leave it unset to use one worker per CPU",
            )
        self.max_workers = max_workers or os.cpu_count() or 1
        self.start_method = _resolve_start_method(start_method)
        self._ctx: Any = multiprocessing.get_context(self.start_method)
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        _keep_main_out_of_workers()
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []  # a stack: the warmest worker goes first
        self._backlog: deque[_Job] = deque()
        self._timers: list[tuple[float, int, str, _Job]] = []  # (when, seq, what, job)
        self._timer_seq = 0
        self._pending: list[tuple[Sink, TaskOutcome]] = []  # made outside the collector
        self._wait_until = float("inf")
        # The collector's selector: worker pipes, sentinels and the wake pipe. Only the
        # collector thread (re)registers; others set _selector_dirty and wake it.
        self._selector: selectors.BaseSelector | None = None
        self._registered: dict[int, tuple[_Worker, bool]] = {}  # fd -> (worker, is_pipe)
        self._selector_dirty = False
        self._boot_failures = 0
        self._broken_reason: str | None = None
        self._broken_at = 0.0
        self._collector: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1
        # fn_key -> (fn, wire_key, pickled bytes); wire_key changes when the object does
        self._fn_cache: OrderedDict[str, tuple[Callable[..., Any], str, bytes]] = OrderedDict()
        self._fn_versions: dict[str, int] = {}
        # Counters, for tests and bench/.
        self.fn_sends = 0
        self.workers_started = 0
        self.start_latencies_s: deque[float] = deque(maxlen=64)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and the collector thread (idempotent)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stopping = False
            self._broken_reason = None
            self._boot_failures = 0
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
            os.set_blocking(self._wake_r, False)
            if self.start_method == "forkserver":
                # Global to this process's forkserver; only takes effect when it starts.
                self._ctx.set_forkserver_preload(_PRELOAD)
            elif self.start_method == "fork":
                # Forked workers inherit it instead of importing it each (~100 ms).
                importlib.import_module(EXECUTE_TARGET.partition(":")[0])
            try:
                for _ in range(self.max_workers):
                    self._spawn_locked()
            except BaseException:
                for w in self._workers:
                    _signal(w, signal.SIGKILL)
                self._workers.clear()
                self._idle.clear()
                self._started = False
                os.close(self._wake_r)
                os.close(self._wake_w)
                raise
            self._collector = threading.Thread(
                target=self._collect, name="cadenza-processes-collector", daemon=True
            )
            self._collector.start()
        atexit.register(self.shutdown)
        log.debug("processes executor: %d workers (%s)", self.max_workers, self.start_method)

    def shutdown(self) -> None:
        """Stop every worker; calls still queued or running end as cancelled. Idempotent."""
        with self._lock:
            if not self._started or self._stopping:
                return
            self._stopping = True
            collector = self._collector
        atexit.unregister(self.shutdown)
        self._wake()
        if collector is not None and collector is not threading.current_thread():
            collector.join(timeout=SHUTDOWN_GRACE_S)
        with self._lock:
            workers = list(self._workers)
            backlog = list(self._backlog)
            self._backlog.clear()
            pending, self._pending = self._pending, []
        delivered: list[tuple[Sink, TaskOutcome]] = list(pending)
        # Outcomes that arrived while we were stopping are real: deliver them as they are.
        for w in workers:
            delivered.extend(self._drain(w))
        for w in workers:
            if w.job is not None and not w.dead:
                _signal(w, signal.SIGTERM)
            else:
                try:
                    w.conn.send_bytes(_STOP_MSG)
                except OSError:
                    pass
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        alive: dict[Any, _Worker] = {w.sentinel: w for w in workers if not w.dead}
        while alive:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sentinel in wait(list(alive), left):
                alive.pop(sentinel)
        for w in alive.values():
            _signal(w, signal.SIGKILL)
        for w in workers:
            if w.job is not None and not w.job.done:
                w.job.done = True
                reason = w.job.stop_reason or "shutdown"  # a timeout being enforced stays one
                delivered.append((w.job.sink, self._stopped_outcome(w.job, reason)))
            self._reap(w)
        for job in backlog:
            job.done = True
            delivered.append((job.sink, self._stopped_outcome(job, "shutdown")))
        with self._lock:
            self._workers.clear()
            self._idle.clear()
            if self._selector is not None:
                self._selector.close()
            self._selector = None
            self._registered.clear()
            self._timers.clear()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_r = self._wake_w = -1
            self._collector = None
            self._started = False
        self._deliver(delivered)

    # -- the protocol --------------------------------------------------------------------

    def free_slots(self) -> int:
        with self._lock:
            if not self._started or (self._broken_reason is not None and not self._workers):
                # Not started, or gave up after boot failures: a submit (re)starts workers.
                return self.max_workers
            return max(0, len(self._idle) - len(self._backlog))

    def submit(self, call: TaskCall, sink: Sink) -> None:
        if not self._started:
            self.start()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("submit %s attempt %d of run %s", call.label, call.attempt, call.run_id)
        try:
            wire_key, fn_blob = self._pickled_fn(call)
            payload = self._pickled_call(call, wire_key)
        except _Unpicklable as exc:
            self._deliver_later(sink, self._outcome(call, exc.error, started_at=None))
            return
        job = _Job(call, sink, payload, wire_key, fn_blob)
        with self._lock:
            if self._stopping:
                job.done = True
                worker = None
            else:
                if self._broken_reason is not None and not self._workers:
                    if time.monotonic() - self._broken_at < BOOT_RETRY_AFTER_S:
                        job.done = True
                        self._pending.append((sink, self._broken_outcome(call)))
                        self._wake()
                        return
                    # The pool gave up respawning a while ago; try again now work arrived.
                    self._broken_reason = None
                    self._boot_failures = 0
                    for _ in range(self.max_workers):
                        self._spawn_locked()
                    self._rebuild_waitables_locked()
                    self._wake()
                if not self._idle:
                    self._backlog.append(job)
                    return
                worker = self._idle.pop()
                fn_msg, wake = self._assign_locked(worker, job)
        if worker is None:  # submitted while shutting down
            sink(self._stopped_outcome(job, "shutdown"))
            return
        self._send(worker, job, fn_msg)
        if wake:
            self._wake()

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        """Cancel queued or running calls of that task instance (no-op if none)."""
        found = False
        with self._lock:
            if self._stopping:
                return  # shutdown() cancels everything anyway
            for queued in [
                j
                for j in self._backlog
                if (j.call.run_id, j.call.task_id, j.call.map_index) == (run_id, task_id, map_index)
            ]:
                self._backlog.remove(queued)
                queued.done = True
                self._pending.append((queued.sink, self._stopped_outcome(queued, "cancelled")))
                found = True
            for w in self._workers:
                job = w.job
                if (
                    job is not None
                    and not job.done
                    and job.stop_reason is None
                    and (job.call.run_id, job.call.task_id, job.call.map_index)
                    == (run_id, task_id, map_index)
                ):
                    self._stop_locked(job, "cancelled")
                    found = True
            if found:
                self._wake()

    # -- diagnostics ---------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers if not w.dead]

    # -- pickling ------------------------------------------------------------------------

    def _pickled_fn(self, call: TaskCall) -> tuple[str, bytes]:
        """The function as bytes, pickled once per function object (not per call)."""
        fn = call.fn
        entry = self._fn_cache.get(call.fn_key)
        if entry is not None and entry[0] is fn:
            return entry[1], entry[2]
        import cloudpickle  # type: ignore[import-untyped,unused-ignore]

        try:
            blob: bytes = cloudpickle.dumps(fn, protocol=_PROTOCOL)
        except Exception as exc:  # becomes a serialization outcome
            name = getattr(fn, "__qualname__", repr(fn))
            raise _Unpicklable(
                _error_info(
                    exc,
                    "serialization",
                    f"task '{call.label}' of pipeline '{call.pipeline}': its function {name} "
                    f"cannot be pickled to send it to a worker process: {type(exc).__name__}: "
                    f"{exc}. Fix: define the function at module level, or make the variables "
                    "its closure captures picklable (no locks, open files, connections or "
                    "generators); or run it with executor='threads'",
                )
            ) from exc
        with self._lock:
            if entry is not None and entry[2] == blob:
                wire_key = entry[1]  # same function, another object (e.g. re-decorated)
            else:
                version = self._fn_versions.get(call.fn_key, 0) + 1
                self._fn_versions[call.fn_key] = version
                wire_key = f"{call.fn_key}#{version}"
            self._fn_cache[call.fn_key] = (fn, wire_key, blob)
            self._fn_cache.move_to_end(call.fn_key)
            if len(self._fn_cache) > FN_CACHE_DRIVER:
                self._fn_cache.popitem(last=False)
        return wire_key, blob

    def _pickled_call(self, call: TaskCall, wire_key: str) -> bytes:
        msg = ("C", wire_key, _call_values(call))
        try:
            data: bytes | None = pickle.dumps(msg, protocol=_PROTOCOL)
        except Exception:  # noqa: BLE001 - e.g. a lambda in the inputs: cloudpickle below
            data = None
        # An instance of a class of the driver's script pickles by reference, as
        # `__main__.Cls`, which the worker cannot resolve (workers do not import the script):
        # cloudpickle sends it by value. Scanning the payload costs ~0.1 us.
        if data is not None and b"__main__" not in data:
            return data
        import cloudpickle  # type: ignore[import-untyped,unused-ignore]

        try:
            blob: bytes = cloudpickle.dumps(msg, protocol=_PROTOCOL)
        except Exception as exc:  # becomes a serialization outcome
            raise _Unpicklable(
                _error_info(
                    exc,
                    "serialization",
                    f"task '{call.label}' of pipeline '{call.pipeline}': its inputs cannot "
                    f"be pickled to send them to a worker process: {type(exc).__name__}: "
                    f"{exc}. Fix: pass data between tasks as return values (they go through "
                    "the artifact store), or make the parameter values picklable",
                )
            ) from exc
        return blob

    # -- dispatch ------------------------------------------------------------------------

    def _assign_locked(self, worker: _Worker, job: _Job) -> tuple[bytes | None, bool]:
        """Give `job` to idle `worker`. Returns (function message to send first, wake?)."""
        worker.job = job
        job.worker = worker
        job.started_at = clock.now()
        wake = False
        timeout_s = job.call.timeout_s
        if timeout_s is not None and timeout_s > 0:
            job.deadline = time.monotonic() + timeout_s
            self._push_timer_locked(job.deadline, "deadline", job)
            wake = job.deadline < self._wait_until
        fn_msg = None
        keys = worker.fn_keys
        if job.wire_key in keys:
            keys.move_to_end(job.wire_key)
        else:
            evict = None
            if len(keys) >= FN_CACHE_PER_WORKER:
                evict, _ = keys.popitem(last=False)
            keys[job.wire_key] = None
            # Functions shipped by reference are imported on arrival: from the driver's
            # sys.path as it is now (a server may have added a pipelines folder since).
            new_path = None
            if sys.path != worker.sys_path:
                worker.sys_path = list(sys.path)
                new_path = worker.sys_path
            fn_msg = pickle.dumps(
                ("F", job.wire_key, job.fn_blob, evict, new_path), protocol=_PROTOCOL
            )
            self.fn_sends += 1
        return fn_msg, wake

    def _send(self, worker: _Worker, job: _Job, fn_msg: bytes | None) -> None:
        try:
            if fn_msg is not None:
                worker.conn.send_bytes(fn_msg)
            worker.conn.send_bytes(job.payload)
        except OSError as exc:
            # The worker died before the call reached it: when its sentinel fires, the call
            # goes back to the front of the backlog instead of failing as worker_lost.
            log.debug("could not send %s to worker %d: %s", job.call.label, worker.pid, exc)
            with self._lock:
                job.unsent = True

    def _spawn_locked(self) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        sys_path = list(sys.path)
        boot = (sys_path, os.getcwd(), dict(os.environ), EXECUTE_TARGET, _main_identity())
        process = self._ctx.Process(
            target=_worker_main,
            args=(theirs, boot),
            name=f"cadenza-worker-{self.workers_started + 1}",
            daemon=False,  # daemonic processes may not start children; tasks may need to
        )
        spawned_at = time.perf_counter()
        _spawning.worker = True
        try:
            process.start()
        finally:
            _spawning.worker = False
        theirs.close()
        worker = _Worker(process, ours, spawned_at, sys_path)
        self.workers_started += 1
        self._workers.append(worker)
        self._idle.append(worker)
        return worker

    def _rebuild_waitables_locked(self) -> None:
        self._selector_dirty = True

    def _sync_selector_locked(self) -> None:
        """Collector thread: make the selector watch exactly the live workers' fds."""
        assert self._selector is not None
        want: dict[int, tuple[_Worker, bool]] = {}
        for w in self._workers:
            if not w.dead:
                if not w.eof:
                    want[w.conn.fileno()] = (w, True)
                want[w.sentinel] = (w, False)
        for fd, owner in list(self._registered.items()):
            if want.get(fd) != owner:
                self._selector.unregister(fd)
                del self._registered[fd]
        for fd, owner in want.items():
            if fd not in self._registered:
                self._selector.register(fd, selectors.EVENT_READ, owner)
                self._registered[fd] = owner
        self._selector_dirty = False

    def _forget_locked(self, worker: _Worker) -> None:
        """Collector thread: stop watching a worker's fds before they are closed."""
        assert self._selector is not None
        for fd, (w, _) in list(self._registered.items()):
            if w is worker:
                self._selector.unregister(fd)
                del self._registered[fd]

    def _push_timer_locked(self, when: float, what: str, job: _Job) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, what, job))

    def _stop_locked(self, job: _Job, reason: str) -> None:
        """Kill the worker running `job`; its sentinel then reports `reason`."""
        job.stop_reason = reason
        assert job.worker is not None
        _signal(job.worker, signal.SIGTERM)
        self._push_timer_locked(time.monotonic() + KILL_GRACE_S, "kill", job)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or shut down

    # -- the collector thread ------------------------------------------------------------

    def _collect(self) -> None:
        with self._lock:
            selector = self._selector = selectors.DefaultSelector()
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            self._sync_selector_locked()
        wake_r = self._wake_r
        while True:
            with self._lock:
                if self._stopping:
                    return
                if self._selector_dirty:
                    self._sync_selector_locked()
                timeout = self._next_timeout_locked()
            events = selector.select(timeout)
            deliveries: list[tuple[Sink, TaskOutcome]] = []
            dead: list[_Worker] = []
            for key, _ in events:
                if key.data is None:  # the wake pipe
                    try:
                        while os.read(wake_r, 4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    continue
                worker, is_pipe = key.data
                if worker.dead:
                    continue
                if is_pipe:
                    deliveries.extend(self._read_one(worker))
                else:
                    dead.append(worker)
            for worker in dead:
                deliveries.extend(self._drain(worker))
                deliveries.extend(self._on_worker_exit(worker))
            with self._lock:
                if self._stopping:
                    # shutdown() takes over; it delivers what the collector already read.
                    self._pending[:0] = deliveries
                    return
                self._fire_timers_locked()
                deliveries.extend(self._pending)
                self._pending.clear()
            self._deliver(deliveries)

    def _next_timeout_locked(self) -> float | None:
        timers = self._timers
        while timers and (
            timers[0][3].done
            or (timers[0][2] == "deadline" and timers[0][3].stop_reason is not None)
        ):
            heapq.heappop(timers)
        if not timers:
            self._wait_until = float("inf")
            return None
        self._wait_until = timers[0][0]
        return max(0.0, self._wait_until - time.monotonic())

    def _fire_timers_locked(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, what, job = heapq.heappop(timers)
            if job.done or job.worker is None or job.worker.dead:
                continue
            if what == "deadline" and when != job.deadline:
                continue  # from before the call was requeued
            if what == "deadline":
                if job.stop_reason is None:
                    log.debug(
                        "%s timed out after %s s; killing worker %d",
                        job.call.label,
                        job.call.timeout_s,
                        job.worker.pid,
                    )
                    self._stop_locked(job, "timeout")
            else:  # "kill": SIGTERM was not enough
                log.warning(
                    "worker %d ignored SIGTERM for %s s; sending SIGKILL",
                    job.worker.pid,
                    KILL_GRACE_S,
                )
                _signal(job.worker, signal.SIGKILL)

    def _read_one(self, worker: _Worker) -> list[tuple[Sink, TaskOutcome]]:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            # Dying: stop watching the pipe (it would stay readable) until the sentinel fires.
            with self._lock:
                worker.eof = True
                self._sync_selector_locked()
            return []
        return self._on_message(worker, data)

    def _drain(self, worker: _Worker) -> list[tuple[Sink, TaskOutcome]]:
        """Read whatever a worker sent before it exited or stopped."""
        out: list[tuple[Sink, TaskOutcome]] = []
        try:
            while worker.conn.poll(0):
                out.extend(self._on_message(worker, worker.conn.recv_bytes()))
        except (EOFError, OSError):
            pass
        return out

    def _on_message(self, worker: _Worker, data: bytes) -> list[tuple[Sink, TaskOutcome]]:
        try:
            msg = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - becomes the call's outcome
            msg = (
                "fail",
                _error_info(
                    exc,
                    "serialization",
                    f"the outcome could not be unpickled in the driver: {exc} (a Cadenza bug)",
                ),
                False,
            )
        if type(msg) is str:  # _READY
            worker.ready = True
            self.start_latencies_s.append(time.perf_counter() - worker.spawned_at)
            with self._lock:
                self._boot_failures = 0
            return []
        decoded = _decode_outcome(msg[1]) if msg[0] == "ok" else None  # outside the lock
        next_job: _Job | None = None
        fn_msg = None
        with self._lock:
            job = worker.job
            if job is None or job.done:
                return []
            if job.stop_reason is not None:
                # We are killing this worker; the kill's reason is the outcome.
                return []
            job.done = True
            worker.job = None
            if decoded is not None:
                outcome = decoded
            else:
                _, error, drop_fn = msg
                if drop_fn:
                    worker.fn_keys.pop(job.wire_key, None)
                outcome = self._outcome(job.call, error, started_at=job.started_at)
            if not self._stopping:
                if self._backlog:
                    next_job = self._backlog.popleft()
                    # A new deadline needs no wake: this is the collector thread, which
                    # recomputes its timeout before it waits again.
                    fn_msg, _wake = self._assign_locked(worker, next_job)
                else:
                    self._idle.append(worker)
        if next_job is not None:
            self._send(worker, next_job, fn_msg)
        return [(job.sink, outcome)]

    def _on_worker_exit(self, worker: _Worker) -> list[tuple[Sink, TaskOutcome]]:
        """Case 2/3/4: a worker's sentinel fired. Report its call, replace it."""
        with self._lock:
            self._forget_locked(worker)
        exitcode = self._reap(worker)
        out: list[tuple[Sink, TaskOutcome]] = []
        sends: list[tuple[_Worker, _Job, bytes | None]] = []
        with self._lock:
            worker.dead = True
            if worker in self._idle:
                self._idle.remove(worker)
            self._workers.remove(worker)
            job = worker.job
            worker.job = None
            boot_failure = not worker.ready
            requeue = job is not None and not job.done and job.unsent and job.stop_reason is None
            if requeue and not self._stopping:
                assert job is not None
                job.worker = None
                job.unsent = False
                job.deadline = None
                self._backlog.appendleft(job)
            elif job is not None and not job.done:
                job.done = True
                if job.stop_reason is not None:
                    out.append((job.sink, self._stopped_outcome(job, job.stop_reason)))
                else:
                    out.append(
                        (job.sink, self._lost_outcome(job, worker, exitcode, boot=boot_failure))
                    )
            elif job is None and not self._stopping:
                what, _ = _describe_exit(exitcode)
                log.warning("idle worker process %d %s; replacing it", worker.pid, what)
            if self._stopping:
                return out
            if boot_failure and (job is None or job.stop_reason is None):
                self._boot_failures += 1
            if self._boot_failures >= MAX_BOOT_FAILURES:
                what, _ = _describe_exit(exitcode)
                self._broken_reason = (
                    f"{self._boot_failures} worker processes in a row {what} while starting"
                )
                self._broken_at = time.monotonic()
                log.error(
                    "processes executor: %s; not starting more for %g s",
                    self._broken_reason,
                    BOOT_RETRY_AFTER_S,
                )
                if not self._workers:
                    while self._backlog:
                        queued = self._backlog.popleft()
                        queued.done = True
                        out.append(
                            (queued.sink, self._lost_outcome(queued, worker, exitcode, boot=True))
                        )
            else:
                replacement = self._spawn_locked()
                if self._backlog:
                    self._idle.remove(replacement)
                    queued = self._backlog.popleft()
                    fn_msg, _wake = self._assign_locked(replacement, queued)
                    sends.append((replacement, queued, fn_msg))
            self._rebuild_waitables_locked()
        for w, queued, fn_msg in sends:
            self._send(w, queued, fn_msg)
        return out

    def _reap(self, worker: _Worker) -> int | None:
        """Collect a dead worker's exit code and free its resources."""
        # The worker is gone; make sure nothing its task started outlives it.
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process = worker.process
        process.join(timeout=1.0)
        exitcode: int | None = process.exitcode
        try:
            worker.conn.close()
        except OSError:
            pass
        if exitcode is not None:
            process.close()
        return exitcode

    # -- outcomes ------------------------------------------------------------------------

    def _outcome(self, call: TaskCall, error: ErrorInfo, *, started_at: Any) -> TaskOutcome:
        return TaskOutcome(
            run_id=call.run_id,
            task_id=call.task_id,
            map_index=call.map_index,
            attempt=call.attempt,
            ok=False,
            error=error,
            started_at=started_at,
            ended_at=clock.now(),
        )

    def _stopped_outcome(self, job: _Job, reason: str) -> TaskOutcome:
        call = job.call
        where = f" (worker pid {job.worker.pid})" if job.worker is not None else ""
        exc: BaseException
        if reason == "timeout":
            exc = TaskTimeout(f"timed out after {call.timeout_s:g} s")
            error = describe_exception(exc, kind="timeout")
        else:
            text = (
                "cancelled while running" + where
                if job.worker is not None
                else "cancelled before it started"
            )
            if reason == "shutdown":
                text += ": the processes executor shut down"
            error = describe_exception(TaskCancelled(text), kind="cancelled")
        outcome = self._outcome(call, error, started_at=job.started_at)
        if job.worker is None:
            return outcome
        return _with_worker(outcome, job.worker)

    def _lost_outcome(
        self, job: _Job, worker: _Worker, exitcode: int | None, *, boot: bool
    ) -> TaskOutcome:
        call = job.call
        what, fix = _describe_exit(exitcode)
        if boot:
            message = (
                f"worker process {worker.pid} {what} while starting, before it could run the "
                "task; its error is on the driver's stderr"
            )
            fix = _BOOT_HINT
        else:
            message = f"worker process {worker.pid} {what} while running the task"
        exc = WorkerLost(message, pipeline=call.pipeline, task=call.label, hint=fix)
        outcome = self._outcome(
            call,
            describe_exception(exc, kind="worker_lost"),
            started_at=job.started_at if job.worker is not None else None,
        )
        return _with_worker(outcome, worker) if job.worker is not None else outcome

    def _broken_outcome(self, call: TaskCall) -> TaskOutcome:
        exc = WorkerLost(
            f"no worker process to run the task: {self._broken_reason}; the executor tries "
            f"again {BOOT_RETRY_AFTER_S:g} s after giving up (their error is on stderr)",
            pipeline=call.pipeline,
            task=call.label,
            hint=_BOOT_HINT,
        )
        return self._outcome(call, describe_exception(exc, kind="worker_lost"), started_at=None)

    # -- delivery ------------------------------------------------------------------------

    def _deliver_later(self, sink: Sink, outcome: TaskOutcome) -> None:
        """Hand an outcome to the collector thread (inline while shutting down)."""
        with self._lock:
            if not self._stopping:
                self._pending.append((sink, outcome))
                self._wake()
                return
        sink(outcome)

    def _deliver(self, deliveries: list[tuple[Sink, TaskOutcome]]) -> None:
        for sink, outcome in deliveries:
            try:
                sink(outcome)
            except Exception:  # a broken sink must not stop the collector
                log.exception("the sink for task %s raised; outcome dropped", outcome.task_id)


_BOOT_HINT = (
    "check that `python -c 'import cadenza.executors.worker'` works in this environment, "
    "and read the worker's error on the driver's stderr"
)


def _with_worker(outcome: TaskOutcome, worker: _Worker) -> TaskOutcome:
    return replace(outcome, worker=f"pid:{worker.pid}@{_HOSTNAME}")


class _Unpicklable(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error
