"""The ray executor: calls run on a pool of Ray actors, watched by one collector thread.

How it works (the package docstring says why actors). The pool's state (actors, idle
actors by shape, the backlog, deadlines) is guarded by one lock, `_state`. The common case
takes no thread hop: `submit`, in the engine's thread, sends the call to an idle actor of its
shape (resources + environment) itself with `actor.run.remote(...)`, and Ray's callback
thread, when the ObjectRef's future completes with the call's outcome, updates the pool and
hands the outcome to the engine's sink. Everything else goes through the collector thread's
inbox: a call with no idle actor (it matches calls to actors, creates actors up to the
cluster's CPU count), an actor that died or could not start (`ray.kill`, the cluster's
capacity: Ray calls, which Ray's callback thread must not make), cancels, and a callback
that found the lock taken (it never waits for it: the lock may be held across a Ray call).
The collector blocks on the inbox with a timeout equal to the nearest deadline (a task's
timeout, a starving actor's grace, an idle actor's end); a deadline armed from another
thread that is nearer than the collector's wake-up sends it a "kick". Nothing polls.
(bench/ray.py, chain200: the two hops were the collector's: engine -> collector -> Ray, and
Ray's callback -> collector -> engine.)

How a call can end, each reported exactly once through its sink (from the collector thread,
or from Ray's callback thread for case 1):
  1. the actor returns an outcome (success, or anything the task raised);
  2. the actor, its worker process or its node dies -> kind="worker_lost" (Ray's exception
     types, translated in `outcomes.of_exception`); the actor is replaced on demand;
  3. `timeout_s` passes (counted from the call reaching a running actor) -> the actor is
     killed (`ray.kill`: its process ends), kind="timeout";
  4. `cancel()` -> dropped from the backlog, or its actor killed; kind="cancelled";
  5. no node could ever run it (its resources) -> kind="resources" at once;
  6. `shutdown()` while queued or running -> kind="cancelled".
A call with its own environment (requirements=, python=) runs on an actor of its resources'
shape like any other; the actor hands it to `executors/envs.py` on its node (the env cache
there, a kept env worker process), which records the env on the attempt.
Actors are owned by this driver's Ray job: if the driver dies (even `kill -9`), Ray ends the
job and kills its actors, so nothing keeps running past the run's lease.
"""

from __future__ import annotations

import atexit
import heapq
import logging
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from functools import partial
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import ConfigError
from cadenza.executors.base import Sink, TaskCall, TaskOutcome
from cadenza.executors.processes.wire import (
    Unpicklable,
    decode_outcome,
    pickle_call,
    pickle_fn,
)
from cadenza.executors.ray import cluster, outcomes
from cadenza.executors.ray.cluster import Shape
from cadenza.executors.ray.jobs import BUSY, DEAD, IDLE, PENDING, Actor, Job

log = logging.getLogger("cadenza.executors.ray")

# An actor Ray has not placed after this long may be waiting for resources that idle actors
# of other shapes hold: those are stopped.
STARVING_AFTER_S = 1.0
# An actor idle this long is stopped: it holds its CPU (and other resources) while it lives,
# which another driver on the same cluster may be waiting for. Within a run actors go from
# call to call; the next run in the same process within this time reuses them.
IDLE_TIMEOUT_S = 5.0
CAPACITY_REFRESH_S = 15.0
# A call that finds no room looks at the cluster again if what we know is older than this
# (a node may have joined or come back): queued behind a busy actor on a stale capacity, it
# would wait for that call instead of running on the new node.
CAPACITY_STALE_S = 1.0
SHUTDOWN_GRACE_S = 10.0
FN_CACHE_DRIVER = 1024
# Calls an actor holds at once: the one it runs and the next of the same function, queued in
# Ray, so a map's actor starts its next call without waiting for the driver's round trip
# (bench/ray.py, map1000 over bare Python: 3.70 -> 1.32 ms/task, load 15-20). The queued
# call's deadline starts when the one before it ends.
PIPELINE_DEPTH = 2


