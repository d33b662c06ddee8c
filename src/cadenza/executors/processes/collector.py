"""The pool's leader loop: reads outcomes from the worker pipes, notices workers that died
(their sentinels), fires deadlines and kills, replaces workers, and hands each outcome to its
call's sink; run by the collector thread, or by a driver's thread while it waits on its
`Outcomes` (leader/follower, below). Mixed into `ProcessExecutor` (pool.py), whose state it
shares under its lock.
"""

from __future__ import annotations

import heapq
import logging
import os
import pickle
import selectors
import signal
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from cadenza.core import clock
from cadenza.core.records import ErrorKind
from cadenza.executors.base import Outcomes, Sink, TaskOutcome
from cadenza.executors.processes.jobs import (
    BOOT_RETRY_AFTER_S,
    MAX_BOOT_FAILURES,
    Job,
    Worker,
    describe_exit,
    failed_outcome,
    lost_outcome,
    signal_group,
    stopped_outcome,
)
from cadenza.executors.processes.wire import START_FRAME, decode_outcome, error_info

log = logging.getLogger("cadenza.executors.processes")

KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL if the worker is still alive after this long


class Collector:
    """The leader's half of `ProcessExecutor` (the attributes below are the pool's)."""

    if TYPE_CHECKING:
        _lock: threading.Lock
        _stopping: bool
        _workers: list[Worker]
        _idle: list[Worker]
        _backlog: deque[Job]
        _timers: list[tuple[float, int, str, Job]]
        _pending: list[tuple[Sink, TaskOutcome]]
        _wait_until: float
        _selector: selectors.BaseSelector | None
        _registered: dict[int, tuple[Worker, bool]]
        _selector_dirty: bool
        _leader: int | None
        _handover: bool
        _follow: threading.Condition
        _started: bool
        _boot_failures: int
        _broken_reason: str | None
        _broken_at: float
        _wake_r: int
        start_latencies_s: deque[float]

        def _assign_locked(self, worker: Worker, job: Job) -> tuple[bytes | None, bool]: ...
        def _send(self, worker: Worker, job: Job, fn_msg: bytes | None) -> None: ...
        def _spawn_locked(self) -> Worker: ...
        def _stop_locked(self, job: Job, reason: str) -> None: ...
        def _push_timer_locked(self, when: float, what: str, job: Job) -> None: ...
        def _rebuild_waitables_locked(self) -> None: ...
        def _wake(self) -> None: ...
        def _wake_locked(self) -> None: ...

    def _sync_selector_locked(self) -> None:
        """The leading thread: make the selector watch exactly the live workers' fds."""
        assert self._selector is not None
        want: dict[int, tuple[Worker, bool]] = {}
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

    def _forget_locked(self, worker: Worker) -> None:
        """The leading thread: stop watching a worker's fds before they are closed."""
        assert self._selector is not None
        for fd, (w, _) in list(self._registered.items()):
            if w is worker:
                self._selector.unregister(fd)
                del self._registered[fd]

    # -- leader/follower -----------------------------------------------------------------
    # One thread at a time reads the pipes (the leader, `_leader`): the collector thread, or
    # a driver waiting on its `Outcomes` (`_lead`), which then reads its own outcome instead
    # of sleeping until the collector has read it and handed it over. The collector leads
    # whenever something needs it: outcomes made outside (`_pending`), a backlog, a timer
    # due, a worker booting, a running call whose sink no driver leads for (tests, other
    # engines), or a driver that waits without leading (`_handover`, until the pool is idle).
    # Otherwise it parks on `_follow` (until the nearest timer), and a driver between two
    # waits leaves the pipes unread: only its own outcome can arrive on them, and it reads it
    # when it waits again. An idle worker that dies meanwhile is noticed at the next wait (a
    # call sent to it first goes back to the backlog, as in any send to a dead worker).

    def _collect(self) -> None:
        me = threading.get_ident()
        while True:
            with self._lock:
                while True:
                    if self._stopping:
                        self._follow.notify_all()
                        return
                    if self._leader is None and self._collector_should_lead_locked():
                        break
                    self._follow.wait(None if self._leader is not None
                                      else self._next_timeout_locked())
                self._leader = me
            try:
                if not self._pump_once(None):
                    return
            finally:
                with self._lock:
                    self._leader = None
                    self._follow.notify_all()

    def _collector_should_lead_locked(self) -> bool:
        if self._pending or self._backlog:
            return True
        busy = False
        for w in self._workers:
            if not w.ready:
                return True  # booting: its READY, or its death (a boot failure), is news
            job = w.job
            if job is not None and not job.done:
                if not job.led:
                    return True
                busy = True
        if not busy:
            self._handover = False
        elif self._handover:
            return True
        timers = self._timers
        return bool(timers) and timers[0][0] <= time.monotonic()

    def _lead(self, outcomes: Outcomes, timeout: float | None) -> bool:
        """A driver's wait on `outcomes` (its `get`): read the pipes in this thread until an
        item is there or `timeout` passes. False, without waiting, when another thread leads
        (the collector then serves this driver until the pool is idle)."""
        me = threading.get_ident()
        with self._lock:
            if self._stopping or not self._started or self._selector is None:
                return False
            if self._leader is not None:
                # Serve this driver from the leader: the collector keeps leading until the
                # pool is idle; a leading driver hands over when it stops (below).
                self._handover = True
                return False
            self._leader = me
        outcomes.leading(self._wake)
        # A KeyboardInterrupt (Ctrl-C in a script's main thread) can land anywhere in here,
        # even between a message's header and body: the driver then cancels what it has in
        # flight (RunDriver._drive), which kills the worker whose call it was reading.
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while outcomes.empty():
                cap = None
                if deadline is not None:
                    cap = deadline - time.monotonic()
                    if cap <= 0:
                        break
                if not self._pump_once(cap):
                    break
        finally:
            outcomes.leading(None)
            with self._lock:
                self._leader = None
                if self._stopping or self._collector_should_lead_locked():
                    self._follow.notify_all()
                elif any(w.job is not None for w in self._workers):
                    # Calls of drivers that wait without leading, or this driver's others
                    # (its next wait may find the collector leading): serve them now.
                    self._handover = True
                    self._follow.notify_all()
        return True

    def _pump_once(self, cap: float | None) -> bool:
        """The leader's step: wait for the pipes, sentinels, wake pipe or the nearest timer
        (at most `cap` seconds), handle what came, deliver the outcomes. False once the pool
        is stopping (shutdown() then delivers what was read)."""
        with self._lock:
            if self._stopping:
                return False
            selector = self._selector
            assert selector is not None
            if self._selector_dirty:
                self._sync_selector_locked()
            timeout = 0.0 if self._pending else self._next_timeout_locked()
        if cap is not None:
            timeout = cap if timeout is None else min(timeout, cap)
        events = selector.select(timeout)
        deliveries: list[tuple[Sink, TaskOutcome]] = []
        dead: list[Worker] = []
        try:
            for key, _ in events:
                if key.data is None:  # the wake pipe
                    try:
                        while os.read(self._wake_r, 4096):
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
        except BaseException:
            # Interrupted (Ctrl-C in a driver's thread that leads): the outcomes already read
            # are their calls' only report (their jobs are done): the next pump delivers them.
            with self._lock:
                self._pending[:0] = deliveries
            raise
        with self._lock:
            if self._stopping:
                # shutdown() takes over; it delivers what the leader already read.
                self._pending[:0] = deliveries
                return False
            self._fire_timers_locked()
            deliveries.extend(self._pending)
            self._pending.clear()
        self._deliver(deliveries)
        return True

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
                signal_group(job.worker, signal.SIGKILL)

    def _read_one(self, worker: Worker) -> list[tuple[Sink, TaskOutcome]]:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            # Dying: stop watching the pipe (it would stay readable) until the sentinel fires.
            with self._lock:
                worker.eof = True
                self._sync_selector_locked()
            return []
        except BaseException:
            # Interrupted mid-read: a Ctrl-C lands in the driver's own thread, which leads
            # the reads. The pipe may be left inside a frame (a worker's ready message, an
            # outcome), so nothing more can be read from it: the worker is killed, and its
            # sentinel reports its call as lost and replaces it, as for any lost worker.
            with self._lock:
                worker.eof = True
                self._sync_selector_locked()
            signal_group(worker, signal.SIGKILL)
            raise
        return self._on_message(worker, data)

    def _drain(self, worker: Worker) -> list[tuple[Sink, TaskOutcome]]:
        """Read whatever a worker sent before it exited or stopped (nothing once its pipe
        gave EOF, or was left mid-frame by an interrupted read)."""
        out: list[tuple[Sink, TaskOutcome]] = []
        if worker.eof:
            return out
        try:
            while worker.conn.poll(0):
                out.extend(self._on_message(worker, worker.conn.recv_bytes()))
        except (EOFError, OSError):
            pass
        return out

    def _on_start(self, worker: Worker) -> None:
        """The worker's call (one with a timeout) starts its function now: its deadline
        counts from here, not from the call's assignment (wire.py, START_FRAME)."""
        with self._lock:
            job = worker.job
            if job is None or job.done or job.stop_reason is not None:
                return
            timeout_s = job.call.timeout_s
            if not timeout_s or timeout_s <= 0:
                return
            job.started_at = clock.now()
            job.deadline = time.monotonic() + timeout_s
            # The earlier timer (with the boot grace) is skipped: its time is no longer
            # job.deadline. No wake: the thread that reads pipes computes its wait next.
            self._push_timer_locked(job.deadline, "deadline", job)

    def _on_message(self, worker: Worker, data: bytes) -> list[tuple[Sink, TaskOutcome]]:
        if data == START_FRAME:
            self._on_start(worker)
            return []
        try:
            msg = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - becomes the call's outcome
            msg = (
                "fail",
                error_info(
                    exc,
                    ErrorKind.SERIALIZATION,
                    f"the outcome could not be unpickled in the driver: {exc} (a Cadenza bug)",
                ),
                False,
            )
        if type(msg) is str:  # READY
            worker.ready = True
            self.start_latencies_s.append(time.perf_counter() - worker.spawned_at)
            with self._lock:
                self._boot_failures = 0
            return []
        decoded = decode_outcome(msg[1]) if msg[0] == "ok" else None  # outside the lock
        next_job: Job | None = None
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
                outcome = failed_outcome(job.call, error, started_at=job.started_at)
            if not self._stopping:
                if self._backlog:
                    next_job = self._backlog.popleft()
                    # A new deadline needs no wake: this is the leading thread, which
                    # recomputes its timeout before it waits again.
                    fn_msg, _wake = self._assign_locked(worker, next_job)
                else:
                    self._idle.append(worker)
        if next_job is not None:
            self._send(worker, next_job, fn_msg)
        return [(job.sink, outcome)]

    def _on_worker_exit(self, worker: Worker) -> list[tuple[Sink, TaskOutcome]]:
        """Case 2/3/4: a worker's sentinel fired. Report its call, replace it."""
        with self._lock:
            self._forget_locked(worker)
        exitcode = self._reap(worker)
        out: list[tuple[Sink, TaskOutcome]] = []
        sends: list[tuple[Worker, Job, bytes | None]] = []
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
                    out.append((job.sink, stopped_outcome(job, job.stop_reason)))
                else:
                    out.append(
                        (job.sink, lost_outcome(job, worker, exitcode, boot=boot_failure))
                    )
            elif job is None and not self._stopping:
                what, _ = describe_exit(exitcode)
                log.warning("idle worker process %d %s; replacing it", worker.pid, what)
            if self._stopping:
                return out
            if boot_failure and (job is None or job.stop_reason is None):
                self._boot_failures += 1
            if self._boot_failures >= MAX_BOOT_FAILURES:
                what, _ = describe_exit(exitcode)
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
                            (queued.sink, lost_outcome(queued, worker, exitcode, boot=True))
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

    def _reap(self, worker: Worker) -> int | None:
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

    # -- delivery ------------------------------------------------------------------------

    def _deliver_later(self, sink: Sink, outcome: TaskOutcome) -> None:
        """Hand an outcome to the leader (inline while shutting down)."""
        with self._lock:
            if not self._stopping:
                self._pending.append((sink, outcome))
                self._wake_locked()
                return
        sink(outcome)

    def _deliver(self, deliveries: list[tuple[Sink, TaskOutcome]]) -> None:
        for sink, outcome in deliveries:
            try:
                sink(outcome)
            except Exception:  # a broken sink must not stop the collector
                log.exception("the sink for task %s raised; outcome dropped", outcome.task_id)

