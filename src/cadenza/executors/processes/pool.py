"""The pool: starts, feeds, kills and replaces the worker processes (the package docstring
says how); the leader's loop that watches them (its collector thread's, or a waiting
driver's) is `collector.py`.
"""

from __future__ import annotations

import atexit
import heapq
import importlib
import logging
import multiprocessing
import os
import pickle
import selectors
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

# wire.pickle_fn's (~22 M instructions with uuid and platform): imported with the pool, while
# the forkserver preloads (forkserver.start_early), instead of at a cold start's first submit.
import cloudpickle  # type: ignore[import-untyped,unused-ignore]  # noqa: F401

from cadenza.core import clock
from cadenza.core.errors import ConfigError
from cadenza.executors.base import Outcomes, Sink, TaskCall, TaskOutcome
from cadenza.executors.environ import driver_environment, environment_change
from cadenza.executors.processes.child import worker_main
from cadenza.executors.processes.collector import KILL_GRACE_S, Collector
from cadenza.executors.processes.forkserver import (
    PRELOAD,
    START_METHOD_ENV,
    default_start_method,
)
from cadenza.executors.processes.jobs import (
    BOOT_GRACE_S,
    BOOT_RETRY_AFTER_S,
    Job,
    Worker,
    broken_outcome,
    failed_outcome,
    signal_group,
    stopped_outcome,
)
from cadenza.executors.processes.main_module import (
    keep_main_out_of_workers,
    main_identity,
    spawning,
)
from cadenza.executors.processes.wire import (
    PROTOCOL,
    STOP_MSG,
    Unpicklable,
    pack_call,
    pickle_fn,
)

log = logging.getLogger("cadenza.executors.processes")

# The function each worker runs a call with; imported once per worker process.
EXECUTE_TARGET = "cadenza.executors.worker:execute"

SHUTDOWN_GRACE_S = 5.0
FN_CACHE_PER_WORKER = 256  # functions a worker keeps loaded (LRU, evicted by the driver)
FN_CACHE_DRIVER = 1024  # pickled functions the driver keeps (LRU)


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


