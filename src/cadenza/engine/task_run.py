"""One step of a compiled Kubeflow pipeline: `cadenza task-run` (graph/kfp.py emits the calls).

What belongs here: running one task instance the way a cluster step does (its inputs are the
references its upstream steps output; it writes its output to the artifact store and its
record to a book), computing a mapped task's instances (`--expand`), and closing the run
(`--finalize`, the ExitHandler's step). What does not: parsing the command line
(cli/task_run.py), where records go (engine/step_records.py).

A step's output, handed to its downstream steps by KFP, is the JSON
`{"state": "success", "ref": {...ValueRef...}}`: the reference, never the value, and the
state the downstream steps' trigger rules read. Decisions:

1. The trigger rule is applied here, to the upstream states (from the inputs, else the
   book; a state nobody recorded is inferred as the engine would have decided it). When it
   says skip or upstream_failed, the instance is recorded so and the step succeeds: KFP only
   decides *whether to start* a step, Cadenza what it means.
2. A failed attempt with retries left is recorded `up_for_retry` and the step fails, so KFP's
   retry policy starts it again; the next attempt continues the count. A failure Cadenza
   does not retry (`retry_on` names other exceptions) is recorded `failed`, and the steps
   KFP still starts for it fail at once without running the task.
3. The run's row is created by the first step that arrives, `running`; `--finalize` records
   what never ran, the summaries of mapped tasks, and the run's final state.
4. A step KFP served from its cache did not run here and recorded nothing: the first
   downstream step records it `cached` with the output it received; `--finalize` records
   the others (sinks) `cached` when the pipeline's body succeeded.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import CadenzaError, ConfigError, TaskNotFound, UsageError
from cadenza.core.records import (
    TASK_ORDER,
    AttemptRecord,
    ErrorInfo,
    ErrorKind,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
)
from cadenza.core.settings import Settings
from cadenza.core.states import RunState, TaskState, move_run, move_task, run_state_of
from cadenza.engine import rules
from cadenza.engine.step_records import ObjectBook, StepRecord, StoreBook
from cadenza.graph.model import ParamValue, TaskNode, TaskOutput, substitute
from cadenza.graph.plan import Plan

log = logging.getLogger(__name__)
S = TaskState
Book = StoreBook | ObjectBook

CLUSTER_SCHEMES = ("s3://", "gs://", "gcs://")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    """What a step hands KFP: its output reference JSON and, for a branch, its choice."""

    state: TaskState
    ref: str
    branch: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.state in (S.FAILED, S.UP_FOR_RETRY, S.CANCELLED) else 0


def kfp_driver_id(run_id: str) -> str:
    """The driver id every step of a KFP run renews the run's lease under: the run shows as
    running, not crashed, while a step heartbeats (engine/lease.py's rule)."""
    return f"kfp:{run_id}"


def check_cluster_root(settings: Settings, pipeline: str) -> None:
    """Steps in different pods share outputs only through object storage."""
    root = settings.artifact_root
    if not root.startswith(CLUSTER_SCHEMES):
        raise ConfigError(
            f"the artifact root is {root}, a folder only this pod can see: the steps of a "
            "compiled pipeline pass their outputs through object storage",
            pipeline=pipeline,
            hint="set CADENZA_ARTIFACT_ROOT=s3://bucket/prefix (or gs://bucket/prefix) in "
            "the image or the step's environment, with pip install 'cadenza[s3]' / "
            "'cadenza[gcs]'")
    from cadenza.engine.api import check_artifact_root

    check_artifact_root(settings, pipeline)


def node_of(plan: Plan, task_id: str) -> TaskNode:
    if task_id not in plan.graph.nodes:
        from cadenza.core.suggest import did_you_mean

        names = list(plan.graph.nodes)
        raise TaskNotFound(f"no task '{task_id}'." + did_you_mean(task_id, names),
                           pipeline=plan.name, hint=f"tasks of this pipeline: {', '.join(names)}")
    return plan.graph.nodes[task_id]


# -- inputs -------------------------------------------------------------------------------------
def parse_params(plan: Plan, raw: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--param NAME=TEXT` as KFP renders them (strings as they are, anything else as JSON),
    validated against the pipeline's parameters."""
    specs = {p.name: p for p in plan.parameters.specs}
    given: dict[str, Any] = {}
    for name, text in raw.items():
        spec = specs.get(name)
        if spec is not None and spec.annotation is str:
            given[name] = text
            continue
        try:
            given[name] = json.loads(text)
        except ValueError:
            given[name] = text
    return plan.validate_params(given)


def _unwrap(item: Any) -> tuple[TaskState | None, ValueRef | None]:
    if isinstance(item, str):
        item = json.loads(item) if item.strip() else None
    if not isinstance(item, dict):
        return None, None
    state = TaskState(item["state"]) if item.get("state") else None
    ref = item.get("ref")
    return state, ValueRef.from_json(ref) if isinstance(ref, dict) else None


@dataclass(slots=True)
class _Upstream:
    state: TaskState | None
    value: Any  # a ValueRef, a list of them (a mapped upstream), or None
    elements: list[tuple[TaskState | None, ValueRef | None]] | None = None


def parse_inputs(plan: Plan, node: TaskNode, raw: Mapping[str, str]) -> dict[str, _Upstream]:
    """`--input UPSTREAM=JSON`: the output of each data upstream's step (a list of them for a
    mapped upstream, collected by KFP in map order). An empty value: the step produced none."""
    out: dict[str, _Upstream] = {}
    for up, text in raw.items():
        if up not in node.data_upstream:
            raise UsageError(f"--input {up}: '{up}' is not an upstream task whose output "
                             f"'{node.id}' reads", pipeline=plan.name, task=node.id,
                             hint=f"its data upstreams: {', '.join(node.data_upstream) or '-'}")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise UsageError(f"--input {up}: not the JSON a cadenza step outputs: {exc}",
                             pipeline=plan.name, task=node.id,
                             hint="pass the upstream step's 'ref' output unchanged") from exc
        if plan.graph.nodes[up].is_mapped:
            items = [_unwrap(i) for i in (data or [])]
            states = [s or S.SUCCESS for s, _ in items]
            out[up] = _Upstream(state=rules.summarize_mapped(states) if data is not None
                                else None, value=[r for _, r in items], elements=items)
        else:
            state, ref = _unwrap(data)
            out[up] = _Upstream(state=state, value=ref)
    return out


# -- states -------------------------------------------------------------------------------------
def infer_states(plan: Plan, rows: list[TaskInstanceRecord]) -> dict[str, TaskState | None]:
    """Each task's state from the recorded instances; for a task nobody recorded, what the
    engine would have decided from its upstreams (skipped by a branch or a rule, or
    upstream_failed); None when it should have run (or is still running)."""
    summary = {r.task_id: r for r in rows if r.map_index < 0}
    children: dict[str, list[TaskInstanceRecord]] = {}
    for r in rows:
        if r.map_index >= 0:
            children.setdefault(r.task_id, []).append(r)
    down = plan.graph.downstream()
    states: dict[str, TaskState | None] = {}
    for tid in plan.topological_ids():
        node = plan.graph.nodes[tid]
        row = summary.get(tid)
        kids = children.get(tid, [])
        if row is not None and row.state.is_final:
            states[tid] = row.state
            continue
        if row is not None and row.map_count == 0:  # expanded over an empty list
            states[tid] = S.SUCCESS
            continue
        if row is not None and row.map_count is not None and len(kids) < row.map_count:
            states[tid] = None  # instances still to come
            continue
        if kids:
            states[tid] = (rules.summarize_mapped([k.state for k in kids])
                           if all(k.state.is_final for k in kids) else None)
            continue
        skipped = False
        for up in node.upstream:
            up_node = plan.graph.nodes[up]
            if up_node.options.is_branch and states.get(up) is S.SUCCESS and tid in down[up]:
                choice = _choice(summary.get(up))
                if choice is not None and tid not in choice:
                    skipped = True
        if skipped:
            states[tid] = S.SKIPPED
            continue
        ups = [states.get(u) for u in node.upstream]
        if any(s is None for s in ups):
            states[tid] = None
            continue
        counts = rules.UpstreamCounts(total=len(ups), remaining=len(ups))
        for s in ups:
            if s is not None:
                counts.add(s)
        decision = rules.evaluate(node.options.trigger_rule, counts)
        states[tid] = (S.SKIPPED if decision is rules.Decision.SKIP else
                       S.UPSTREAM_FAILED if decision is rules.Decision.UPSTREAM_FAILED else None)
    return states


def _choice(row: TaskInstanceRecord | None) -> list[str] | None:
    if row is None or row.output is None or row.output.kind != "json":
        return None
    value = row.output.value
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _decide(plan: Plan, node: TaskNode, inputs: Mapping[str, _Upstream], book: Book,
            run_id: str) -> rules.Decision:
    """The trigger rule applied to the upstream states (see the module docstring, 1)."""
    if not node.upstream:
        return rules.Decision.RUN
    known = {u: up.state for u, up in inputs.items() if up.state is not None}
    missing = [u for u in node.upstream if u not in known]
    if missing:
        inferred = infer_states(plan, book.instances(run_id))
        completed = node.options.trigger_rule.value in (
            "all_done", "always", "one_success", "one_failed", "all_failed")
        for u in missing:
            state = inferred.get(u)
            # Nobody recorded it: KFP started this step, so under its default strategy the
            # upstream step succeeded (it may have been served from KFP's cache); under
            # ALL_UPSTREAM_TASKS_COMPLETED it may as well never have run.
            known[u] = state or (S.UPSTREAM_FAILED if completed else S.SUCCESS)
    counts = rules.UpstreamCounts(total=len(node.upstream), remaining=len(node.upstream))
    for u in node.upstream:
        counts.add(known[u])
    decision = rules.evaluate(node.options.trigger_rule, counts)
    return rules.Decision.RUN if decision is rules.Decision.WAIT else decision


# -- expansion ----------------------------------------------------------------------------------
def _axes(plan: Plan, node: TaskNode, values: Mapping[str, Any], inputs: Mapping[str, _Upstream],
          root: str) -> list[list[Any]]:
    from cadenza.artifacts.store import load_value

    axes: list[list[Any]] = []
    for name in node.mapped:
        arg = node.args[name]
        if type(arg) is TaskOutput:
            up = inputs.get(arg.task_id)
            if up is None:
                raise UsageError(f"the output of '{arg.task_id}' was not given",
                                 pipeline=plan.name, task=node.id,
                                 hint=f"pass --input {arg.task_id}=<its step's ref output>")
            if plan.graph.nodes[arg.task_id].is_mapped:
                axes.append(list(up.value))
                continue
            items = None if up.value is None else load_value(up.value, root=root)
            if not isinstance(items, (list, tuple)):
                raise UsageError(f"expand() needs a list, but task '{arg.task_id}' returned "
                                 f"{type(items).__name__}", pipeline=plan.name, task=node.id,
                                 hint=f"return a list from '{arg.task_id}'")
            axes.append(list(items))
        elif type(arg) is ParamValue:
            items = values[arg.name]
            if not isinstance(items, (list, tuple)):
                raise UsageError(f"expand() needs a list, but parameter '{arg.name}' is "
                                 f"{type(items).__name__}", pipeline=plan.name, task=node.id,
                                 hint=f"pass a list for --param {arg.name}")
            axes.append(list(items))
        else:
            axes.append(list(substitute(arg, lambda m: _lookup(m, values, inputs))))
    return axes


def _lookup(marker: Any, values: Mapping[str, Any], inputs: Mapping[str, _Upstream]) -> Any:
    if type(marker) is ParamValue:
        return values[marker.name]
    up = inputs.get(marker.task_id)
    return None if up is None else up.value


def expand_indices(plan: Plan, task_id: str, *, params: Mapping[str, str],
                   inputs: Mapping[str, str], settings: Settings, run_id: str | None = None,
                   book: Book | None = None) -> list[int]:
    """The map indices of mapped task `task_id` (what its ParallelFor iterates over). With a
    book, the task's summary row is recorded `running` with its instance count (`success`
    at once for an empty expansion, whose loop runs nothing)."""
    node = node_of(plan, task_id)
    if not node.is_mapped:
        raise UsageError(f"task '{task_id}' is not mapped (.expand)", pipeline=plan.name,
                         task=task_id, hint="--expand is for the -map step of a mapped task")
    values, _ = parse_params(plan, params)
    ups = parse_inputs(plan, node, inputs)
    count = 1
    for axis in _axes(plan, node, values, ups, settings.artifact_root):
        count *= len(axis)
    if book is not None and run_id is not None:
        now = clock.now()
        _, stored = parse_params(plan, params)
        book.ensure_run(_new_run(plan, run_id, stored, now))
        ti = move_task(TaskInstanceRecord(run_id=run_id, task_id=task_id, state=S.PENDING,
                                          pool=node.options.pool),
                       S.RUNNING, started_at=now, map_count=count,
                       reason=f"expanded into {count} instances")
        if count == 0:
            ti = move_task(ti, S.SUCCESS, ended_at=now, output=ValueRef(kind="json", value=[]),
                           reason="expanded over an empty list")
        exists = any(t.task_id == task_id and t.map_index == -1 for t in book.instances(run_id))
        book.write(StepRecord(instance=ti), exists=exists)
    return list(range(count))


def _new_run(plan: Plan, run_id: str, stored: dict[str, Any], now: Any) -> RunRecord:
    return RunRecord(run_id=run_id, pipeline=plan.name, state=RunState.RUNNING, params=stored,
                     created_at=now, started_at=now, executor="kfp", trigger="kfp",
                     source=plan.source, tags=plan.tags,
                     extra={TASK_ORDER: plan.topological_ids()},
                     driver_id=kfp_driver_id(run_id), heartbeat_at=now)


# -- one instance -------------------------------------------------------------------------------
def run_step(plan: Plan, task_id: str, *, run_id: str, settings: Settings, book: Book,
             params: Mapping[str, str], inputs: Mapping[str, str], map_index: int = -1,
             timeout_s: float | None = None, executor: str = "inline") -> StepOutcome:
    """Run (or skip, by its trigger rule) one instance of `task_id` in run `run_id`."""
    node = node_of(plan, task_id)
    if node.is_mapped and map_index < 0:
        raise UsageError(f"task '{task_id}' is mapped: say which instance", pipeline=plan.name,
                         task=task_id, hint="add --map-index I")
    values, stored = parse_params(plan, params)
    ups = parse_inputs(plan, node, inputs)
    now = clock.now()
    run = book.ensure_run(_new_run(plan, run_id, stored, now))
    cancelled = book.renew(run_id, kfp_driver_id(run_id))
    previous = [a for a in book.attempts_of(run_id, task_id, map_index)]
    mine = next((t for t in book.instances(run_id)
                 if t.task_id == task_id and t.map_index == map_index), None)
    exists = bool(previous) or mine is not None
    if mine is not None and mine.state is S.FAILED and previous and mine.error is not None \
            and len(previous) <= node.options.retries:
        # KFP retries a step whatever failed it; Cadenza decided this failure is not
        # retried (retry_on, or a kind no retry changes): fail again without running.
        log.error("task %s is not retried: %s", task_label(task_id, map_index),
                  mine.error.message)
        return StepOutcome(state=S.FAILED, ref=json.dumps({"state": "failed", "ref": None}))
    ti = TaskInstanceRecord(run_id=run_id, task_id=task_id, map_index=map_index,
                            state=S.PENDING, attempt=len(previous), pool=node.options.pool)

    _adopt_cached(plan, ups, book, run_id)
    if cancelled:  # `cadenza runs cancel`: this and every later step stop here
        ti = move_task(ti, S.CANCELLED, reason="the run was cancelled", ended_at=now)
        book.write(StepRecord(instance=ti), exists=exists)
        return StepOutcome(state=S.CANCELLED,
                           ref=json.dumps({"state": S.CANCELLED.value, "ref": None}))
    decision = _decide(plan, node, ups, book, run_id)
    if decision is not rules.Decision.RUN:
        state = S.SKIPPED if decision is rules.Decision.SKIP else S.UPSTREAM_FAILED
        ti = move_task(ti, state, reason=f"trigger rule {node.options.trigger_rule.value}",
                       ended_at=now)
        book.write(StepRecord(instance=ti), exists=exists)
        return StepOutcome(state=state, ref=json.dumps({"state": state.value, "ref": None}),
                           branch="" if node.options.is_branch else None)

    args = _call_args(plan, node, values, ups, map_index, settings.artifact_root)
    attempt = len(previous) + 1
    ti = move_task(ti, S.SCHEDULED)
    ti = move_task(ti, S.QUEUED, queued_at=now, attempt=attempt)
    out = _execute(plan, node, run, args, map_index=map_index, attempt=attempt,
                   settings=settings, timeout_s=timeout_s or node.options.timeout_s,
                   executor=executor, book=book)
    started = out.started_at or now
    ti = move_task(ti, S.RUNNING, started_at=started, worker=out.worker)
    ended = out.ended_at or clock.now()
    branch: str | None = None
    error = out.error
    if out.ok and node.options.is_branch:
        branch, error = _branch(plan, node, out, settings.artifact_root)
    if out.ok and error is None:
        state = S.SUCCESS
        ti = move_task(ti, state, ended_at=ended, output=out.output)
    elif error is not None and error.kind is ErrorKind.CANCELLED:
        state = S.CANCELLED
        ti = move_task(ti, state, ended_at=ended, error=error, reason="the run was cancelled")
    else:
        assert error is not None
        retry = rules.should_retry(node.options, attempt, error)
        state = S.UP_FOR_RETRY if retry else S.FAILED
        ti = move_task(ti, state, ended_at=ended, error=error,
                       reason="KFP retries the step" if retry else "")
    record = StepRecord(
        instance=ti,
        attempts=[AttemptRecord(run_id=run_id, task_id=task_id, map_index=map_index,
                                attempt=attempt, state=state, started_at=started,
                                ended_at=ended, worker=out.worker, error=ti.error,
                                log_path=out.log_path)],
        metrics=[MetricRecord(run_id=run_id, task_id=task_id, map_index=map_index,
                              attempt=attempt, name=name, value=value, kind=kind, at=ended)
                 for name, value, kind in out.metrics])
    book.write(record, exists=exists)
    ref = out.output.to_json() if state is S.SUCCESS and out.output is not None else None
    if state is not S.SUCCESS and error is not None:
        log.error("task %s failed: %s", task_label(task_id, map_index), error.message)
    return StepOutcome(state=state, ref=json.dumps({"state": state.value, "ref": ref}),
                       branch=branch if branch is not None else
                       ("" if node.options.is_branch else None))


def _adopt_cached(plan: Plan, ups: Mapping[str, _Upstream], book: Book, run_id: str) -> None:
    """Record the upstream instances KFP served from its cache (decision 4): their steps
    never ran in this run, so nobody wrote their rows; their outputs are what we received."""
    wanted: list[tuple[str, int, TaskState | None, ValueRef | None]] = []
    for up, given in ups.items():
        if given.elements is not None:
            wanted.extend((up, i, st, ref) for i, (st, ref) in enumerate(given.elements))
        else:
            wanted.append((up, -1, given.state, given.value))
    wanted = [w for w in wanted if w[2] in (S.SUCCESS, S.CACHED) and w[3] is not None]
    if not wanted:
        return
    have = {(r.task_id, r.map_index) for r in book.instances(run_id)}
    now = clock.now()
    for task_id, index, _, ref in wanted:
        if (task_id, index) in have:
            continue
        ti = TaskInstanceRecord(run_id=run_id, task_id=task_id, map_index=index,
                                state=S.PENDING, pool=plan.graph.nodes[task_id].options.pool)
        ti = move_task(ti, S.CACHED, ended_at=now, output=ref,
                       reason="served from Kubeflow Pipelines' cache")
        try:
            book.write(StepRecord(instance=ti), exists=False)
        except CadenzaError:  # another step recorded it first
            log.debug("%s of run %s was recorded meanwhile", task_label(task_id, index), run_id)


def task_label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def _call_args(plan: Plan, node: TaskNode, values: Mapping[str, Any],
               ups: Mapping[str, _Upstream], map_index: int, root: str) -> dict[str, Any]:
    args = {k: substitute(v, lambda m: _lookup(m, values, ups)) for k, v in node.args.items()
            if k not in node.mapped}
    if node.is_mapped:
        combos = list(itertools.product(*_axes(plan, node, values, ups, root)))
        if map_index >= len(combos):
            raise UsageError(f"map index {map_index} is out of range: task '{node.id}' has "
                             f"{len(combos)} instances", pipeline=plan.name, task=node.id,
                             hint="use the indices its -map step output")
        args.update(zip(node.mapped, combos[map_index], strict=True))
    return args


def _execute(plan: Plan, node: TaskNode, run: RunRecord, args: dict[str, Any], *,
             map_index: int, attempt: int, settings: Settings, timeout_s: float | None,
             executor: str, book: Book) -> Any:
    from cadenza.core.logfiles import attempt_log_path
    from cadenza.executors.base import TaskCall, get_executor

    call = TaskCall(
        run_id=run.run_id, pipeline=plan.name, task_id=node.id, map_index=map_index,
        attempt=attempt, fn=node.fn, fn_key=node.fn_key, inputs=args,
        call_kinds=node.call_kinds, timeout_s=timeout_s,
        log_path=attempt_log_path(str(settings.logs_dir), run.run_id, node.id, map_index,
                                  attempt),
        artifact_root=settings.artifact_root, inline_limit_bytes=settings.inline_limit_bytes,
        context={"logical_date": None, "data_interval": None, "params": run.params},
        requirements=node.options.requirements, python=node.options.python)
    # A timeout is enforced by killing the worker process; inline cannot stop a call.
    ex = get_executor("processes" if timeout_s and executor == "inline" else executor)
    outcomes: queue.Queue[Any] = queue.Queue()
    ex.submit(call, outcomes.put)
    every = max(settings.lease_s / 6, 0.5)
    while True:
        try:
            out = outcomes.get(timeout=every)
            break
        except queue.Empty:  # still running: heartbeat, and stop it if the run is cancelled
            if book.renew(run.run_id, kfp_driver_id(run.run_id)):
                ex.cancel(run.run_id, node.id, map_index)
    _echo_log(out.log_path)
    return out


def _echo_log(path: str | None) -> None:
    """The attempt's log on stdout too: what KFP's UI shows of a step."""
    if not path:
        return
    import sys

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            sys.stdout.write(fh.read())
        sys.stdout.flush()
    except OSError:
        log.warning("the attempt's log %s cannot be read", path)


def _branch(plan: Plan, node: TaskNode, out: Any, root: str) -> tuple[str | None, ErrorInfo | None]:
    from cadenza.artifacts.store import load_value

    value = out.value if out.has_value else (
        None if out.output is None else load_value(out.output, root=root))
    direct = plan.graph.downstream()[node.id]
    chosen, problem = rules.branch_choice(value, direct)
    if chosen is not None and len(chosen) > 1:
        problem = (f"the branch chose {', '.join(chosen)}: on Kubeflow Pipelines a branch "
                   "chooses one task (its dsl.If/Elif); return one task id")
    if chosen is None or problem:
        return None, ErrorInfo(kind=ErrorKind.BRANCH, type="cadenza.BranchError",
                               message=problem)
    return (chosen[0] if chosen else ""), None


# -- the end ------------------------------------------------------------------------------------
def finalize_run(plan: Plan, run_id: str, *, book: Book, body_ok: bool | None = None) -> RunRecord:
    """Record what never ran (skipped, upstream_failed), each mapped task's summary, and
    the run's final state. Run by the ExitHandler's step once every other step ended;
    `body_ok`: whether KFP says the steps succeeded (its final status), so a task with no
    record that should have run was served from KFP's cache (decision 4)."""
    now = clock.now()
    run = book.get_run(run_id)
    if run is None:  # nothing ran at all (the first step failed before it recorded)
        run = book.ensure_run(_new_run(plan, run_id, {}, now))
    rows = book.instances(run_id)
    have = {(r.task_id, r.map_index) for r in rows}
    states = infer_states(plan, rows)
    finals: list[TaskState] = []
    for tid in plan.topological_ids():
        node = plan.graph.nodes[tid]
        state = states.get(tid)
        kids = sorted((r for r in rows if r.task_id == tid and r.map_index >= 0),
                      key=lambda r: r.map_index)
        summary = next((r for r in rows if r.task_id == tid and r.map_index < 0), None)
        if state is None:  # it should have run and no step recorded it
            state = S.CACHED if body_ok else S.CANCELLED
        if node.is_mapped:
            if summary is not None and summary.state.is_final:
                finals.append(summary.state)
                continue
            # A summary only summarises: instances served from KFP's cache make it success.
            state = S.SUCCESS if state is S.CACHED else state
            count = (summary.map_count if summary is not None and summary.map_count is not None
                     else len(kids))
            ti = summary or move_task(
                TaskInstanceRecord(run_id=run_id, task_id=tid, state=S.PENDING,
                                   pool=node.options.pool),
                S.RUNNING, started_at=min((k.started_at for k in kids if k.started_at),
                                          default=now))
            ti = move_task(ti, state, ended_at=now, map_count=count,
                           reason=f"{len(kids)} of {count} instances recorded on KFP")
            book.write(StepRecord(instance=ti), exists=summary is not None)
        elif (tid, -1) not in have and not kids:
            ti = TaskInstanceRecord(run_id=run_id, task_id=tid, state=S.PENDING,
                                    pool=node.options.pool)
            ti = move_task(ti, state, ended_at=now, reason=(
                "served from Kubeflow Pipelines' cache" if state is S.CACHED
                else "no step of it ran on KFP"))
            book.write(StepRecord(instance=ti), exists=False)
        finals.append(state)
    final = run_state_of(finals)
    if not run.state.is_final:
        cancelled = book.renew(run_id, kfp_driver_id(run_id))
        run_state = (RunState.CANCELLED if cancelled else
                     final if final.is_final else RunState.FAILED)
        run = move_run(run, run_state, ended_at=now, driver_id=None)
        book.update_run(run)
    return run


__all__ = ["StepOutcome", "check_cluster_root", "expand_indices", "finalize_run",
           "infer_states", "run_step"]
