"""RunDriver: one run, from its first task to its final state.

The loop (no fixed tick, no busy polling):
  1. admit ready task instances while the executor, their pool and the machine have room;
  2. commit every transition of this step in ONE transaction (write-through store);
  3. only then submit the admitted calls (a transition is durable before work depends on it);
  4. block on the outcome queue until an outcome arrives or the next retry falls due;
  5. fold the outcomes in: retries, trigger rules, skips, mapped expansion -> new ready set.

Readiness is incremental: each node keeps counts of its upstreams' final states, updated
once per finished upstream (O(edges) per run). The driver's memory is authoritative for its
run; the store is written through and is what resume rebuilds from.

What belongs here: the loop, group commit, admission, dispatch and cancel. The scheduling
view and every state move are the owner's (engine/active.py); the driver mixes in sensor
polling (sensors.py), what an attempt's end writes (writes.py) and experiment tracking
(tracking.py).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import CadenzaError, InternalError, RunTakenOver, TaskCancelled
from cadenza.core.logfiles import attempt_log_path
from cadenza.core.records import (
    ErrorInfo,
    ErrorKind,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
    WriteBatch,
)
from cadenza.core.states import RunState, TaskState, move_run
from cadenza.core.task_secrets import Secrets
from cadenza.engine.active import ActiveRun, Instance
from cadenza.engine.callbacks import CallbackContext, CallbackQueue
from cadenza.engine.ready import Admission
from cadenza.engine.sensors import SensorSteps
from cadenza.engine.tracking import RunTracking
from cadenza.engine.watch import CallerThreadWatch
from cadenza.engine.writes import OutcomeWrites
from cadenza.executors.base import Executor, Outcomes, TaskCall, TaskOutcome
from cadenza.graph.model import (
    PipelineGraph,
    substitute,
)

log = logging.getLogger(__name__)

S = TaskState

# Group commit (see RunDriver._should_flush): outcomes of quick attempts may wait this long
# to share one transaction; an attempt that ran at least GROUP_COMMIT_MAX_TASK_S is
# committed at once.
GROUP_COMMIT_S = 0.010
GROUP_COMMIT_MAX_TASK_S = 0.050
_FOR_INPUTS = "a call's input is not committed yet"  # _should_flush's rule 1
# What a rule-1 commit leaves out: a start, and a task made ready by the ends it commits
# (admitted while that commit is on its way, `_admit_and_commit`).
_STARTING = frozenset({TaskState.SCHEDULED, TaskState.RUNNING})


class RunDriver(SensorSteps, OutcomeWrites, RunTracking):
    """Drives one run to its final state. Not thread-safe except `cancel()`."""

    def __init__(
        self,
        *,
        graph: PipelineGraph,
        run: RunRecord,
        param_values: dict[str, Any],
        store: Any,
        executor: Executor | None,
        artifact_root: str,
        logs_dir: str,
        inline_limit_bytes: int,
        admission: Admission,
        driver_id: str,
        pipeline_callbacks: dict[str, tuple[Callable[..., Any], ...]] | None = None,
        cache: Any = None,
        tracker: Any = None,
        secrets: Secrets | None = None,
    ) -> None:
        self.graph = graph
        self.run = run
        self.run_id = run.run_id
        self.params = param_values
        self.store = store
        # None only for a driver that ends a run without starting it (`fail`).
        self._executor = executor
        self.artifact_root = artifact_root
        self.logs_dir = logs_dir
        self.inline_limit = inline_limit_bytes
        self.admission = admission
        self.driver_id = driver_id
        self.pipeline_callbacks = pipeline_callbacks or {}
        self.cache = cache
        self.tracker = tracker
        self._tracker_config = tracker
        self.secrets = secrets  # handed to every task in its context (engine/api.secrets_for)
        self.tracking_info: dict[str, Any] = {}
        self.in_process = executor is not None and executor.in_process
        self.runs_in_caller = executor is not None and executor.runs_in_caller
        # An executor that places resources on machines of its own (ray): admit pools only.
        self.local_resources = executor is None or not executor.places_resources

        # The run's scheduling view and the only mover of its states (engine/active.py);
        # its sets are aliased here, so the loop reads them without another attribute hop.
        self.active = active = ActiveRun(graph, params=param_values,
                                         load_output=self._load_output,
                                         in_process=self.in_process)
        active.on_failed = self._on_failed
        self.nodes = active.nodes
        self.downstream = active.downstream
        self.ready = active.ready
        self.ready_sensors = active.ready_sensors
        self.dirty = active.dirty
        self.values = active.values  # live outputs (in-process executors)
        self._uncommitted = active.uncommitted  # nodes whose end is not committed yet
        self.in_flight: dict[tuple[str, int], Instance] = {}
        self.retry_heap: list[tuple[float, int, Instance]] = []
        # A queue whose waits an executor may lead in this thread (Outcomes: processes reads
        # its worker pipes here instead of handing each outcome over from its own thread).
        self.outcomes = Outcomes()
        # Every commit lands only while the run's row still names this driver (the store
        # checks it in the commit's transaction): one stopped past its lease while another
        # took the run over writes nothing more (RunTakenOver) and stops.
        self._fence = (self.run_id, driver_id)
        self.batch = WriteBatch(fence=self._fence)
        self.callbacks = CallbackQueue()
        self._cancel = threading.Event()
        self._cancel_reason = "run cancelled"
        self._seq = itertools.count()
        self._code_prints: dict[int, str] = {}  # id(fn) -> code fingerprint (lineage)
        self._dirty_since: float | None = None
        # When the oldest start a commit left out (`_flush(defer_starts=True)`) was left out.
        self._deferred_since: float | None = None
        self._deferred: set[int] = set()  # the `dirty` keys that commit left out
        # The run's part of every call's context, and the run record and secrets it was
        # built from (_call_context).
        self._context: dict[str, Any] | None = None
        self._context_of: tuple[RunRecord, Any] | None = None
        self._must_flush = False
        self._poller: Executor | None = None  # threads that poke sensor steps
        # (monotonic deadline, seq, sensor instance, attempt): fail a poke that outlives it
        self._deadlines: list[tuple[float, int, Instance, int]] = []
        # An executor that runs the task inside submit() holds this thread: a watch commits
        # the task's 'running' row while it runs (engine/watch.py).
        self._watch = (CallerThreadWatch(lambda: self._flush(callbacks=False),
                                         after_s=GROUP_COMMIT_S)
                       if self.runs_in_caller else None)

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            raise InternalError(f"run {self.run_id}: this driver has no executor; it can only "
                                "end the run (RunDriver.fail)")
        return self._executor

    # --- setup ---------------------------------------------------------------------------
    def initial_rows(self) -> list[TaskInstanceRecord]:
        """A new run: the rows to insert with it (every task instance pending)."""
        return self.active.start(self.run_id)

    # --- public --------------------------------------------------------------------------
    def cancel(self, *, reason: str = "run cancelled") -> None:
        """Ask the run to stop: running tasks are interrupted, the rest cancelled.

        On `processes` a running attempt's worker is killed; on `threads`/`inline` the call
        is interrupted at its next Python bytecode (a blocking C call such as `time.sleep`
        returns first). The loop then dispatches nothing more and records every unfinished
        task instance as cancelled with `reason`. Safe to call from another thread (the
        heartbeat thread, on a cancel request from another process) or a signal handler."""
        if not self._cancel.is_set():
            self._cancel_reason = reason
        self._cancel.set()
        for inst in list(self.in_flight.values()):
            try:
                self._executor_of(inst).cancel(self.run_id, inst.node.id, inst.map_index)
            except Exception as exc:  # noqa: BLE001 - the loop cancels what is left
                log.warning("run %s: could not interrupt %s: %s", self.run_id, inst.label, exc)
        self.outcomes.put(None)

    def taken_over(self, holder: str) -> None:
        """The heartbeat thread saw another driver's id on the run (this process was stopped
        past its lease): stop now rather than at the next commit, which the store would
        refuse anyway (RunTakenOver, raised by that commit). Safe from another thread."""
        log.warning("run %s: taken over by driver %s while this driver was stopped; "
                    "stopping its tasks", self.run_id, holder)
        self.cancel(reason=f"taken over by driver {holder}")

    def _abandon(self) -> None:
        """Stop every task in flight (another driver runs them again), recording nothing."""
        self._cancel.set()
        for inst in list(self.in_flight.values()):
            try:
                self._executor_of(inst).cancel(self.run_id, inst.node.id, inst.map_index)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log.warning("run %s: could not stop %s: %s", self.run_id, inst.label, exc)
        self.in_flight.clear()

    def fail(self, error: str) -> RunState:
        """End the run `failed` with `error` instead of driving it (it cannot start, or its
        tracking is unavailable): every unfinished task instance is cancelled, the run's end
        is committed and its on_failure callbacks run. Returns the run's final state."""
        self._cancel_everything(error, run_state=RunState.FAILED)
        return self._finish(error=error)

    def drive(self) -> RunState:
        """Run until every task instance is final. Returns the run's final state."""
        try:
            return self._drive()
        finally:
            if self._watch is not None:  # also when the last write failed
                self._watch.close()

    def _drive(self) -> RunState:
        try:
            if not self._start_tracking():
                # Nobody cancelled it: the run failed.
                self._cancel_everything("experiment tracking is unavailable",
                                        run_state=RunState.FAILED)
                return self._finish(error=self.run.extra["warnings"][-1])
            if self.cache is not None:
                self.cache.prepare(self)  # fingerprints taken, uncacheable tasks warned about
            self._flush()  # a resumed run's resets are durable before anything runs
            self.active.begin()
            self._loop()
        except KeyboardInterrupt:
            self._cancel_everything("interrupted (Ctrl-C)")
            self._finish()
            raise
        except TaskCancelled:
            if not self._cancel.is_set():
                raise
            # On inline the cancel interrupts the driver's own thread; when the task ended
            # just before, the interrupt lands here instead: it is the same cancel.
            self._cancel_everything(self._cancel_reason)
            return self._finish()
        except RunTakenOver:
            # Another driver carries the run on: stop this one's tasks, write nothing, and
            # let the caller say so (the CLI shows the error, a scheduler logs it).
            self._abandon()
            raise
        except BaseException as exc:
            if isinstance(exc, CadenzaError) and not isinstance(exc, InternalError):
                # Says what failed and the fix (the store gone, a setting): the caller shows
                # it; a traceback would only bury it. Cadenza's own bugs keep theirs.
                log.error("run %s: driver failed: %s", self.run_id, exc)
            else:
                log.exception("run %s: driver failed", self.run_id)
            try:
                self._cancel_everything(f"driver error: {exc}")
                self._finish(error=f"{type(exc).__name__}: {exc}")
            except Exception as again:  # noqa: BLE001 - the first error is the one to raise
                # The store that failed usually fails the run's last write too: say so, and
                # raise what went wrong first (resume records the run's end later).
                log.warning("run %s: the run's end could not be recorded: %s",
                            self.run_id, again)
            raise
        return self._finish()

    # --- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self._cancel.is_set():
                self._cancel_everything(self._cancel_reason)
                return
            for inst, call in self._admit_and_commit():
                self._submit(inst, call)
            if not self.in_flight and not self.ready and not self.retry_heap:
                self._flush()
                if self.active.unfinished == 0:
                    return
                self.active.fail_stuck()
                self._flush()
                if self.active.unfinished == 0:
                    return
                continue
            self._wait_and_fold()

    def _admit_and_commit(self) -> list[tuple[Instance, TaskCall]]:
        """The calls to submit now, every input of theirs committed.

        When a commit is due before admitting (`_should_flush` of the work at the front of
        the ready queue: its inputs, or rules 2 and 3), the calls are admitted and built
        WHILE the store commits (`store.write(meanwhile=...)`: on PostgreSQL the driver
        works while the server does, instead of idling for the round trip); they are
        submitted only after the commit returned, as before. What the admission itself
        changed (a task served from the cache, a task that can never start) is committed
        by the check after it, before any call that depends on it goes out."""
        why = self._should_flush(self._ahead())
        if not why:
            calls = self._admit()
            why = self._should_flush(calls)
            if why:
                self._commit_before(calls, why)
            return calls
        admitted: list[list[tuple[Instance, TaskCall]]] = []
        raised: list[BaseException] = []

        def admit() -> None:
            try:
                admitted.append(self._admit())
            except BaseException as exc:  # noqa: BLE001 - raised once the commit returned
                raised.append(exc)  # not as the write's error: the write may have landed

        try:
            self._flush(synchronous=self._must_flush, defer_starts=why is _FOR_INPUTS,
                        meanwhile=admit)
        except BaseException:
            if admitted:
                self._unadmit(admitted[0])
            raise
        if raised:
            raise raised[0]
        calls = admitted[0] if admitted else self._admit()  # the store may not call it
        why = self._should_flush(calls)  # e.g. the input of a call is a cache hit of it
        if why:
            self._commit_before(calls, why)
        return calls

    def _ahead(self) -> list[tuple[Instance, None]]:
        """What `_admit` would take now, for `_should_flush`'s rule 1: the ready sensors and
        the ready queue's front, as many as the executor has free slots (a guess: a task
        may wait for a pool, or come from the cache)."""
        if not self._uncommitted or not (self.ready or self.ready_sensors):
            return []
        ahead = [(inst, None) for inst in self.ready_sensors]
        if self.ready:
            ahead.extend((inst, None) for inst in
                         itertools.islice(self.ready, self.executor.free_slots()))
        return ahead

    def _commit_before(self, calls: list[tuple[Instance, TaskCall]], why: object) -> None:
        try:
            self._flush(synchronous=self._must_flush, defer_starts=why is _FOR_INPUTS)
        except BaseException:
            self._unadmit(calls)
            raise

    def _unadmit(self, calls: list[tuple[Instance, TaskCall]]) -> None:
        """The commit before `calls` failed: they are never submitted, so no outcome will
        come for them (the run is ending: its driver failed); their attempts end
        cancelled, their slots are free."""
        for inst, _ in calls:
            if self.in_flight.pop((inst.node.id, inst.map_index), None) is None:
                continue
            if inst.granted is not None:
                self.admission.release(inst.node, inst.granted)
                inst.granted = None
            inst.ended_at = clock.now()
            self._attempt_done(inst, S.CANCELLED, None)

    def _should_flush(self, calls: Iterable[tuple[Instance, object]]) -> object:
        """Group commit, within the rule that work never starts on an uncommitted input.
        Returns why to commit now (a true value) or False.

        1. A call whose upstream's end is not committed yet -> commit first (always).
        2. An outcome of an attempt that ran for GROUP_COMMIT_MAX_TASK_S or longer -> commit
           at once: a crash must not cost re-running anything expensive.
        3. Otherwise outcomes wait at most GROUP_COMMIT_S for company. A kill -9 in that
           window re-runs only tasks that each took under GROUP_COMMIT_MAX_TASK_S.
        The commits of rules 1 and 3 are not synchronous (WriteBatch.synchronous=False) unless
        they carry a rule-2 outcome: committed and visible before any dependent starts, kept
        through a kill -9 of this process, but on PostgreSQL not waiting for the WAL flush
        (~1 ms, most of a chained step). Only a crash of the database server within ~0.6 s
        could undo them, and then with everything after them (the dependents' starts too):
        a resume re-runs quick tasks, the same loss rule 3 accepts. Rule-2 commits, the
        run's first and last, and cancels stay synchronous, flushing all before them.
        Measured on wide500/inline (2 slow cores, SQLite WAL): one commit per task costs
        ~0.25-0.4 ms; grouping brings the store's share under 0.05 ms per task.

        A rule-1 commit (`_FOR_INPUTS`) leaves out the starts of this step's calls (and
        their 'scheduled' rows: the calls are admitted while it commits): a start
        is nobody's input, so its 'running' row rides on the next commit, at the latest
        GROUP_COMMIT_S later (rule 3), or with the attempt's end when that comes first (one
        row write instead of two, in a chain one statement of three). A kill -9 before it is
        written loses a start of a quick task, which resume runs again anyway. Inline runs
        the call in this thread: its watch commits the start once the call has taken
        GROUP_COMMIT_S.
        """
        if self._must_flush or not (self.dirty or self.batch):
            return self._must_flush
        if self._dirty_since is not None and (
            time.monotonic() - self._dirty_since >= GROUP_COMMIT_S
        ):
            return True
        uncommitted = self._uncommitted
        if uncommitted:
            for inst, _ in calls:
                for up in self.nodes[inst.node.id].blocking:
                    if up in uncommitted:
                        return _FOR_INPUTS
        return False

    def _wait_and_fold(self) -> None:
        if self._dirty_since is None and (self.dirty or self.batch):
            self._dirty_since = time.monotonic()  # pending writes never wait on an outcome
        outcomes = self.outcomes
        if not outcomes.empty():  # already here (always on inline): no wait to work out
            self._fold_all([outcomes.get_nowait()])
            return
        timeout: float | None = None
        if self.retry_heap:
            timeout = max(0.0, self.retry_heap[0][0] - time.monotonic())
        if self._deadlines:
            left = max(0.0, self._deadlines[0][0] - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        if self.ready and not self.in_flight:
            timeout = 0.05  # waiting on pool slots or resources held by other runs
        if self._dirty_since is not None:
            left = max(0.0, GROUP_COMMIT_S - (time.monotonic() - self._dirty_since))
            timeout = left if timeout is None else min(timeout, left)
        try:
            outcome = outcomes.get(timeout=timeout) if timeout != 0 else outcomes.get_nowait()
        except queue.Empty:
            outcome = None
        self._fold_all([outcome])

    def _fold_all(self, got: list[TaskOutcome | None]) -> None:
        """Fold `got` and whatever else has arrived, then fire what fell due: sensor
        deadlines, retries, the group commit."""
        outcomes = self.outcomes
        while not outcomes.empty():  # this thread is the only reader: no raise per step
            got.append(outcomes.get_nowait())
        for item in got:
            if item is not None:
                self._fold(item)
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, inst, attempt = heapq.heappop(self._deadlines)
            key = (inst.node.id, inst.map_index)
            if self.in_flight.get(key) is inst and inst.attempt == attempt:
                del self.in_flight[key]  # its outcome, if it ever comes, is stale
                self._executor_of(inst).cancel(self.run_id, inst.node.id, inst.map_index)
                self._sensor_timed_out(inst, None)
        while self.retry_heap and self.retry_heap[0][0] <= now:
            _, _, inst = heapq.heappop(self.retry_heap)
            if inst.state is S.RUNNING and inst.node.options.sensor is not None:
                self._poke_again(inst)
            elif inst.state is S.UP_FOR_RETRY:
                self.active.retry_due(inst)
        if self._dirty_since is not None and now - self._dirty_since >= GROUP_COMMIT_S:
            self._flush(synchronous=self._must_flush)

    # --- admission and dispatch ----------------------------------------------------------
    def _admit(self) -> list[tuple[Instance, TaskCall]]:
        calls: list[tuple[Instance, TaskCall]] = []
        while self.ready_sensors:  # polled by the engine: no executor slot, no pool slot
            inst = self.ready_sensors.popleft()
            if inst.state is S.SCHEDULED:
                self._resolve_inputs(inst)
                self.active.start_attempt(inst)
                self.in_flight[(inst.node.id, inst.map_index)] = inst
                calls.append((inst, self._build_call(inst)))
        if not self.ready:
            return calls
        free = self.executor.free_slots()
        deferred: deque[Instance] | None = None
        while self.ready and free > 0:
            inst = self.ready.popleft()
            if inst.state is not S.SCHEDULED:
                continue
            if self.cache is not None and inst.node.options.cache:
                if inst.inputs is None:
                    self._resolve_inputs(inst)
                if self.cache.try_serve(self, inst):
                    continue
            verdict, granted, why = self.admission.try_acquire(
                inst.node, local_resources=self.local_resources)
            if verdict == "never":
                self.active.fail(inst, ErrorInfo(
                    kind=ErrorKind.RESOURCES, type="cadenza.core.errors.CadenzaError",
                    message=why))
                continue
            if verdict == "wait":
                if deferred is None:
                    deferred = deque()
                deferred.append(inst)
                continue
            inst.granted = granted
            self._resolve_inputs(inst)
            self.active.start_attempt(inst)  # inlined: this runs once per task
            self.in_flight[(inst.node.id, inst.map_index)] = inst
            calls.append((inst, self._build_call(inst)))
            free -= 1
        if deferred:
            self.ready.extendleft(reversed(deferred))
        return calls

    def _submit(self, inst: Instance, call: TaskCall, *, first_poke: bool = True) -> None:
        spec = inst.node.options.sensor
        if spec is None:
            if self._watch is None:
                self.executor.submit(call, self.outcomes.put)
            else:
                with self._watch:
                    self.executor.submit(call, self.outcomes.put)
            return
        self._submit_sensor(inst, call, first_poke=first_poke)

    def _resolve_inputs(self, inst: Instance) -> None:
        if inst.inputs is None:
            options = inst.node.options
            # A task in its own environment gets stored outputs, never this process's objects.
            resolve = (self.active.stored_input_for
                       if options.requirements or options.python is not None
                       else self.active.input_for)
            inst.inputs = {k: substitute(v, resolve) for k, v in inst.node.args.items()}

    def _build_call(self, inst: Instance) -> TaskCall:
        """The call of `inst`'s current attempt (its inputs resolved, its attempt started).

        Built once per attempt (it was built, then copied with `dataclasses.replace` to set
        the attempt: ~11 us of a frozen 17-field dataclass on the loaded VM), with the run's
        context shared by every call of the run (workers only read it)."""
        node = inst.node
        gpus = getattr(inst.granted, "gpus", ())
        return TaskCall(
            run_id=self.run_id,
            pipeline=self.graph.name,
            task_id=node.id,
            map_index=inst.map_index,
            attempt=inst.attempt,
            fn=node.fn,
            fn_key=node.fn_key,
            inputs=inst.inputs if inst.inputs is not None else {},
            call_kinds=node.call_kinds,
            timeout_s=node.options.timeout_s,
            env={"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {},
            log_path=attempt_log_path(self.logs_dir, self.run_id, node.id, inst.map_index,
                                      inst.attempt),
            artifact_root=self.artifact_root,
            inline_limit_bytes=self.inline_limit,
            context=self._call_context(),
            tracker=self.tracker,
            tracking_info=self.tracking_info,
            requirements=node.options.requirements,
            python=node.options.python,
            resources=_resources_of(node) if not self.local_resources else {},
        )

    def _call_context(self) -> dict[str, Any]:
        """What get_context() shows of the run, built again only when the run record was
        replaced."""
        run = self.run
        of = self._context_of
        if of is not None and of[0] is run and of[1] is self.secrets and self._context:
            return self._context
        ctx: dict[str, Any] = {
            "logical_date": run.logical_date,
            "data_interval": (
                (run.data_interval_start, run.data_interval_end)
                if run.data_interval_start
                else None
            ),
            "params": run.params,
        }
        trigger = run.extra.get("trigger")
        if trigger is not None:  # what started a scheduled, asset, sensor or event run
            ctx["extra"] = {"trigger": trigger}
        if self.secrets is not None:
            ctx["secrets"] = self.secrets
        self._context, self._context_of = ctx, (run, self.secrets)
        return ctx

    # --- outcomes ------------------------------------------------------------------------
    def _fold(self, out: TaskOutcome) -> None:
        inst = self.in_flight.pop((out.task_id, out.map_index), None)
        if inst is None or out.attempt != inst.attempt:
            log.debug("run %s: stale outcome for %s ignored", self.run_id, out.task_id)
            return
        if inst.node.options.sensor is not None:
            if self._sensor_waits(inst, out):
                return
            # The attempt began at poke 1, and earlier pokes may have written its log.
            out = replace(out, started_at=inst.started_at,
                          log_path=out.log_path or self._existing_log(inst))
        if inst.granted is not None:
            self.admission.release(inst.node, inst.granted)
            inst.granted = None
        inst.started_at = out.started_at or inst.started_at
        inst.ended_at = out.ended_at or clock.now()
        inst.worker = out.worker
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        if (inst.ended_at - inst.started_at).total_seconds() >= GROUP_COMMIT_MAX_TASK_S:
            self._must_flush = True
        for name, metric_value, kind in out.metrics:
            self.batch.metrics.append(
                MetricRecord(run_id=self.run_id, task_id=inst.node.id, map_index=inst.map_index,
                             attempt=inst.attempt, name=name, value=metric_value, kind=kind,
                             at=inst.ended_at)
            )
        if out.ok and out.metrics and inst.cache_detail is not None and self.cache is not None:
            self.cache.settle(inst, out.metrics)  # keyed by the env lock it ran with
        if not out.ok and self._cancel.is_set():
            self.active.cancel_reason = self._cancel_reason  # a cancelled attempt: no retry
        state = self.active.judge(inst, out)
        self._attempt_done(inst, state, out)
        if state is S.SUCCESS:
            self._succeeded(inst)
            self.active.finished(inst, inst.chosen)
        elif state is S.FAILED:
            self.active.conclude(inst)
        elif state is S.UP_FOR_RETRY:
            delay = inst.retry_in_s
            heapq.heappush(self.retry_heap, (time.monotonic() + delay, next(self._seq), inst))
            log.info("run %s: %s failed (attempt %d), retrying in %.3g s: %s", self.run_id,
                     inst.label, inst.attempt, delay, inst.reason)
            self.callbacks.add(inst.node.options.on_retry, self._cb_ctx(inst, S.UP_FOR_RETRY))

    def _load_output(self, ref: ValueRef) -> Any:
        from cadenza.artifacts.store import load_value

        return load_value(ref, root=self.artifact_root)

    # --- ending --------------------------------------------------------------------------
    def _cancel_everything(self, reason: str, *,
                           run_state: RunState = RunState.CANCELLED) -> None:
        """Stop: every unfinished task instance ends cancelled, and the run `run_state`."""
        active = self.active
        for key, inst in list(self.in_flight.items()):
            try:
                self._executor_of(inst).cancel(self.run_id, inst.node.id, inst.map_index)
            except Exception as exc:  # noqa: BLE001 - keep cancelling the others
                log.warning("run %s: could not cancel %s: %s", self.run_id, inst.label, exc)
            if inst.node.options.sensor is not None:
                # A poke changes nothing: do not wait for it (it may sit in a blocking call).
                del self.in_flight[key]
                inst.ended_at = clock.now()
                self._attempt_done(inst, S.CANCELLED, None)
                active.cancel(inst, reason=reason)
        # The outcomes already here are taken first, without waiting: on inline, a call that
        # returned just before the interrupt (or the cancel) has its outcome queued, and it
        # is recorded as what it was, not as cancelled. Inline's interrupted call died with
        # the interrupt itself: no other outcome will come; other executors' do.
        deadline = time.monotonic() + (0.0 if self.runs_in_caller else 10.0)
        while self.in_flight:
            left = deadline - time.monotonic()
            try:
                out = self.outcomes.get(timeout=left) if left > 0 else \
                    self.outcomes.get_nowait()
            except queue.Empty:
                break
            if out is None:
                continue
            if out.ok:
                # It finished before the stop reached it: recorded as any success is
                # (metrics, lineage, asset events, on_success hooks), not cancelled.
                self._fold(out)
                continue
            gone = self.in_flight.pop((out.task_id, out.map_index), None)
            if gone is None:
                continue
            inst = gone
            if inst.granted is not None:
                self.admission.release(inst.node, inst.granted)
                inst.granted = None
            inst.ended_at = out.ended_at or clock.now()
            inst.error = out.error
            self._attempt_done(inst, S.CANCELLED, out)
            active.cancel(inst, reason=reason)
        for inst in list(self.in_flight.values()):
            if inst.granted is not None:
                self.admission.release(inst.node, inst.granted)
            self._attempt_done(inst, S.CANCELLED, None)
            active.cancel(inst, reason=reason)
        self.in_flight.clear()
        for inst in active.instances():
            if inst.state is S.RUNNING and inst.node.options.sensor is not None:
                inst.ended_at = clock.now()  # a sensor between two pokes
                self._attempt_done(inst, S.CANCELLED, None)
        active.stop(reason, run_state=run_state)
        self.retry_heap.clear()

    def _finish(self, error: str | None = None) -> RunState:
        state = self.active.run_state()
        if state is RunState.RUNNING:
            state = RunState.FAILED
            error = error or "the run stopped with unfinished task instances"
        if self.run.state.is_final:  # a second _finish after the first one's write failed
            state = self.run.state

        self._end_tracking(state)
        now = clock.now()
        if self.run.state is state:
            self.run = replace(self.run, ended_at=now, error=error, driver_id=None)
        else:
            self.run = move_run(self.run, state, ended_at=now, error=error, driver_id=None)
        self.batch.run_updates.append(self.run)
        hooks = self.pipeline_callbacks.get(
            "on_success" if state is RunState.SUCCESS else "on_failure", ())
        if hooks:
            first_error = next((inst.error for ns in self.nodes.values()
                                for inst in (ns.summary, *ns.children)
                                if inst.state is S.FAILED and inst.error is not None), None)
            self.callbacks.add(hooks, CallbackContext(
                pipeline=self.graph.name, run_id=self.run_id, task_id=None, map_index=-1,
                attempt=0, state=state, error=first_error))
        self._flush()
        self.callbacks.run_all()
        return state

    def _flush(self, *, callbacks: bool = True, synchronous: bool = True,
               defer_starts: bool = False, meanwhile: Callable[[], object] | None = None
               ) -> None:
        """Commit what changed. `defer_starts` (see `_should_flush`): a stored instance that
        is RUNNING stays in `dirty` for the next commit, which comes at the latest
        GROUP_COMMIT_S after the first start left out.

        `meanwhile`: work the store may do while the commit is on its way (at most once;
        `_admit_and_commit`). What it changes is not in this commit: it stays dirty and
        uncommitted, for the next one, like a start left out. It must not add rows to
        `self.batch` (admission adds none)."""
        batch = self.batch
        batch.synchronous = synchronous
        dirty = self.dirty
        kept: list[tuple[int, Instance]] = []
        if dirty:
            # An instance whose earlier attempt ends in this commit (a retry that started
            # again) is written with it: its row's attempt never lags its attempts' rows,
            # which resume relies on (it records a stored RUNNING row's attempt as
            # interrupted).
            ended = ({(a.task_id, a.map_index) for a in batch.attempts}
                     if defer_starts and batch.attempts else ())
            for key, inst in dirty.items():
                if (defer_starts and inst.persisted and inst.state in _STARTING
                        and (inst.node.id, inst.map_index) not in ended):
                    kept.append((key, inst))
                    continue
                rec = inst.record(self.run_id)
                if inst.persisted:
                    batch.task_instance_updates.append(rec)
                else:
                    inst.persisted = True
                    batch.new_task_instances.append(rec)
            dirty.clear()
        uncommitted = self._uncommitted
        if batch:
            if meanwhile is None:
                self.store.write(batch)
                uncommitted.clear()
            else:
                ends = list(uncommitted)
                self.store.write(batch, meanwhile=meanwhile)
                uncommitted.difference_update(ends)
            # kept for the run's end when the write failed
            self.batch = WriteBatch(fence=self._fence)
        else:
            uncommitted.clear()
            if meanwhile is not None:
                meanwhile()
        if kept:
            dirty.update(kept)
        if dirty:  # starts left out, and what `meanwhile` changed
            keys = set(dirty)
            if self._deferred_since is None or self._deferred.isdisjoint(keys):
                self._deferred_since = time.monotonic()  # all left out just now
            self._deferred = keys
            self._dirty_since = self._deferred_since
        else:
            self._deferred_since = self._dirty_since = None
        self._must_flush = False
        if callbacks and self.callbacks:
            self.callbacks.run_all()

    # --- used by the cache (issue: data passing) ------------------------------------------
    def serve_cached(self, inst: Instance, output: ValueRef, origin: dict[str, Any]) -> None:
        self.active.cached(inst, output, origin)


def interrupted(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, TaskCancelled))


def _resources_of(node: Any) -> dict[str, float]:
    """A task's `resources=` as TaskCall.resources (for an executor that places them)."""
    res = node.options.resources
    if res.is_empty:
        return {}
    out = {"cpu": res.cpu, "gpu": float(res.gpu), "memory": float(res.memory_bytes)}
    out.update(res.custom)
    return {k: v for k, v in out.items() if v}