class ProcessExecutor(Collector):
    """A persistent pool of worker processes.

    Example:
        ex = ProcessExecutor(max_workers=4)
        ex.start()
        ex.submit(call, outcomes.put)   # outcomes.put(TaskOutcome) is called exactly once
        ex.shutdown()

    How a call can end, each reported exactly once through its sink:
      1. the worker returns an outcome (success, or any exception the task raised);
      2. the worker process dies mid-call -> kind="worker_lost"; the worker is replaced;
      3. `timeout_s` passes, counted from the function's start in the worker (not its boot
         or the import of its module) -> the worker is killed, kind="timeout"; replaced;
      4. `cancel()` -> dropped from the backlog, or the worker is killed; kind="cancelled";
      5. the function or inputs cannot be pickled, or the outcome cannot come back
         -> kind="serialization";
      6. `shutdown()` while queued or running -> kind="cancelled".
    """

    name = "processes"
    in_process = False
    runs_in_caller = False
    places_resources = False  # resources are this machine's: the engine admits them

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
        keep_main_out_of_workers()
        self._workers: list[Worker] = []
        self._idle: list[Worker] = []  # a stack: the warmest worker goes first
        self._backlog: deque[Job] = deque()
        self._timers: list[tuple[float, int, str, Job]] = []  # (when, seq, what, job)
        self._timer_seq = 0
        self._pending: list[tuple[Sink, TaskOutcome]] = []  # made outside the leader
        self._wait_until = float("inf")
        # The leader's selector: worker pipes, sentinels and the wake pipe. Only the leading
        # thread (re)registers; others set _selector_dirty and wake it.
        self._selector: selectors.BaseSelector | None = None
        self._registered: dict[int, tuple[Worker, bool]] = {}  # fd -> (worker, is_pipe)
        self._selector_dirty = False
        self._boot_failures = 0
        self._broken_reason: str | None = None
        self._broken_at = 0.0
        self._collector: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1
        # Leader/follower (collector.py): the thread that reads the pipes now (the collector
        # or a driver waiting on its Outcomes), the collector's parking spot, and whether a
        # driver waits without leading (the collector then leads until the pool is idle).
        self._leader: int | None = None
        self._follow = threading.Condition(self._lock)
        self._handover = False
        self._lead_pump = self._lead  # what a driver's Outcomes runs to lead its waits
        # fn_key -> (fn, wire_key, pickled bytes); wire_key changes when the object does
        self._fn_cache: OrderedDict[str, tuple[Callable[..., Any], str, bytes]] = OrderedDict()
        self._fn_versions: dict[str, int] = {}
        # The driver's environment variables and working directory as of the latest run's
        # start (`preflight`): what workers boot with, and what a kept worker is given before
        # its next call when it has older ones (a notebook that set a variable between runs).
        self._environment: tuple[dict[str, str], str | None] | None = None
        # Counters, for tests and bench/.
        self._isolated: set[tuple[str, str, int]] = set()  # calls in envs (executors/envs.py)
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
                self._ctx.set_forkserver_preload(PRELOAD)
            elif self.start_method == "fork":
                # Forked workers inherit it instead of importing it each (~100 ms).
                importlib.import_module(EXECUTE_TARGET.partition(":")[0])
            try:
                for _ in range(self.max_workers):
                    self._spawn_locked()
                self._selector = selectors.DefaultSelector()
                self._selector.register(self._wake_r, selectors.EVENT_READ, None)
                self._sync_selector_locked()
            except BaseException:
                for w in self._workers:
                    signal_group(w, signal.SIGKILL)
                self._workers.clear()
                self._idle.clear()
                self._started = False
                if self._selector is not None:
                    self._selector.close()
                    self._selector = None
                self._registered.clear()
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
        with self._lock:
            isolated = list(self._isolated)
        envs = sys.modules.get("cadenza.executors.envs")  # loaded once a call was isolated
        if envs is not None:
            for key in isolated:
                envs.cancel(*key, reason="shutdown")
            envs.stop_idle_workers()
        with self._lock:
            self._wake_locked()
            self._follow.notify_all()
        if collector is not None and collector is not threading.current_thread():
            collector.join(timeout=SHUTDOWN_GRACE_S)
        with self._lock:
            # A driver leading a wait (collector.py) stops at its next wake; it must be out
            # of the pipes before they are drained and closed here.
            until = time.monotonic() + SHUTDOWN_GRACE_S
            me = threading.get_ident()
            while self._leader is not None and self._leader != me:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._follow.wait(left)
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
                signal_group(w, signal.SIGTERM)
            else:
                try:
                    w.conn.send_bytes(STOP_MSG)
                except OSError:
                    pass
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        alive: dict[Any, Worker] = {w.sentinel: w for w in workers if not w.dead}
        while alive:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sentinel in wait(list(alive), left):
                alive.pop(sentinel)
        for w in alive.values():
            signal_group(w, signal.SIGKILL)
        for w in workers:
            if w.job is not None and not w.job.done:
                w.job.done = True
                reason = w.job.stop_reason or "shutdown"  # a timeout being enforced stays one
                delivered.append((w.job.sink, stopped_outcome(w.job, reason)))
            self._reap(w)
        for job in backlog:
            job.done = True
            delivered.append((job.sink, stopped_outcome(job, "shutdown")))
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

    def timeout_note(self) -> str | None:
        return None  # a call past its deadline has its worker killed

    def preflight(self, artifact_root: str, *, pipeline: str) -> None:
        """Workers share the driver's machine, and so its artifact store: nothing to check.
        The run's tasks see the driver's environment variables and working directory as they
        are now, as on inline and threads: kept workers get what changed before their next
        call. One snapshot per pool: runs driven at once in one process (a scheduler, the
        server) share the latest run's."""
        with self._lock:
            last = self._environment
        environment = driver_environment(last[1] if last is not None else None)
        with self._lock:
            if self._environment != environment:  # kept as is when equal: workers compare
                self._environment = environment  # it by identity before each call

    def env_lock(self, requirements: tuple[str, ...], python: str | None, *, build: bool,
                 run_id: str | None = None) -> str | None:
        """Calls run on this machine: its env cache (executors/envs.py)."""
        from cadenza.executors.envs import env_lock

        return env_lock(requirements, python, build=build, run_id=run_id)

    def free_slots(self) -> int:
        with self._lock:
            if not self._started or (self._broken_reason is not None and not self._workers):
                # Not started, or gave up after boot failures: a submit (re)starts workers.
                return self.max_workers
            # A call in its own environment runs in a child of its own, not on a worker, but
            # counts against max_workers like one: a map over 100 env tasks runs 2 at a time
            # on 2 workers, not 100 interpreters at once.
            return max(0, len(self._idle) - len(self._backlog) - len(self._isolated))

    def submit(self, call: TaskCall, sink: Sink) -> None:
        if call.isolated:
            self._submit_isolated(call, sink)
            return
        if not self._started:
            self.start()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("submit %s attempt %d of run %s", call.label, call.attempt, call.run_id)
        try:
            wire_key, fn_blob = self._pickled_fn(call)
            payload = pack_call(call, wire_key)
        except Unpicklable as exc:
            self._deliver_later(sink, failed_outcome(call, exc.error, started_at=None))
            return
        job = Job(call, sink, payload, wire_key, fn_blob)
        # A driver's sink is its Outcomes' put: that driver reads this call's outcome off the
        # pipe itself when it waits (leader/follower, collector.py).
        owner = getattr(sink, "__self__", None)
        if type(owner) is Outcomes:
            owner.attach(self._lead_pump)
            job.led = True
        with self._lock:
            if self._stopping:
                job.done = True
                worker = None
            else:
                if self._broken_reason is not None and not self._workers:
                    if time.monotonic() - self._broken_at < BOOT_RETRY_AFTER_S:
                        job.done = True
                        self._pending.append((sink, broken_outcome(call, self._broken_reason)))
                        self._wake_locked()
                        return
                    # The pool gave up respawning a while ago; try again now work arrived.
                    self._broken_reason = None
                    self._boot_failures = 0
                    for _ in range(self.max_workers):
                        self._spawn_locked()
                    self._rebuild_waitables_locked()
                    self._wake_locked()
                if not self._idle:
                    self._backlog.append(job)
                    if self._leader is None:
                        self._wake_locked()
                    return
                worker = self._idle.pop()
                fn_msg, wake = self._assign_locked(worker, job)
                if wake or (not job.led and self._leader is None):
                    self._wake_locked()
        if worker is None:  # submitted while shutting down
            sink(stopped_outcome(job, "shutdown"))
            return
        self._send(worker, job, fn_msg)

    def _submit_isolated(self, call: TaskCall, sink: Sink) -> None:
        """A call with its own environment runs in a child process on that env's python
        (`executors/envs.py`), watched by a thread of its own; its outcome reaches the sink
        through the collector like every other."""
        if not self._started:
            self.start()
        from cadenza.executors import envs

        def run() -> None:
            try:
                outcome = envs.run_isolated(call)
            finally:
                with self._lock:
                    self._isolated.discard(key)
            self._deliver_later(sink, outcome)

        key = (call.run_id, call.task_id, call.map_index)
        with self._lock:
            self._isolated.add(key)
        threading.Thread(target=run, name=f"cadenza-env-{call.label}", daemon=True).start()

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        """Cancel queued or running calls of that task instance (no-op if none)."""
        with self._lock:
            isolated = (run_id, task_id, map_index) in self._isolated
        if isolated:
            from cadenza.executors import envs

            envs.cancel(run_id, task_id, map_index)
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
                self._pending.append((queued.sink, stopped_outcome(queued, "cancelled")))
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
                self._wake_locked()

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
        blob = pickle_fn(call)
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

    # -- dispatch ------------------------------------------------------------------------

    def _assign_locked(self, worker: Worker, job: Job) -> tuple[bytes | None, bool]:
        """Give `job` to idle `worker`. Returns (function message to send first, wake?)."""
        worker.job = job
        job.worker = worker
        job.started_at = clock.now()
        wake = False
        timeout_s = job.call.timeout_s
        if timeout_s is not None and timeout_s > 0:
            # Until the worker says the function starts (`_on_start`): a boot or an import of
            # the task's module is not the task's time, but one that hangs is still stopped.
            job.deadline = time.monotonic() + timeout_s + BOOT_GRACE_S
            self._push_timer_locked(job.deadline, "deadline", job)
            wake = job.deadline < self._wait_until
        environment = self._environment
        if worker.environment is not environment and environment is not None:
            old = worker.environment
            if old != environment:  # changed since this worker last looked: what changed
                worker.environment_msg = environment_message(old, environment)
            worker.environment = environment
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
                ("F", job.wire_key, job.fn_blob, evict, new_path), protocol=PROTOCOL
            )
            self.fn_sends += 1
        return fn_msg, wake

    def _send(self, worker: Worker, job: Job, fn_msg: bytes | None) -> None:
        try:
            environment_msg = worker.environment_msg
            if environment_msg is not None:
                worker.environment_msg = None
                worker.conn.send_bytes(environment_msg)
            if fn_msg is not None:
                worker.conn.send_bytes(fn_msg)
            worker.conn.send_bytes(job.payload)
        except OSError as exc:
            # The worker died before the call reached it: when its sentinel fires, the call
            # goes back to the front of the backlog instead of failing as worker_lost.
            log.debug("could not send %s to worker %d: %s", job.call.label, worker.pid, exc)
            with self._lock:
                job.unsent = True

    def _spawn_locked(self) -> Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        sys_path = list(sys.path)
        if self._environment is None:
            self._environment = driver_environment()
        environment = self._environment
        env, cwd = environment
        boot = (sys_path, cwd, env, EXECUTE_TARGET, main_identity())
        process = self._ctx.Process(
            target=worker_main,
            args=(theirs, boot),
            name=f"cadenza-worker-{self.workers_started + 1}",
            daemon=False,  # daemonic processes may not start children; tasks may need to
        )
        spawned_at = time.perf_counter()
        spawning.worker = True
        try:
            process.start()
        finally:
            spawning.worker = False
        theirs.close()
        worker = Worker(process, ours, spawned_at, sys_path)
        worker.environment = environment
        self.workers_started += 1
        self._workers.append(worker)
        self._idle.append(worker)
        return worker

    def _rebuild_waitables_locked(self) -> None:
        self._selector_dirty = True

    def _push_timer_locked(self, when: float, what: str, job: Job) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, what, job))

    def _stop_locked(self, job: Job, reason: str) -> None:
        """Kill the worker running `job`; its sentinel then reports `reason`."""
        job.stop_reason = reason
        assert job.worker is not None
        signal_group(job.worker, signal.SIGTERM)
        self._push_timer_locked(time.monotonic() + KILL_GRACE_S, "kill", job)

    def _wake(self) -> None:
        """Interrupt the leader's wait (an Outcomes' waker: a put from another thread)."""
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or shut down

    def _wake_locked(self) -> None:
        """Make the leader look at the pool again (new timers, outcomes made outside, work),
        or the parked collector decide whether it must lead now."""
        if self._leader is not None:
            self._wake()
        else:
            self._follow.notify()


def environment_message(old: tuple[dict[str, str], str | None] | None,
                        new: tuple[dict[str, str], str | None]) -> bytes:
    """The "E" message (wire.py) taking a worker from the driver's `old` (variables, cwd) to
    `new` (environ.environment_change: only what the driver changed)."""
    changed, removed = environment_change(old[0] if old is not None else None, new[0])
    return pickle.dumps(("E", changed, removed, new[1]), protocol=PROTOCOL)
