"""The threads executor: a persistent pool of threads in the driver's process.

Good for I/O-bound tasks and for tasks that release the GIL (NumPy, pandas, scikit-learn).
What does not belong here: running a call (`executors/worker.py`), retries (the engine).

Timeouts, honestly. A thread cannot be killed: Python can only raise an exception in it at
its next bytecode, which a blocking call (time.sleep, socket I/O, a long C function) delays
until the call returns. So a call with `timeout_s` ends in one of two ways:
  1. at its deadline the worker raises TaskTimeout in the thread (`worker.execute`); Python
     code stops there and the attempt reports `timeout` as usual;
  2. if the call has not returned ABANDON_GRACE_S later (it is in a blocking call), the
     attempt is reported `timeout` anyway, saying it was abandoned: its thread leaves the
     pool (a new one replaces it), runs on until the call returns, and its result is dropped.
The engine therefore sees every attempt end by its deadline, as on `processes`; what keeps
running in the background is said in the attempt's error and in the warning the engine
prints at run start (`timeout_note`). `processes` kills the task instead.

Hand-off. Each pool thread has a slot (`_Slot`): `submit` puts the call in an idle thread's
slot and wakes it with a byte on the slot's pipe. `os.write` releases the GIL before the
write wakes the thread, so the woken thread finds the GIL free and runs at once; a queue's
put wakes it while the submitter still holds the GIL, and the woken thread (on a loaded
2-core machine, usually preempting the submitter on its own core) sleeps again on the GIL
until the submitter blocks: two context switches per hand-off instead of one. Idle threads
are a stack, so the thread that just finished (warm caches) takes the next call; a thread
that finishes while calls wait in the backlog takes the next one without sleeping.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import traceback
from collections import deque
from datetime import UTC, datetime

from cadenza.core.errors import TaskInterrupt, TaskTimeout
from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.executors import worker
from cadenza.executors.base import Sink, TaskCall, TaskOutcome, describe_exception

log = logging.getLogger(__name__)

# How long after its deadline a call stuck in a blocking call is abandoned. Python code
# interrupted at the deadline returns well within it, and is reported as stopped.
ABANDON_GRACE_S = 0.25

TIMEOUT_NOTE = (
    "at the deadline the attempt fails as timed out and is abandoned; its thread runs on "
    "until the blocking call (sleep, I/O, C code) returns, and its result is dropped"
)


class _Running:
    """A call on a pool thread. `ended` turns true once: when the call returns, or when it is
    abandoned at its deadline; whoever turns it reports the outcome."""

    __slots__ = ("call", "ended", "sink", "started_at", "thread", "thread_name")

    def __init__(self, call: TaskCall, sink: Sink, thread_name: str) -> None:
        self.thread = threading.current_thread()
        self.call = call
        self.sink = sink
        self.thread_name = thread_name
        self.started_at = datetime.now(UTC)
        self.ended = False


def escaped_outcome(call: TaskCall, exc: BaseException, *, worker: str | None,
                    started_at: datetime) -> TaskOutcome:
    """The failed outcome of a call whose exception got past `worker.execute`'s boundary:
    `sys.exit()` or an explicit KeyboardInterrupt in the task (BaseExceptions the boundary
    leaves alone), a cancel or deadline interrupt that landed just outside it, or a Cadenza
    bug. The attempt fails with it instead of taking the pool thread down with its outcome
    (the driver would wait for that outcome forever)."""
    if isinstance(exc, TaskInterrupt):
        kind = ErrorKind.TIMEOUT if isinstance(exc, TaskTimeout) else ErrorKind.CANCELLED
        error = describe_exception(exc, kind=kind)
    else:
        base = describe_exception(exc, tb="".join(traceback.format_exception(exc)))
        error = ErrorInfo(
            kind=ErrorKind.EXCEPTION, type=base.type, type_mro=base.type_mro,
            traceback=base.traceback,
            message=(f"task '{call.label}' ended its call with {type(exc).__name__}"
                     f"{': ' + base.message if base.message else ''}; the attempt failed. "
                     "Fix: raise an Exception (not SystemExit or KeyboardInterrupt) to fail "
                     "a task"),
        )
    return TaskOutcome(
        run_id=call.run_id, task_id=call.task_id, map_index=call.map_index,
        attempt=call.attempt, ok=False, error=error, started_at=started_at,
        ended_at=datetime.now(UTC), worker=worker,
    )


def _deliver(sink: Sink, outcome: TaskOutcome) -> None:
    try:
        sink(outcome)
    except Exception:  # a broken sink must not take the pool thread down
        log.exception("the sink for task %s raised; outcome dropped", outcome.task_id)


class _Slot:
    """A pool thread's mailbox: the call it runs next, and the pipe that wakes it."""

    __slots__ = ("item", "read_fd", "write_fd")

    def __init__(self) -> None:
        self.item: tuple[TaskCall, Sink] | None = None  # None when woken: stop
        self.read_fd, self.write_fd = os.pipe()

    def wake(self) -> None:
        os.write(self.write_fd, b"\0")  # the GIL is released before the thread wakes

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class ThreadExecutor:
    name = "threads"
    in_process = True
    runs_in_caller = False
    places_resources = False  # resources are this machine's: the engine admits them

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) * 4)
        self._threads: list[threading.Thread] = []
        self._idle: list[_Slot] = []  # a stack: the thread that finished last goes first
        self._backlog: deque[tuple[TaskCall, Sink]] = deque()  # submitted with none idle
        self._stopping = False
        self._busy = 0
        self._spawned = 0
        self._lock = threading.Lock()
        self.abandoned = 0  # calls abandoned at their deadline (tests, diagnostics)

    def timeout_note(self) -> str | None:
        """How this executor enforces `timeout=`, when it cannot stop every call at once."""
        return TIMEOUT_NOTE

    def preflight(self, artifact_root: str, *, pipeline: str) -> None:
        """Workers share the driver's machine, and so its artifact store: nothing to check."""

    def env_lock(self, requirements: tuple[str, ...], python: str | None, *, build: bool,
                 run_id: str | None = None) -> str | None:
        """Calls run on this machine: its env cache (executors/envs.py)."""
        from cadenza.executors.envs import env_lock

        return env_lock(requirements, python, build=build, run_id=run_id)

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._stopping = False
            for _ in range(self.max_workers):
                self._spawn_locked()

    def _spawn_locked(self) -> None:
        self._spawned += 1
        slot = _Slot()
        t = threading.Thread(target=self._loop, args=(slot,),
                             name=f"cadenza-thread-{self._spawned}", daemon=True)
        t.start()
        self._threads.append(t)
        if self._backlog:  # a replacement while calls wait (abandon): it takes the first
            slot.item = self._backlog.popleft()
            slot.wake()
        else:
            self._idle.append(slot)

    def _loop(self, slot: _Slot) -> None:
        try:
            self._serve(slot)
        finally:
            slot.close()

    def _serve(self, slot: _Slot) -> None:
        me = threading.current_thread()
        name = f"{worker.default_worker_name()}/{me.name}"
        item: tuple[TaskCall, Sink] | None = None
        while True:
            if item is None:
                os.read(slot.read_fd, 1)  # idle until a call (or the stop) is in the slot
                item, slot.item = slot.item, None
                if item is None:
                    return
            call, sink = item
            if call.isolated:  # a child process on its env's python, which enforces timeouts
                self._run_isolated(call, sink)
            elif not self._run(call, sink, name):
                return  # abandoned at its deadline: this thread left the pool
            with self._lock:
                if self._backlog:
                    item = self._backlog.popleft()
                    continue
                item = None
                if self._stopping:
                    return
                self._idle.append(slot)

    def _run(self, call: TaskCall, sink: Sink, name: str) -> bool:
        """Run one call on this thread and deliver its outcome. False when the call was
        abandoned at its deadline (the thread was replaced and must end)."""
        running = _Running(call, sink, name)
        token = None
        if call.timeout_s is not None and call.timeout_s > 0:
            token = worker.call_later(call.timeout_s + ABANDON_GRACE_S,
                                      functools.partial(self._abandon, running))
        try:
            outcome = worker.execute(call, enforce_timeout=True, worker=name, keep_value=True)
        except BaseException as exc:  # noqa: BLE001 - an outcome must still come back
            outcome = escaped_outcome(call, exc, worker=name, started_at=running.started_at)
        finally:
            if token is not None:
                worker.cancel_call(token)
            with self._lock:
                abandoned = running.ended
                running.ended = True
                if not abandoned:
                    self._busy -= 1
        if abandoned:
            # Case 2: the attempt was reported at its deadline and this thread replaced.
            log.warning(
                "task %s (attempt %d of run %s), abandoned at its %g s timeout, returned "
                "after %.1f s; its result was dropped",
                call.label, call.attempt, call.run_id, call.timeout_s or 0,
                (datetime.now(UTC) - running.started_at).total_seconds(),
            )
            return False
        _deliver(sink, outcome)
        return True

    def _run_isolated(self, call: TaskCall, sink: Sink) -> None:
        from cadenza.executors.envs import run_isolated

        started_at = datetime.now(UTC)
        try:
            outcome = run_isolated(call)
        except BaseException as exc:  # noqa: BLE001 - an outcome must still come back
            outcome = escaped_outcome(call, exc, worker=None, started_at=started_at)
        finally:
            with self._lock:
                self._busy -= 1
        _deliver(sink, outcome)

    def _abandon(self, running: _Running) -> None:
        """Case 2, on the deadline thread: the call is stuck past its deadline."""
        with self._lock:
            if running.ended:
                return
            running.ended = True
            self._busy -= 1
            self.abandoned += 1
            if running.thread in self._threads:
                self._threads.remove(running.thread)
                self._spawn_locked()  # the stuck thread no longer counts as the pool's
        call = running.call
        exc = TaskTimeout(f"timed out after {call.timeout_s:g} s")
        base = describe_exception(exc, kind=ErrorKind.TIMEOUT)
        error = ErrorInfo(
            kind=ErrorKind.TIMEOUT,
            type=base.type,
            type_mro=base.type_mro,
            message=(
                f"timed out after {call.timeout_s:g} s while in a blocking call (sleep, I/O, "
                "C code), where a thread cannot be stopped: the attempt was abandoned at its "
                "deadline; its thread runs on until the call returns and its result will be "
                "dropped. Fix: executor='processes' kills a task at its deadline"
            ),
        )
        running.sink(TaskOutcome(
            run_id=call.run_id, task_id=call.task_id, map_index=call.map_index,
            attempt=call.attempt, ok=False, error=error, started_at=running.started_at,
            ended_at=datetime.now(UTC), worker=running.thread_name,
        ))

    def free_slots(self) -> int:
        with self._lock:
            return self.max_workers - self._busy

    def submit(self, call: TaskCall, sink: Sink) -> None:
        with self._lock:
            self._busy += 1
            if not self._idle:
                self._backlog.append((call, sink))  # the next thread to finish takes it
                return
            slot = self._idle.pop()
            slot.item = (call, sink)
        slot.wake()

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        worker.interrupt(run_id, task_id, map_index)
        envs = sys.modules.get("cadenza.executors.envs")  # loaded once a call was isolated
        if envs is not None:
            envs.cancel(run_id, task_id, map_index)

    def shutdown(self) -> None:
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
            self._stopping = True  # busy threads end after their call (and the backlog)
            idle, self._idle = self._idle, []
        for slot in idle:
            slot.item = None
            slot.wake()
        for t in threads:
            t.join(timeout=5)