class RayExecutor:
    """Runs calls on Ray actors (`executor="ray"`, `cadenza run --executor ray`).

    Example:
        ex = RayExecutor(address="ray://head:10001")   # else CADENZA_RAY_ADDRESS, else local
        ex.start()
        ex.submit(call, outcomes.put)
        ex.shutdown()
    """

    name = "ray"
    in_process = False
    runs_in_caller = False
    # The cluster places resources: the engine admits pools only, not this machine's CPUs.
    places_resources = True

    def __init__(self, address: str | None = None, *, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigError(f"max_workers must be at least 1, got {max_workers}",
                              hint="leave it unset to use one actor per CPU of the cluster")
        self.address = address
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._started = False
        self._owns_ray = False
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._collector: threading.Thread | None = None
        self._in_flight = 0  # submitted, not yet delivered (read by free_slots)
        self._capacity = 1
        self._capacity_at = 0.0
        self._nodes: list[dict[str, float]] = []
        self._checked: set[tuple[str, frozenset[str]]] = set()
        self._fn_cache: dict[str, tuple[Any, str, bytes]] = {}
        self._fn_versions: dict[str, int] = {}
        # The pool's state: read and changed only with `_state` held.
        self._state = threading.Lock()
        self._wake_at = math.inf  # when the collector wakes up unless kicked (-inf: awake)
        self._actors: list[Actor] = []
        self._idle: dict[Shape, list[Actor]] = {}
        self._backlog: deque[Job] = deque()
        self._deadlines: list[tuple[float, int, Job]] = []
        self._seq = 0
        self._actor_cls: Any = None
        self._lock_fn: Any = None
        self._ray: Any = None
        # Counters, for tests and bench/.
        self.actors_started = 0
        self.fn_sends = 0
        self.requeued = 0  # calls sent again after the actor they were queued on went away
        self.direct_sends = 0  # calls sent to an idle actor from submit's own thread
        self.direct_outcomes = 0  # outcomes handed to the engine from Ray's callback thread

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            ray = cluster.import_ray()
            self._owns_ray = cluster.connect(self.address)
            self._ray = ray
            from cadenza.executors.ray.actor import CadenzaActor

            self._actor_cls = ray.remote(CadenzaActor)
            self._refresh_capacity()
            self._started = True
            self._collector = threading.Thread(target=self._collect, name="cadenza-ray-collector",
                                               daemon=True)
            self._collector.start()
        atexit.register(self.shutdown)
        log.debug("ray executor: up to %d actors", self._capacity)

    def shutdown(self) -> None:
        """Kill every actor; calls still queued or running end as cancelled. Idempotent."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            collector = self._collector
        atexit.unregister(self.shutdown)
        self._inbox.put(("stop",))
        if collector is not None and collector is not threading.current_thread():
            collector.join(timeout=SHUTDOWN_GRACE_S)
        if self._owns_ray:
            try:
                self._ray.shutdown()
            except Exception:
                log.debug("ray.shutdown failed", exc_info=True)
            self._owns_ray = False

    # -- the protocol --------------------------------------------------------------------

    def free_slots(self) -> int:
        """PIPELINE_DEPTH calls per actor the cluster has room for, and one more queued here,
        so an actor gets its next call without waiting for the engine's round trip."""
        if not self._started:
            return self.max_workers or 1
        if time.monotonic() - self._capacity_at > CAPACITY_REFRESH_S:
            self._refresh_capacity()
        return max(0, (PIPELINE_DEPTH + 1) * self._capacity - self._in_flight)

    def submit(self, call: TaskCall, sink: Sink) -> None:
        if not self._started:
            self.start()
        with self._lock:
            self._in_flight += 1
        sink = partial(self._delivered, sink)
        shape = cluster.shape_of(call)
        why = self._misfit(shape)
        if why is not None:
            self._inbox.put(("deliver", sink, outcomes.refused(call, why)))
            return
        try:
            wire_key, fn_blob = self._pickled_fn(call)
            payload = pickle_call(call, wire_key)
        except Unpicklable as exc:
            self._inbox.put(("deliver", sink, outcomes.failed(call, exc.error, started_at=None)))
            return
        job = Job(call, sink, shape, payload, wire_key, fn_blob)
        with self._state:
            idle = self._idle.get(shape) if self._started and not self._backlog else None
            if idle:  # the common case: no hop to the collector
                self.direct_sends += 1
                self._dispatch(idle.pop(), job)
                return
        self._inbox.put(("submit", job))

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        self._inbox.put(("cancel", (run_id, task_id, map_index)))

    def timeout_note(self) -> str | None:
        """None: a timed-out call's actor is killed (its process ends) at the deadline."""
        return None

    def preflight(self, artifact_root: str, *, pipeline: str) -> None:
        """Before a run: every live node must reach the artifact store (ConfigError)."""
        if not self._started:
            self.start()
        listed = self._ray.nodes()  # before the lock: a GCS round trip
        with self._state:  # each run starts from the cluster as it is now
            self._refresh_capacity(listed)
        nodes = frozenset(n["NodeID"] for n in listed if n.get("Alive"))
        key = (artifact_root, nodes)
        if key in self._checked:
            return
        cluster.check_reachable(self._ray, artifact_root, pipeline=pipeline)
        self._checked.add(key)

    def env_lock(self, requirements: tuple[str, ...], python: str | None, *, build: bool,
                 run_id: str | None = None) -> str | None:
        """The env's lock in the env cache of a node (a zero-CPU Ray task; built there first
        when `build`). A call may run on another node whose cache resolved the set at another
        time: the engine keys an attempt by the lock it reports having run with."""
        from cadenza.executors.envs import EnvBuildError

        if not self._started:
            self.start()
        if self._lock_fn is None:
            from cadenza.executors.ray.actor import node_env_lock

            self._lock_fn = self._ray.remote(node_env_lock).options(num_cpus=0, max_retries=0)
        try:
            tag, value, hint = self._ray.get(self._lock_fn.remote(
                requirements, python, build, cluster.forwarded_env()))
        except Exception as exc:
            raise EnvBuildError(f"could not ask a node of the Ray cluster for the "
                                f"environment's lock: {type(exc).__name__}: {exc}") from exc
        if tag == "error":
            raise EnvBuildError(str(value), hint=hint)
        return None if value is None else str(value)

    # -- driver-side helpers -------------------------------------------------------------

    def _delivered(self, sink: Sink, outcome: TaskOutcome) -> None:
        with self._lock:
            self._in_flight -= 1
        sink(outcome)

    def _refresh_capacity(self, listed: list[dict[str, Any]] | None = None) -> None:
        """The live nodes and their CPUs, from `listed` (what `ray.nodes()` returned) or from
        the GCS. Never raises: it runs on the collector thread too, which must not die of a
        GCS that does not answer (a head restarting); what was known is kept, and asked for
        again CAPACITY_STALE_S later."""
        try:
            nodes = cluster.alive_nodes(self._ray, listed)
        except Exception as exc:  # noqa: BLE001 - logged; the old capacity stays
            log.warning("could not list the Ray cluster's nodes (keeping %d actors as the "
                        "limit): %s: %s", self._capacity, type(exc).__name__, exc)
            self._capacity_at = time.monotonic()
            return
        cpus = int(sum(n.get("CPU", 0.0) for n in nodes))
        self._nodes = nodes
        self._capacity = self.max_workers or max(1, cpus)
        self._capacity_at = time.monotonic()

    def _misfit(self, shape: Shape) -> str | None:
        if shape.is_default:
            return None
        why = cluster.misfit(shape, self._nodes)
        if why is not None:  # a node may have joined since we last looked
            self._refresh_capacity()
            why = cluster.misfit(shape, self._nodes)
        return why

    def _pickled_fn(self, call: TaskCall) -> tuple[str, bytes]:
        """(wire key, cloudpickle bytes) of the call's function, pickled once per object."""
        cached = self._fn_cache.get(call.fn_key)
        if cached is not None and cached[0] is call.fn:
            return cached[1], cached[2]
        blob = pickle_fn(call)
        version = self._fn_versions.get(call.fn_key, 0) + 1
        self._fn_versions[call.fn_key] = version
        wire_key = f"{call.fn_key}#{version}"
        if len(self._fn_cache) >= FN_CACHE_DRIVER:
            self._fn_cache.pop(next(iter(self._fn_cache)))
        self._fn_cache[call.fn_key] = (call.fn, wire_key, blob)
        return wire_key, blob

    # -- the collector thread ------------------------------------------------------------

    def _collect(self) -> None:
        inbox = self._inbox
        while True:
            with self._state:
                timeout = self._next_timeout()
                self._wake_at = math.inf if timeout is None else time.monotonic() + timeout
            try:
                event = inbox.get(timeout=timeout)
            except queue.Empty:
                event = None
            deliveries: list[tuple[Sink, TaskOutcome]] = []
            stopping = False
            with self._state:
                self._wake_at = -math.inf  # awake: what is armed now is seen next round
                while event is not None:
                    if event[0] == "stop":
                        self._stop_all(deliveries)
                        stopping = True
                        break
                    self._handle(event, deliveries)
                    try:
                        event = inbox.get_nowait()
                    except queue.Empty:
                        event = None
                if not stopping:
                    self._fire_timers(deliveries)
                    self._schedule(deliveries)
            self._deliver(deliveries)
            if stopping:
                return

    def _handle(self, event: tuple[Any, ...], out: list[tuple[Sink, TaskOutcome]]) -> None:
        kind = event[0]
        if kind == "submit":
            self._backlog.append(event[1])
        elif kind == "done":
            self._on_done(event[1], event[2], event[3], event[4], out)
        elif kind == "ready":
            self._on_ready(event[1], event[2], out)
        elif kind == "cancel":
            self._on_cancel(event[1], out)
        elif kind == "deliver":
            out.append((event[1], event[2]))
        # "kick": only to wake the collector up (a nearer deadline, a backlog to send)

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        whens: list[float] = []
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        if self._deadlines:
            whens.append(self._deadlines[0][0])
        for actor in self._actors:
            if actor.phase == PENDING and self._idle_elsewhere(actor.shape):
                whens.append(actor.created_at + STARVING_AFTER_S)
            elif actor.phase == IDLE:
                whens.append(actor.since + IDLE_TIMEOUT_S)
        if self._actors:
            # Actors go idle in Ray's callback thread without waking the collector: it looks
            # again at least this often while any lives, so an idle one is stopped in time.
            whens.append(now + IDLE_TIMEOUT_S)
        if not whens:
            return None
        return max(0.0, min(whens) - now)

    def _idle_elsewhere(self, shape: Shape) -> bool:
        return any(actors for s, actors in self._idle.items() if s != shape)

    # -- matching calls to actors --------------------------------------------------------

    def _schedule(self, out: list[tuple[Sink, TaskOutcome]]) -> None:
        backlog = self._backlog
        if not backlog:
            return
        kept: deque[Job] = deque()
        live = sum(1 for a in self._actors if a.phase != DEAD)
        while backlog:
            job = backlog.popleft()
            idle = self._idle.get(job.shape)
            if idle:
                self._dispatch(idle.pop(), job)
                continue
            if live >= self._capacity and self._capacity_stale():
                self._refresh_capacity()
            if live >= self._capacity:
                victim = self._idle_victim(job.shape)
                if victim is None:
                    busy = self._room_for(job)
                    if busy is None:
                        kept.append(job)
                    else:
                        self._dispatch(busy, job)
                    continue
                self._kill(victim)
                live -= 1
            self._dispatch(self._new_actor(job.shape, job), job)
            live += 1
        self._backlog = kept

    def _capacity_stale(self) -> bool:
        return (self.max_workers is None
                and time.monotonic() - self._capacity_at > CAPACITY_STALE_S)

    def _room_for(self, job: Job) -> Actor | None:
        """A busy actor to queue `job` behind: same shape, running the same function (a map's
        calls take alike times), with fewer than PIPELINE_DEPTH calls."""
        for actor in self._actors:
            if (actor.phase == BUSY and actor.shape == job.shape
                    and len(actor.jobs) < PIPELINE_DEPTH
                    and actor.jobs[-1].wire_key == job.wire_key):
                return actor
        return None

    def _idle_victim(self, shape: Shape) -> Actor | None:
        """An idle actor of another shape, to make room for one of `shape`."""
        for s, actors in self._idle.items():
            if s != shape and actors:
                return actors[0]
        return None

    def _new_actor(self, shape: Shape, job: Job) -> Actor:
        options = shape.actor_options()
        handle = self._actor_cls.options(**options).remote()
        actor = Actor(handle, shape)
        self._actors.append(actor)
        self.actors_started += 1
        handle.ready.remote().future().add_done_callback(
            partial(self._inbox_put, "ready", actor))
        return actor

    def _inbox_put(self, kind: str, *args: Any) -> None:
        self._inbox.put((kind, *args))

    def _dispatch(self, actor: Actor, job: Job) -> None:
        """Send `job` to `actor`: an idle one, one Ray is still starting (the call waits in Ray
        until the actor is up, and its deadline starts then), or a busy one (it waits behind
        the running call, and its deadline starts when that one ends)."""
        first = not actor.jobs
        actor.jobs.append(job)
        job.actor = actor
        if actor.phase != PENDING:
            actor.phase = BUSY
            if first:
                self._begin(job)
        fn_blob = None
        if job.wire_key not in actor.fn_keys:
            fn_blob = job.fn_blob
            actor.fn_keys.add(job.wire_key)
            self.fn_sends += 1
        sys_path = None
        if actor.sys_path != sys.path:
            actor.sys_path = list(sys.path)
            sys_path = actor.sys_path
        env: dict[str, str] | None = cluster.forwarded_env()
        if actor.env != env:
            actor.env = env
        else:
            env = None
        self._seq += 1
        job.seq = self._seq
        job.ref = actor.handle.run.remote(job.wire_key, fn_blob, job.payload, sys_path, env)
        job.ref.future().add_done_callback(partial(self._ray_done, actor, job, job.seq))

    def _ray_done(self, actor: Actor, job: Job, seq: int, future: Any) -> None:
        """In Ray's callback thread: `job`'s call ended. A call that returned its outcome is
        settled here and the outcome handed to the engine (no hop); an actor that died (Ray
        calls follow: kill, capacity), or the state's lock held by another thread (never
        waited for: it may be held across a Ray call), go through the collector."""
        if not future.cancelled() and future.exception() is None \
                and self._state.acquire(blocking=False):
            out: list[tuple[Sink, TaskOutcome]] = []
            try:
                self._on_done(actor, job, seq, future, out)
                kick = bool(self._backlog)  # an actor may have gone idle for it
                self.direct_outcomes += len(out)
            finally:
                self._state.release()
            if kick:
                self._inbox.put(("kick",))
            self._deliver(out)
            return
        self._inbox.put(("done", actor, job, seq, future))

    def _begin(self, job: Job) -> None:
        """`job` is now the call its actor runs: its start time and deadline."""
        job.started_at = clock.now()
        self._arm(job)

    def _requeue(self, jobs: list[Job]) -> None:
        """Calls queued behind one that failed or was stopped never ran: they go back to the
        front of the backlog, in order (their old "done" events are ignored)."""
        for job in reversed(jobs):
            if not job.done:
                job.actor = None
                job.seq = -1
                job.deadline = None
                job.started_at = None
                self._backlog.appendleft(job)
                self.requeued += 1

    def _arm(self, job: Job) -> None:
        timeout_s = job.call.timeout_s
        if timeout_s is not None and timeout_s > 0:
            self._seq += 1
            job.deadline = time.monotonic() + timeout_s
            heapq.heappush(self._deadlines, (job.deadline, self._seq, job))
            if job.deadline < self._wake_at:  # armed outside the collector, nearer than its wake
                self._inbox.put(("kick",))

    def _make_idle(self, actor: Actor) -> None:
        actor.phase = IDLE
        actor.since = time.monotonic()
        self._idle.setdefault(actor.shape, []).append(actor)

    def _kill(self, actor: Actor) -> None:
        """Stop `actor` (its process ends); it leaves the pool."""
        if actor.phase == DEAD:
            return
        if actor.phase == IDLE:
            idle = self._idle.get(actor.shape)
            if idle and actor in idle:
                idle.remove(actor)
        actor.phase = DEAD
        actor.jobs.clear()
        if actor in self._actors:
            self._actors.remove(actor)
        try:
            self._ray.kill(actor.handle, no_restart=True)
        except Exception:
            log.debug("could not kill Ray actor %s", actor.name, exc_info=True)

    # -- events --------------------------------------------------------------------------

    def _on_ready(self, actor: Actor, future: Any, out: list[tuple[Sink, TaskOutcome]]) -> None:
        try:
            actor.name, actor.node, actor.pid = future.result()
        except BaseException as exc:  # noqa: BLE001 - the actor could not start
            if actor.phase == DEAD:
                return  # we killed it (a cancel, a timeout, room for another shape)
            jobs = list(actor.jobs)
            self._kill(actor)
            for job in jobs:  # none of them ran
                if not job.done:
                    job.done = True
                    out.append((job.sink, outcomes.of_exception(
                        job.call, exc, started_at=None, worker=None, node=None)))
            if outcomes.is_lost(exc):
                self._refresh_capacity()
            return
        if actor.phase != PENDING:
            return  # killed meanwhile (a cancel)
        if not actor.jobs:
            self._make_idle(actor)
            return
        actor.phase = BUSY
        self._begin(actor.jobs[0])

    def _on_done(self, actor: Actor, job: Job, seq: int, future: Any,
                 out: list[tuple[Sink, TaskOutcome]]) -> None:
        if job.done or job.seq != seq:  # already reported (timeout, cancel), or requeued
            return
        call = job.call
        try:
            tag, body, *rest = future.result()  # rest: the attempt's log bytes
        except BaseException as exc:  # noqa: BLE001 - Ray's exception types, translated
            # The actor is gone: the call it ran is lost, the ones queued behind never ran.
            jobs = list(actor.jobs) or [job]
            running = jobs[0]
            self._kill(actor)
            running.done = True
            out.append((running.sink, outcomes.of_exception(
                running.call, exc, started_at=running.started_at, worker=actor.name,
                node=actor.node)))
            self._requeue(jobs[1:])
            if outcomes.is_lost(exc):
                self._refresh_capacity()
            return
        job.done = True
        if actor.jobs and actor.jobs[0] is job:
            actor.jobs.popleft()
        elif job in actor.jobs:
            actor.jobs.remove(job)
        if tag == "ok":
            outcome = decode_outcome(body)
            if rest and rest[0] is not None and outcome.log_path:
                _save_log(outcome.log_path, rest[0])  # the node may be another machine
        else:
            outcome = outcomes.from_fail(call, body, started_at=job.started_at,
                                         worker=actor.name)
            actor.fn_keys.discard(job.wire_key)
        if actor.phase != DEAD:
            if actor.jobs:
                self._begin(actor.jobs[0])
            else:
                self._make_idle(actor)
        out.append((job.sink, outcome))

    def _on_cancel(self, key: tuple[str, str, int], out: list[tuple[Sink, TaskOutcome]]) -> None:
        for queued in [j for j in self._backlog if _key(j.call) == key]:
            self._backlog.remove(queued)
            queued.done = True
            out.append((queued.sink, outcomes.stopped(queued.call, "cancelled", started_at=None,
                                                      worker=None)))
        for actor in list(self._actors):
            for i, job in enumerate(list(actor.jobs)):
                if job.done or _key(job.call) != key:
                    continue
                if i == 0:
                    self._stop(job, "cancelled", out)
                    break
                # Queued behind another call in Ray: cancelled there before it starts.
                actor.jobs.remove(job)
                job.done = True
                try:
                    self._ray.cancel(job.ref)
                except Exception:
                    log.debug("could not cancel a queued Ray call", exc_info=True)
                out.append((job.sink, outcomes.stopped(job.call, "cancelled", started_at=None,
                                                       worker=None)))

    def _stop(self, job: Job, reason: str, out: list[tuple[Sink, TaskOutcome]]) -> None:
        """Case 3/4: kill the actor running `job` and report `reason`."""
        actor = job.actor
        job.done = True
        worker = actor.name if actor is not None else None
        if actor is not None:
            log.debug("%s: %s; killing Ray actor %s", job.call.label, reason, worker)
            behind = [j for j in actor.jobs if j is not job]
            self._kill(actor)
            self._requeue(behind)
        out.append((job.sink, outcomes.stopped(job.call, reason, started_at=job.started_at,
                                               worker=worker)))

    def _fire_timers(self, out: list[tuple[Sink, TaskOutcome]]) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            when, _, job = heapq.heappop(self._deadlines)
            if not job.done and job.deadline == when:
                self._stop(job, "timeout", out)
        for actor in list(self._actors):
            if (actor.phase == PENDING and now - actor.created_at >= STARVING_AFTER_S
                    and self._idle_elsewhere(actor.shape)):
                # Ray may be waiting for resources our idle actors of other shapes hold.
                for shape, idle in list(self._idle.items()):
                    if shape != actor.shape:
                        for victim in list(idle):
                            self._kill(victim)
            elif actor.phase == IDLE and now - actor.since >= IDLE_TIMEOUT_S:
                self._kill(actor)

    def _stop_all(self, out: list[tuple[Sink, TaskOutcome]]) -> None:
        """Case 6, on the collector thread: cancel everything, kill every actor."""
        while True:  # what was submitted before the stop
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._handle(event, out)
        for queued in self._backlog:
            queued.done = True
            out.append((queued.sink, outcomes.stopped(queued.call, "shutdown", started_at=None,
                                                      worker=None)))
        self._backlog.clear()
        for actor in list(self._actors):
            for i, job in enumerate(actor.jobs):
                if not job.done:
                    job.done = True
                    out.append((job.sink, outcomes.stopped(
                        job.call, "shutdown", started_at=job.started_at,
                        worker=actor.name if i == 0 else None)))
            self._kill(actor)
        self._backlog.clear()
        self._idle.clear()

    def _deliver(self, deliveries: list[tuple[Sink, TaskOutcome]]) -> None:
        for sink, outcome in deliveries:
            try:
                sink(outcome)
            except Exception:  # a broken sink must not stop the collector
                log.exception("the sink for task %s raised; outcome dropped", outcome.task_id)


def _save_log(path: str, data: bytes) -> None:
    """Write an attempt's log that came back from its node where `cadenza logs` reads it,
    unless the node wrote it there itself (a node of this machine, or a shared folder)."""
    try:
        there = os.path.getsize(path) == len(data)
    except OSError:  # not on this machine's disk: the node that ran the task is another one
        there = False
    if there:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        log.warning("could not write the task log %s that came back from Ray: %s", path, exc)


def _key(call: TaskCall) -> tuple[str, str, int]:
    return (call.run_id, call.task_id, call.map_index)


__all__ = ["RayExecutor"]
