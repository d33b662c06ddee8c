"""Inside the worker: run one TaskCall and turn whatever happens into a TaskOutcome.

This is the single boundary around user code. Every executor ends up here (in its own thread
or process): inputs are loaded from their refs, the context and environment are set, output is
captured per attempt, the function is called, and its return value is stored (inline JSON or an
artifact) before the outcome goes back. Nothing the user's code raises escapes `execute`.

In-process executors ask `execute` to enforce the timeout itself: on the main thread with
SIGALRM (which also interrupts `time.sleep` and blocking I/O), elsewhere with an asynchronous
exception delivered at the next bytecode. The processes executor kills the worker instead.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import heapq
import io
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cadenza.artifacts.store import load_value, store_value
from cadenza.core.context import TaskContext, reset_context, set_context
from cadenza.core.errors import (
    SENSOR_NOT_READY,
    ExternalError,
    TaskCancelled,
    TaskInterrupt,
    TaskTimeout,
)
from cadenza.core.results import ErrorInfo, ErrorKind, ValueRef
from cadenza.core.task_secrets import Masker, Secrets
from cadenza.executors.base import TaskCall, TaskOutcome, describe_exception
from cadenza.executors.environ import overriding

log = logging.getLogger(__name__)

_HOSTNAME = os.uname().nodename


_worker_name = ""


def default_worker_name() -> str:
    """'pid:<pid>@<host>'; kept, since getpid is a system call per attempt (~1-6 us), and
    forgotten in a forked child."""
    global _worker_name
    if not _worker_name:
        _worker_name = f"pid:{os.getpid()}@{_HOSTNAME}"
    return _worker_name


def _forget_worker_name() -> None:
    global _worker_name
    _worker_name = ""


os.register_at_fork(after_in_child=_forget_worker_name)


# --- output capture --------------------------------------------------------------------------

_capture = threading.local()


class _RoutingStream(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes go to the running task's buffer when this
    thread runs one, else to the original stream. Installed once per process."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def write(self, text: str) -> int:
        buf = getattr(_capture, "buffer", None)
        if buf is not None:
            if isinstance(text, (bytes, bytearray)):  # click.echo(b"...") finds no .buffer
                text = bytes(text).decode("utf-8", "replace")
            return int(buf.write(text))
        return int(self._original.write(text))

    def flush(self) -> None:
        if getattr(_capture, "buffer", None) is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")

    def fileno(self) -> int:
        return int(self._original.fileno())


class _CaptureHandler(logging.Handler):
    """Sends records of the task loggers to the running task's buffer."""

    def emit(self, record: logging.LogRecord) -> None:
        buf = getattr(_capture, "buffer", None)
        if buf is None:
            return
        try:
            buf.write(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must never break the task
            self.handleError(record)


_installed = False
_install_lock = threading.Lock()
TASK_LOGGER = "cadenza.task"


def _install_capture() -> None:
    global _installed
    if _installed and type(sys.stdout) is _RoutingStream and type(sys.stderr) is _RoutingStream:
        return
    with _install_lock:
        # Someone (a test runner, a notebook) may have swapped the streams since: wrap again.
        if type(sys.stdout) is not _RoutingStream:
            sys.stdout = _RoutingStream(sys.stdout)
        if type(sys.stderr) is not _RoutingStream:
            sys.stderr = _RoutingStream(sys.stderr)
        if _installed:
            return
        handler = _CaptureHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        task_logger = logging.getLogger(TASK_LOGGER)
        task_logger.addHandler(handler)
        task_logger.setLevel(logging.DEBUG)
        task_logger.propagate = False
        _installed = True


# --- timeouts and cancellation for in-process execution ----------------------------------------


def _async_raise(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class _Watchdog:
    """One thread for every in-process deadline: heap of (deadline, token, action). At its
    deadline an entry raises TaskTimeout in a thread (`arm`) or calls a function (`call_at`,
    on this thread: keep it short)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int | Callable[[], None]]] = []
        self._live: set[int] = set()
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, thread_id: int) -> int:
        return self._push(seconds, thread_id)

    def call_at(self, seconds: float, action: Callable[[], None]) -> int:
        """Call `action()` in `seconds` unless disarmed first; returns the token."""
        return self._push(seconds, action)

    def _push(self, seconds: float, action: int | Callable[[], None]) -> int:
        with self._cond:
            self._next += 1
            token = self._next
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, action))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="cadenza-timeouts", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, action = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
                if isinstance(action, int):
                    _async_raise(action, TaskTimeout)
                    continue
                self._cond.release()  # the action may arm or disarm deadlines
                try:
                    action()
                except Exception:  # a broken action must not stop every other deadline
                    log.exception("a deadline action failed")
                finally:
                    self._cond.acquire()


_watchdog = _Watchdog()


def call_later(seconds: float, action: Callable[[], None]) -> int:
    """Call `action()` on the in-process deadline thread in `seconds`; returns a token for
    `cancel_call`. One thread serves every deadline of the process."""
    return _watchdog.call_at(seconds, action)


def cancel_call(token: int) -> None:
    _watchdog.disarm(token)


# A timeout that lands this much after its deadline was held up by a blocking call.
LATE_TIMEOUT_S = 0.5

_running_threads: dict[tuple[str, str, int], int] = {}


def interrupt(run_id: str, task_id: str, map_index: int) -> bool:
    """Cancel a call running in this process (in-process executors). True if one was found."""
    thread_id = _running_threads.get((run_id, task_id, map_index))
    if thread_id is None:
        return False
    # Delivered at the thread's next bytecode: a blocking C call finishes first.
    _async_raise(thread_id, TaskCancelled)
    return True


def _raise_timeout(signum: int, frame: Any) -> None:
    raise TaskTimeout()


@contextmanager
def _deadline(timeout_s: float | None) -> Iterator[None]:
    if not timeout_s or timeout_s <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        return
    ident = threading.get_ident()
    token = _watchdog.arm(timeout_s, ident)
    try:
        yield
    finally:
        _watchdog.disarm(token)


@contextmanager
def _tracking(call: TaskCall, ctx: TaskContext) -> Iterator[None]:
    """Run inside the tracker's task scope (a nested MLflow run, say). A tracker that breaks
    is reported in the task log and, unless it asks to fail, does not fail the task."""
    tracker = call.tracker
    if tracker is None:
        yield
        return
    try:
        scope = tracker.task_scope(ctx, dict(call.tracking_info))
        sink = scope.__enter__()
    except Exception as exc:  # tracking must not break the task
        if getattr(tracker, "fail_on_error", False):
            raise
        print(f"[cadenza] tracking unavailable for this task: {exc}", file=sys.stderr)
        yield
        return
    if sink is not None:
        ctx.sinks.append(sink)
    try:
        yield
    except BaseException as exc:
        scope.__exit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        try:
            scope.__exit__(None, None, None)
        except Exception as exc:  # the task itself succeeded
            if getattr(tracker, "fail_on_error", False):
                raise
            print(f"[cadenza] tracking could not close the task's run: {exc}", file=sys.stderr)


# --- inputs -----------------------------------------------------------------------------------


def _resolve(value: Any, root: str) -> Any:
    t = type(value)
    if t is ValueRef:
        loaded = load_value(value, root=root)
        # Inline JSON values may be shared by several consumers in one process: copy containers.
        if value.kind == "json" and type(loaded) in (list, dict):
            return copy.deepcopy(loaded)
        return loaded
    if t is list:
        return [_resolve(v, root) for v in value]
    if t is tuple:
        return tuple(_resolve(v, root) for v in value)
    if t is dict:
        return {k: _resolve(v, root) for k, v in value.items()}
    return value


def _build_args(call: TaskCall, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, kind in call.call_kinds.items():
        if name not in values:
            continue
        v = values[name]
        if kind == "POSITIONAL_ONLY":
            args.append(v)
        elif kind == "VAR_POSITIONAL":
            args.extend(v)
        elif kind == "VAR_KEYWORD":
            kwargs.update(v)
        else:
            kwargs[name] = v
    return args, kwargs


# --- the boundary ------------------------------------------------------------------------------


def _trimmed_traceback(exc: BaseException) -> str:
    """The user's frames only, unless CADENZA_VERBOSE is set."""
    tb = exc.__traceback__
    if not os.environ.get("CADENZA_VERBOSE"):
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class _AttemptLog:
    """The attempt's log file, created on the first write and flushed at every write so
    that `cadenza logs --follow` sees output while the task runs. (A plain class: building
    an io.TextIOBase cost ~2 us of every attempt, and only write/close are used.)"""

    __slots__ = ("_failed", "_fh", "_masker", "path")

    def __init__(self, path: str | None, masker: Masker | None = None) -> None:
        self.path = path
        self._fh: Any = None
        self._failed = False
        self._masker = masker  # set when the run has secrets: their values become ***

    def write(self, text: str) -> int:
        if not text:
            return 0
        if self._masker is not None:
            text = self._masker.mask(text)
        if self._fh is None:
            if self._failed or not self.path:
                return len(text)
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                self._failed = True
                log.warning("could not write task log %s: %s", self.path, exc)
                return len(text)
        self._fh.write(text)
        self._fh.flush()
        return len(text)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    @property
    def written(self) -> str | None:
        return self.path if self._fh is not None else None


def _timeout_message(timeout_s: float | None, called_at: float) -> str:
    """What a timeout raised in this process did, truthfully: an in-process deadline stops
    Python code at once but waits for a blocking call (sleep, I/O, C code) to return."""
    text = f"timed out after {timeout_s or 0:g} s"
    ran = time.monotonic() - called_at
    if timeout_s and ran > timeout_s + max(LATE_TIMEOUT_S, 0.1 * timeout_s):
        text += (
            f", but could be stopped only after {ran:.1f} s, when a blocking call (sleep, I/O, "
            "C code) returned: a task running in the driver's process cannot be stopped "
            "earlier. Fix: executor='processes' kills a task at its deadline"
        )
    return text


def execute(
    call: TaskCall,
    *,
    enforce_timeout: bool = True,
    worker: str = "",
    keep_value: bool = False,
) -> TaskOutcome:
    """Run one attempt. Never raises for anything the task does.

    Outcomes, by case:
      1. returns normally -> output stored -> ok=True (value kept if `keep_value`).
      2. the return value cannot be stored -> ok=False, kind="serialization".
      3. raises an Exception -> ok=False, kind="exception", user's traceback kept.
      4. interrupted by timeout -> kind="timeout"; by cancel -> kind="cancelled".
      5. inputs cannot be loaded (artifact missing or corrupted) -> kind="input".
    """
    _install_capture()
    called_at = time.monotonic()  # reset just before the call when a deadline is enforced
    worker = worker or default_worker_name()
    started = datetime.now(UTC)
    secrets: Secrets | None = call.context.get("secrets")
    masker = secrets.masker() if secrets is not None else None
    buffer = _AttemptLog(call.log_path, masker or None)
    ctx = TaskContext(
        run_id=call.run_id,
        pipeline=call.pipeline,
        task_id=call.task_id,
        map_index=call.map_index,
        attempt=call.attempt,
        logical_date=call.context.get("logical_date"),
        data_interval=call.context.get("data_interval"),
        params=dict(call.context.get("params") or {}),
        logger=logging.getLogger(f"{TASK_LOGGER}.{call.task_id}"),
        extra=dict(call.context.get("extra") or {}),
        _secrets=secrets,
        timeout_s=call.timeout_s,
    )
    token = set_context(ctx)
    key = (call.run_id, call.task_id, call.map_index)
    _running_threads[key] = threading.get_ident()
    _capture.buffer = buffer
    output: ValueRef | None = None
    error: ErrorInfo | None = None
    value: Any = None
    try:
        try:
            values = {k: _resolve(v, call.artifact_root) for k, v in call.inputs.items()}
        except Exception as exc:  # noqa: BLE001 - becomes the outcome
            error = describe_exception(exc, kind=ErrorKind.INPUT, tb=_trimmed_traceback(exc))
        else:
            args, kwargs = _build_args(call, values)
            try:
                if not call.env and call.tracker is None and not (
                        enforce_timeout and call.timeout_s and call.timeout_s > 0):
                    # Nothing to set up around the call: skip three context managers, ~3 us
                    # each (a chained inline step's whole overhead is ~250 us).
                    value = call.fn(*args, **kwargs)
                else:
                    with overriding(call.env), _tracking(call, ctx):
                        if enforce_timeout:
                            called_at = time.monotonic()
                            with _deadline(call.timeout_s):
                                value = call.fn(*args, **kwargs)
                        else:
                            value = call.fn(*args, **kwargs)
            except TaskTimeout as exc:
                error = describe_exception(exc, kind=ErrorKind.TIMEOUT)
                error = ErrorInfo(
                    kind=ErrorKind.TIMEOUT,
                    type=error.type,
                    message=_timeout_message(call.timeout_s, called_at),
                    traceback=_trimmed_traceback(exc),
                    type_mro=error.type_mro,
                )
            except TaskCancelled as exc:
                error = describe_exception(exc, kind=ErrorKind.CANCELLED)
                error = ErrorInfo(
                    kind=ErrorKind.CANCELLED, type=error.type, message="cancelled",
                    type_mro=error.type_mro,
                )
            except ExternalError as exc:  # a shell/SQL/HTTP task: its message says it all
                error = describe_exception(
                    exc, tb=_trimmed_traceback(exc) if os.environ.get("CADENZA_VERBOSE") else "")
                buffer.write(f"[cadenza] {datetime.now(UTC):%H:%M:%S} {exc}\n")
            except Exception as exc:  # noqa: BLE001 - the user boundary
                error = describe_exception(exc, tb=_trimmed_traceback(exc))
            else:
                try:
                    output = store_value(
                        value, root=call.artifact_root, inline_limit_bytes=call.inline_limit_bytes
                    )
                except TaskInterrupt:
                    raise
                except OSError as exc:  # disk full, read-only or missing artifact root
                    error = ErrorInfo(
                        kind=ErrorKind.ARTIFACT_WRITE,
                        type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                        message=(
                            f"the output of task '{call.label}' could not be written to the "
                            f"artifact store at {call.artifact_root}: {exc}. Fix: free disk "
                            "space or make that folder writable (CADENZA_ARTIFACT_ROOT), then "
                            f"`cadenza resume {call.run_id}`"
                        ),
                        traceback=_trimmed_traceback(exc),
                    )
                except Exception as exc:  # noqa: BLE001 - becomes the outcome
                    tname = f"{type(value).__module__}.{type(value).__qualname__}"
                    error = ErrorInfo(
                        kind=ErrorKind.SERIALIZATION,
                        type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                        message=(
                            f"the return value of task '{call.label}' (type {tname}) could not be "
                            f"stored: {exc}. Fix: return a picklable value, or teach Cadenza the "
                            "type with cadenza.register_serializer(...)"
                        ),
                        traceback=_trimmed_traceback(exc),
                    )
    except TaskInterrupt as exc:
        # An interrupt that landed outside the user's call (while loading or storing).
        kind = ErrorKind.TIMEOUT if isinstance(exc, TaskTimeout) else ErrorKind.CANCELLED
        error = describe_exception(exc, kind=kind)
    finally:
        _capture.buffer = None
        if _running_threads.get(key) == threading.get_ident():
            # (an attempt abandoned at its timeout may end after its retry started)
            del _running_threads[key]
        reset_context(token)
    if error is not None and masker:  # what is stored and shown never holds a secret
        error = dataclasses.replace(error, message=masker.mask(error.message),
                                    traceback=masker.mask(error.traceback))
    if (error is not None and error.traceback
            and error.kind in (ErrorKind.EXCEPTION, ErrorKind.INPUT)):
        if error.type == SENSOR_NOT_READY:  # a sensor's "not yet": one line, no traceback
            buffer.write(f"[cadenza] {datetime.now(UTC):%H:%M:%S} {error.message}\n")
        else:
            buffer.write(error.traceback)
    buffer.close()
    log_path = buffer.written
    ok = error is None
    return TaskOutcome(
        run_id=call.run_id,
        task_id=call.task_id,
        map_index=call.map_index,
        attempt=call.attempt,
        ok=ok,
        output=output,
        error=error,
        started_at=started,
        ended_at=datetime.now(UTC),
        worker=worker,
        log_path=log_path,
        metrics=ctx.metrics,
        value=value if (ok and keep_value) else None,
        has_value=ok and keep_value,
    )
