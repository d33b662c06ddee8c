"""ActiveRun: the scheduling view of one run, and the only code that moves its states.

What belongs here: the named sets (pending instances hidden in their nodes' upstream counts,
`ready`, `ready_sensors`, what is unfinished), every task-state change of a live run (through
`core.states.transition`/`clear`), trigger rules, branch skips, retries, mapped expansion and
its summary, the cancel of what is left, and the run's end state. It is fed outcomes
(`judge` then `conclude`) and stored rows (`replay`), and it answers with the instances it
changed (`dirty`: the transitions the driver must commit) and the next ready work (`ready`).

What does not: I/O, threads and time. The driver (`engine/driver.py`) owns the loop, the
executor, the store writes, admission, sensors' polling, lineage and callbacks; resume reads
the store and hands the rows over. Clock reads go through `core.clock` only. An upstream
output that must be read to expand a mapped task is read through the `load_output` function
the owner is given (the driver's reads the artifact store).

Per-task cost matters (bench/overhead.py): the owner mutates its sets in place and returns
a state, never a list per step; the driver aliases `ready` and `dirty`.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import IllegalTransition
from cadenza.core.records import ErrorInfo, ErrorKind, TaskInstanceRecord, ValueRef
from cadenza.core.states import (
    RunState,
    TaskState,
    clear,
    is_legal,
    move_task,
    run_state_of,
    transition,
)
from cadenza.engine import rules
from cadenza.executors.base import TaskOutcome
from cadenza.graph.model import (
    ParamValue,
    PipelineGraph,
    TaskNode,
    TaskOutput,
    TriggerRule,
    substitute,
)

log = logging.getLogger(__name__)

S = TaskState
# What resume keeps: finished work whose result downstream tasks may rely on.
KEEP = frozenset({S.SUCCESS, S.CACHED, S.SKIPPED})


@dataclass(slots=True, eq=False)
class Instance:
    """The live, mutable state of one task instance (the store holds a copy)."""

    node: TaskNode
    map_index: int
    state: TaskState = S.PENDING
    attempt: int = 0
    queued_at: Any = None
    started_at: Any = None
    ended_at: Any = None
    next_retry_at: Any = None
    output: ValueRef | None = None
    error: ErrorInfo | None = None
    worker: str | None = None
    cache_key: str | None = None
    cache_detail: dict[str, Any] | None = None
    cache_origin: dict[str, Any] | None = None
    map_count: int | None = None
    reason: str = ""
    persisted: bool = False
    inputs: dict[str, Any] | None = None
    key_inputs: dict[str, Any] | None = None  # mapped elements as refs, for the cache key
    granted: Any = None  # what Admission gave it (pool slot, resources, GPU ids)
    retry_in_s: float = 0.0  # after UP_FOR_RETRY: seconds until its next attempt
    retry_base: int = 0  # attempts made before this driver took over (resume)
    free_tries: int = 0  # attempts lost with their worker that did not count (rules)
    wait_since: Any = None  # a sensor step's first poke here: its timeout counts from it
    chosen: list[str] | None = None  # a branch task's choice, once it succeeded

    @property
    def label(self) -> str:
        tid = self.node.id
        return tid if self.map_index < 0 else f"{tid}[{self.map_index}]"

    def record(self, run_id: str) -> TaskInstanceRecord:
        return TaskInstanceRecord(
            run_id=run_id,
            task_id=self.node.id,
            map_index=self.map_index,
            state=self.state,
            attempt=self.attempt,
            pool=self.node.options.pool,
            queued_at=self.queued_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            next_retry_at=self.next_retry_at,
            output=self.output,
            error=self.error,
            cache_key=self.cache_key,
            cache_origin=self.cache_origin,
            worker=self.worker,
            map_count=self.map_count,
            reason=self.reason,
            cache_detail=self.cache_detail,
        )


@dataclass(slots=True, eq=False)
class NodeState:
    """Per graph node: upstream bookkeeping and its instances."""

    node: TaskNode
    summary: Instance  # map index -1: the instance itself, or a mapped task's summary row
    counts: rules.UpstreamCounts
    data_remaining: int
    decided: bool = False
    children: list[Instance] = field(default_factory=list)
    children_left: int = 0
    blocking: frozenset[str] = frozenset()  # upstreams whose end this node waits for
    data: frozenset[str] = frozenset()  # upstreams whose outputs it takes
    forced: bool = False  # skipped by a branch


def _no_hook(inst: Instance) -> None:
    return None


class ActiveRun:
    """The scheduling view of one run. Not thread-safe: the driver's thread owns it.

    Feeding it (the driver's loop, or a test):
      - `start()` for a new run, or `replay(rows)` for a stored one; then `begin()`;
      - take work from `ready` / `ready_sensors`, `start_attempt(inst)`;
      - per outcome: `judge(inst, ...)` moves the instance itself and returns its new state;
        for a final state, `conclude(inst)` then propagates downstream (the driver does its
        I/O for the outcome in between: attempt rows, lineage, callbacks);
      - `retry_due(inst)` when an UP_FOR_RETRY instance's delay has passed;
      - `stop(reason)` to cancel what is left; `run_state()` at the end.
    After each step, `dirty` holds the instances to write and `uncommitted` the nodes whose
    end is not durable yet; the driver clears both when it has committed them.
    """

    def __init__(
        self,
        graph: PipelineGraph,
        *,
        params: dict[str, Any],
        load_output: Callable[[ValueRef], Any],
        in_process: bool = False,
    ) -> None:
        self.graph = graph
        self.params = params
        self.load_output = load_output
        self.in_process = in_process
        self.nodes: dict[str, NodeState] = {}
        self.downstream = graph.downstream()
        self.ready: deque[Instance] = deque()
        self.ready_sensors: deque[Instance] = deque()  # sensor steps due for a first poke
        self.dirty: dict[int, Instance] = {}
        self.uncommitted: set[str] = set()  # nodes whose final state is not committed yet
        self.values: dict[tuple[str, int], Any] = {}  # live outputs (in-process executors)
        self.unfinished = 0
        # How the run ends when it is stopped before its tasks decide (None: they decide).
        self.stopped_as: RunState | None = None
        self.on_failed: Callable[[Instance], None] = _no_hook  # e.g. on_failure callbacks
        self.cancel_reason: str | None = None  # set once the run is being cancelled
        self.rerun: frozenset[str] | None = None  # replay(rerun=...): the tasks retried
        for node in graph:
            blocking = frozenset(_blocking(node))
            data = frozenset(node.data_upstream)
            self.nodes[node.id] = NodeState(
                node=node,
                summary=Instance(node=node, map_index=-1, persisted=True),
                counts=rules.UpstreamCounts(total=len(blocking), remaining=len(blocking)),
                data_remaining=len(data),
                blocking=blocking,
                data=data,
            )

    # --- feeding it the store's view ---------------------------------------------------------
    def start(self, run_id: str) -> list[TaskInstanceRecord]:
        """A new run: every task instance pending. Returns the rows to insert with the run."""
        self.unfinished = len(self.nodes)
        return [ns.summary.record(run_id) for ns in self.nodes.values()]

    def replay(self, rows: Iterable[TaskInstanceRecord], *,
               rerun: frozenset[str] | None = None) -> list[TaskInstanceRecord]:
        """Load a stored run's rows; what must run again goes back to PENDING (through the
        table). Returns the rows as they were of instances a dead driver left queued or
        running (their attempts were interrupted). Call `settle_kept()` after, once any
        further `reset()` (e.g. of a broken artifact) is done.

        `rerun` None (resume): every instance not in KEEP runs again. A set of task ids (a
        retry of chosen tasks, `engine/rerun.py`): exactly those tasks run again, whatever
        their state; every other task keeps its stored final state, failed ones included,
        and its end reaches its downstream as if it had just ended."""
        self.rerun = rerun
        by_key = {(r.task_id, r.map_index): r for r in rows}
        interrupted: list[TaskInstanceRecord] = []
        for ns in self.nodes.values():
            row = by_key.get((ns.node.id, -1))
            if row is None:
                continue
            again = self._runs_again(ns.node.id, row.state)
            self._adopt(ns.summary, row, interrupted, again=again)
            if ns.node.is_mapped and row.map_count is not None:
                children = []
                for i in range(row.map_count):
                    child = Instance(node=ns.node, map_index=i)
                    child_row = by_key.get((ns.node.id, i))
                    if child_row is not None:
                        self._adopt(child, child_row, interrupted,
                                    again=self._runs_again(ns.node.id, child_row.state))
                    children.append(child)
                ns.children = children
        return interrupted

    def _runs_again(self, task_id: str, state: TaskState) -> bool:
        if self.rerun is None:
            return state not in KEEP
        return task_id in self.rerun

    def _adopt(self, inst: Instance, row: TaskInstanceRecord,
               interrupted: list[TaskInstanceRecord], *, again: bool) -> None:
        inst.state = row.state  # the stored state, as it was committed: not a move
        inst.attempt = inst.retry_base = row.attempt
        inst.queued_at, inst.started_at, inst.ended_at = row.queued_at, row.started_at, row.ended_at
        inst.output, inst.error, inst.worker = row.output, row.error, row.worker
        inst.cache_key, inst.cache_origin = row.cache_key, row.cache_origin
        inst.map_count, inst.cache_detail = row.map_count, row.cache_detail
        inst.persisted = True
        if row.state in (S.RUNNING, S.QUEUED) and row.attempt > 0 and row.map_count is None:
            interrupted.append(row)
        if again:
            self.reset(inst, reason="resumed" if self.rerun is None else "retried")

    def reset(self, inst: Instance, *, reason: str) -> None:
        """`inst` runs again: back to PENDING, its result forgotten."""
        if inst.state is not S.PENDING:
            if inst.state.is_final:
                clear(inst.node.id, inst.map_index, inst.state, reason=reason)
            else:
                transition(inst.node.id, inst.map_index, inst.state, S.PENDING, reason=reason)
            inst.state = S.PENDING
        inst.output = None
        inst.error = None
        inst.ended_at = None
        inst.next_retry_at = None
        inst.reason = reason
        self.dirty[id(inst)] = inst

    def settle_kept(self) -> None:
        """After `replay`: what was kept is decided, and its end reaches its downstream."""
        if self.rerun is None:
            kept = [ns for ns in self.nodes.values() if ns.summary.state in KEEP]
        else:
            kept = [ns for ns in self.nodes.values()
                    if ns.node.id not in self.rerun and ns.summary.state.is_final]
        for ns in kept:
            ns.decided = True
        self.unfinished = len(self.nodes) - len(kept)
        for ns in kept:
            self._propagate(ns, _branch_choice_of(ns))

    def begin(self) -> None:
        """Decide the tasks without upstreams (after `start` or `replay`)."""
        for ns in self.nodes.values():
            if not ns.decided and ns.counts.total == 0:
                self._decide(ns)

    # --- the moves -----------------------------------------------------------------------
    def move(self, inst: Instance, new: TaskState, *, reason: str = "") -> None:
        # The table's check without `transition()`'s Transition record and clock read,
        # which nothing here keeps (4 moves per chained task: ~6% of the driver's bytecodes).
        if not is_legal(inst.state, new):
            raise IllegalTransition(inst.node.id, inst.map_index, inst.state, new)
        inst.state = new
        if reason:
            inst.reason = reason
        self.dirty[id(inst)] = inst

    def start_attempt(self, inst: Instance) -> None:
        """A SCHEDULED instance is handed to the executor: its next attempt begins."""
        now = clock.now()
        inst.attempt += 1
        inst.queued_at = now
        inst.started_at = now
        if inst.wait_since is None and inst.node.options.sensor is not None:
            inst.wait_since = now  # kept across retries: they do not extend the wait
        inst.ended_at = None
        inst.error = None
        inst.next_retry_at = None
        inst.reason = ""  # why it waited ("retry delay passed") no longer holds
        self.move(inst, S.QUEUED)
        self.move(inst, S.RUNNING)

    def judge(self, inst: Instance, out: TaskOutcome) -> TaskState:
        """An attempt of `inst` ended with `out`: move it and return its new state.

        1. ok, not a branch -> SUCCESS.
        2. ok, a branch whose value names its direct downstream tasks -> SUCCESS (the choice
           is kept in `inst.chosen`); any other value -> FAILED (kind "branch").
        3. failed with a cancel while the run is being cancelled (`cancel_reason` set) ->
           CANCELLED: the rest is cancelled by `stop()`, not called upstream_failed.
        4. failed, and `rules.should_retry` says so -> UP_FOR_RETRY (`inst.retry_in_s`); the
           first attempt of an instance lost with its worker does not count against its
           retries (`rules.lost_worker_is_free`).
        5. failed otherwise -> FAILED.
        For SUCCESS and FAILED call `conclude(inst)` next (after writing what the outcome
        carries); CANCELLED and UP_FOR_RETRY need nothing more.
        """
        if out.ok:
            output = out.output
            if out.has_value:
                self.values[(inst.node.id, inst.map_index)] = out.value
            inst.output = output
            if inst.node.options.is_branch:
                value = out.value
                if not out.has_value and output is not None and output.kind == "json":
                    value = output.value
                chosen, err = rules.branch_choice(value, self.downstream[inst.node.id])
                if chosen is None:
                    self._fail_state(inst, ErrorInfo(
                        kind=ErrorKind.BRANCH, type="cadenza.core.errors.TaskFailed", message=err))
                    return S.FAILED
                inst.chosen = chosen
            self.move(inst, S.SUCCESS)
            return S.SUCCESS
        error = out.error or ErrorInfo(kind=ErrorKind.EXCEPTION, type="Exception", message="failed")
        if error.kind == ErrorKind.INPUT:
            run_id = out.run_id
            producers = ", ".join(f"'{u}'" for u in inst.node.data_upstream) or "none"
            error = ErrorInfo(
                kind=ErrorKind.INPUT, type=error.type, traceback=error.traceback,
                type_mro=error.type_mro,
                message=f"{error.message} (produced by task {producers} of run {run_id}; "
                f"resume the run to compute it again: cadenza resume {run_id})",
            )
        inst.error = error
        if error.kind == ErrorKind.CANCELLED and self.cancel_reason is not None:
            self.move(inst, S.CANCELLED, reason=self.cancel_reason)
            return S.CANCELLED
        if rules.lost_worker_is_free(error, inst.free_tries):
            inst.free_tries += 1
        tries = inst.attempt - inst.retry_base - inst.free_tries
        if rules.should_retry(inst.node.options, tries, error):
            delay = rules.retry_delay_s(inst.node.options, tries)
            inst.retry_in_s = delay
            inst.next_retry_at = clock.now() + timedelta(seconds=delay)
            self.move(inst, S.UP_FOR_RETRY, reason=error.first_line())
            return S.UP_FOR_RETRY
        self._fail_state(inst, error)
        return S.FAILED

    def conclude(self, inst: Instance) -> None:
        """`inst` reached SUCCESS, CACHED or FAILED: tell its node and, through it, downstream."""
        if inst.state is S.FAILED:
            self.on_failed(inst)
        self.finished(inst, inst.chosen)

    def cached(self, inst: Instance, output: ValueRef, origin: dict[str, Any]) -> None:
        """Served from the cache: CACHED, and a cached branch repeats its recorded choice."""
        inst.output = output
        inst.cache_origin = origin
        inst.ended_at = clock.now()
        if inst.node.options.is_branch:
            chosen, _ = rules.branch_choice(self._load(inst), self.downstream[inst.node.id])
            inst.chosen = chosen or []
        self.move(inst, S.CACHED)
        self.finished(inst, inst.chosen)

    def fail(self, inst: Instance, error: ErrorInfo) -> None:
        """`inst` fails without an attempt's outcome (it can never be admitted, its sensor
        timed out): FAILED, and downstream learns of it."""
        self._fail_state(inst, error)
        self.on_failed(inst)
        self.finished(inst, None)

    def _fail_state(self, inst: Instance, error: ErrorInfo) -> None:
        inst.error = error
        inst.ended_at = inst.ended_at or clock.now()
        if inst.state is S.PENDING:
            self.move(inst, S.SCHEDULED)
        if inst.state is not S.FAILED:
            self.move(inst, S.FAILED, reason=error.first_line())

    def retry_due(self, inst: Instance) -> None:
        """An UP_FOR_RETRY instance's delay has passed: it is ready again."""
        self.move(inst, S.SCHEDULED, reason="retry delay passed")
        self._make_ready(inst)

    def cancel(self, inst: Instance, *, reason: str) -> None:
        """One instance ends cancelled (its attempt stopped while the run is stopping)."""
        self.move(inst, S.CANCELLED, reason=reason)

    def stop(self, reason: str, *, run_state: RunState = RunState.CANCELLED) -> None:
        """Every unfinished instance ends cancelled, nothing is ready, and the run will end
        `run_state` (CANCELLED when asked to stop, FAILED when it could not go on)."""
        self.stopped_as = run_state
        for ns in self.nodes.values():
            for inst in (ns.summary, *ns.children):
                if not inst.state.is_final:
                    self.move(inst, S.CANCELLED, reason=reason)
        self.unfinished = 0
        self.ready.clear()
        self.ready_sensors.clear()

    def fail_stuck(self) -> None:
        """Nothing runs, nothing is ready, yet tasks are unfinished: say why, per task."""
        for ns in self.nodes.values():
            if ns.decided or ns.summary.state.is_final:
                continue
            self._settle(ns, S.UPSTREAM_FAILED, reason="its upstream tasks never finished")

    def instances(self) -> Iterable[Instance]:
        for ns in self.nodes.values():
            yield ns.summary
            yield from ns.children

    def run_state(self) -> RunState:
        """The run's state now: RUNNING while anything is unfinished, then its end."""
        if self.stopped_as is not None:
            return self.stopped_as
        return run_state_of([inst.state for ns in self.nodes.values()
                             for inst in (ns.summary, *ns.children)])

    # --- propagation ---------------------------------------------------------------------
    def finished(self, inst: Instance, branch: list[str] | None) -> None:
        """`inst` reached a final state (`branch`: what a branch chose): tell its node and,
        through it, downstream. `conclude()` calls it; the driver calls it directly after a
        success (one call less per task)."""
        ns = self.nodes[inst.node.id]
        self.uncommitted.add(ns.node.id)
        if inst.map_index >= 0:
            ns.children_left -= 1
            if ns.children_left == 0:
                self._close_mapped(ns)
            return
        self.unfinished -= 1
        self._propagate(ns, branch)

    def _propagate(self, ns: NodeState, branch: list[str] | None) -> None:
        state = ns.summary.state
        nid = ns.node.id
        for down_id in self.downstream[nid]:
            d = self.nodes[down_id]
            if d.decided:
                continue
            if branch is not None and down_id not in branch:
                d.forced = True
                self._settle(d, S.SKIPPED, reason=f"not chosen by branch '{nid}'")
                continue
            if nid in d.blocking:
                d.counts.add(state)
            if nid in d.data:
                d.data_remaining -= 1
            self._decide(d)

    def _decide(self, ns: NodeState) -> None:
        decision = rules.evaluate(ns.node.options.trigger_rule, ns.counts)
        if decision is rules.Decision.WAIT:
            return
        if decision is rules.Decision.SKIP:
            self._settle(ns, S.SKIPPED, reason="skipped by trigger rule "
                         f"'{ns.node.options.trigger_rule}'")
            return
        if decision is rules.Decision.UPSTREAM_FAILED:
            self._settle(ns, S.UPSTREAM_FAILED, reason="an upstream task failed")
            return
        if ns.data_remaining > 0:
            return  # the rule allows it, but an input is not there yet
        ns.decided = True
        if ns.node.is_mapped:
            self._expand(ns)
        else:
            self.move(ns.summary, S.SCHEDULED)
            self._make_ready(ns.summary)

    def _settle(self, ns: NodeState, state: TaskState, *, reason: str) -> None:
        ns.decided = True
        self.uncommitted.add(ns.node.id)
        inst = ns.summary
        inst.ended_at = clock.now()
        self.move(inst, state, reason=reason)
        self.unfinished -= 1
        self._propagate(ns, None)

    def _make_ready(self, inst: Instance) -> None:
        (self.ready if inst.node.options.sensor is None else self.ready_sensors).append(inst)

    # --- mapping -------------------------------------------------------------------------
    def _expand(self, ns: NodeState) -> None:
        node = ns.node
        axes: list[list[tuple[Any, TaskState | None, Any]]] = []
        try:
            for name in node.mapped:
                axes.append(self._axis(node.args[name]))
        except Exception as exc:  # noqa: BLE001 - becomes the task's error
            self.move(ns.summary, S.SCHEDULED)
            self.fail(ns.summary, ErrorInfo(
                kind=ErrorKind.INPUT, type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                message=f"cannot expand task '{node.id}': {exc}"))
            return
        combos = list(itertools.product(*axes)) if axes else []
        summary = ns.summary
        summary.map_count = len(combos)
        if not combos:
            summary.output = ValueRef(kind="json", value=[])
            self.move(summary, S.SUCCESS, reason="expanded over an empty list")
            summary.ended_at = clock.now()
            self.unfinished -= 1
            self._propagate(ns, None)
            return
        self.move(summary, S.RUNNING, reason=f"expanded into {len(combos)} instances")
        summary.started_at = clock.now()
        fixed = {k: substitute(v, self.input_for) for k, v in node.args.items()
                 if k not in node.mapped}
        previous = ns.children if len(ns.children) == len(combos) else []
        children: list[Instance] = []
        for i, combo in enumerate(combos):
            if previous:  # resumed: keep the instances that finished, rerun the others
                inst = previous[i]
                if inst.state.is_final:
                    children.append(inst)
                    continue
            else:
                inst = Instance(node=node, map_index=i)
            inputs = dict(fixed)
            key_inputs: dict[str, Any] = {}
            bad: TaskState | None = None
            for name, (value, elem_state, key_value) in zip(node.mapped, combo, strict=True):
                inputs[name] = value
                key_inputs[name] = key_value
                if elem_state is not None and not elem_state.is_ok:
                    if elem_state is S.SKIPPED and bad is None:
                        bad = S.SKIPPED
                    else:
                        bad = S.UPSTREAM_FAILED
            inst.inputs = inputs
            inst.key_inputs = key_inputs
            children.append(inst)
            if bad is not None:
                inst.ended_at = clock.now()
                self.move(inst, bad, reason="its element of the upstream mapped task "
                          "did not succeed")
            else:
                self.move(inst, S.SCHEDULED)
                self._make_ready(inst)
        ns.children = children
        ns.children_left = sum(1 for c in children if not c.state.is_final)
        if ns.children_left == 0:
            self._close_mapped(ns)

    def _close_mapped(self, ns: NodeState) -> None:
        summary = ns.summary
        state = rules.summarize_mapped([c.state for c in ns.children])
        if summary.state is not state:
            self.move(summary, state)
        summary.ended_at = clock.now()
        self.unfinished -= 1
        self._propagate(ns, None)

    def _axis(self, value: Any) -> list[tuple[Any, TaskState | None, Any]]:
        """The elements one mapped argument ranges over: (value to pass, producer's state,
        value for the cache key: the stored ref when the element is an upstream output)."""
        if type(value) is TaskOutput:
            up = self.nodes[value.task_id]
            if up.node.is_mapped:
                return [(self.value_of(c), c.state, c.output) for c in up.children]
            items = self._load(up.summary)
            if not isinstance(items, (list, tuple)):
                raise TypeError(
                    f"expand() needs a list, but task '{value.task_id}' returned "
                    f"{type(items).__name__}; return a list from '{value.task_id}'"
                )
            return [(item, None, item) for item in items]
        if type(value) is ParamValue:
            items = self.params[value.name]
            if not isinstance(items, (list, tuple)):
                raise TypeError(f"expand() needs a list, but parameter '{value.name}' is "
                                f"{type(items).__name__}")
            return [(item, None, item) for item in items]
        items = substitute(value, self.input_for)
        return [(item, None, item) for item in items]

    # --- values --------------------------------------------------------------------------
    def _load(self, inst: Instance) -> Any:
        key = (inst.node.id, inst.map_index)
        if key in self.values:
            return self.values[key]
        if inst.output is None:
            return None
        return self.load_output(inst.output)

    def input_for(self, marker: TaskOutput | ParamValue) -> Any:
        """What a task receives for one marker in its arguments."""
        if isinstance(marker, ParamValue):
            return self.params[marker.name]
        ns = self.nodes[marker.task_id]
        if ns.node.is_mapped:
            return [self.value_of(c) for c in ns.children]
        return self.value_of(ns.summary)

    def stored_input_for(self, marker: TaskOutput | ParamValue) -> Any:
        """`input_for` without live values: what a task running in its own environment
        receives (`@task(requirements=...)`). Its libraries may not unpickle this process's
        objects (a pandas 3 frame in a pandas 2 environment); the stored bytes they read."""
        if isinstance(marker, ParamValue):
            return self.params[marker.name]
        ns = self.nodes[marker.task_id]
        if ns.node.is_mapped:
            return [c.output if c.state.is_ok else None for c in ns.children]
        return ns.summary.output if ns.summary.state.is_ok else None

    def value_of(self, inst: Instance) -> Any:
        if not inst.state.is_ok or inst.output is None:
            return None
        if self.in_process and inst.output.kind != "json":
            key = (inst.node.id, inst.map_index)
            if key in self.values:
                return self.values[key]
        return inst.output


def _blocking(node: TaskNode) -> tuple[str, ...]:
    if node.options.trigger_rule is TriggerRule.ALWAYS:
        return node.data_upstream
    return node.upstream


def _branch_choice_of(ns: NodeState) -> list[str] | None:
    """A kept branch task's choice, as recorded in its output."""
    if not ns.node.options.is_branch or ns.summary.state is not S.SUCCESS:
        return None
    out = ns.summary.output
    value = out.value if out is not None and out.kind == "json" else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def cancel_rows(rows: Iterable[TaskInstanceRecord], *, reason: str) -> list[TaskInstanceRecord]:
    """For a run no driver holds: its unfinished rows moved to CANCELLED (through the
    table), ended now. The rows of `api.fail_run` and of a cancel with no live driver."""
    now = clock.now()
    return [move_task(ti, S.CANCELLED, reason=reason, ended_at=now)
            for ti in rows if not ti.state.is_final]
