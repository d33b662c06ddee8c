"""What the surfaces show about one task instance: the instance, its attempts (ended ones
from the store, plus the running one, which has no attempt row until it ends), each
attempt's log file, and the references of its inputs.

What belongs here: finding a task instance, attempt or log by what a user names (run id,
task id, map index, attempt number), with NotFound errors that say what exists; resolving
input references from the pipeline's Plan (or, without one, from the artifact lineage).
What does not: reading values (`artifacts/preview.py`, `artifacts/store.py`), reading log
bytes (`core/logfiles.py`), HTTP (the API).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cadenza.core.errors import TaskNotFound
from cadenza.core.logfiles import attempt_log_path
from cadenza.core.records import (
    ArtifactRecord,
    AttemptRecord,
    ErrorInfo,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
)
from cadenza.core.states import TaskState
from cadenza.core.suggest import did_you_mean
from cadenza.graph.model import ParamValue, TaskOutput, iter_markers
from cadenza.graph.plan import Plan


class InspectStore(Protocol):
    """What this module reads (`cadenza.store.RunStore` has it)."""

    def get_run(self, run_id: str) -> RunRecord: ...

    def get_task_instances(self, run_id: str) -> list[TaskInstanceRecord]: ...

    def get_task_instance(self, run_id: str, task_id: str,
                          map_index: int = -1) -> TaskInstanceRecord | None: ...

    def get_attempts(self, run_id: str, task_id: str | None = None,
                     map_index: int | None = None) -> list[AttemptRecord]: ...

    def get_artifacts(self, sha256s: Sequence[str]) -> dict[str, ArtifactRecord]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptView:
    """One attempt as shown: `live` when it is running now (no attempt row yet)."""

    attempt: int
    state: TaskState
    started_at: Any
    ended_at: Any
    worker: str | None
    error: ErrorInfo | None
    log_path: str | None  # None: no log file was written (or it is gone)
    live: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRef:
    """One input of a task instance.

    `source`: "task" (an upstream output: `task_id`, `map_index`), "param" (a pipeline
    parameter: `param`) or "literal" (a value written in the pipeline). `element`: for a
    mapped instance, which element of the upstream list (or parameter list) it received
    (None when it received the whole value, or when the element cannot be told).
    `ref`: where the value is (None when the upstream has no output, e.g. it failed).
    """

    name: str
    source: str
    task_id: str | None = None
    map_index: int = -1
    param: str | None = None
    element: int | None = None
    ref: ValueRef | None = None


def find_task_instance(store: InspectStore, run_id: str, task_id: str,
                       map_index: int = -1) -> TaskInstanceRecord:
    """The task instance, or TaskNotFound saying which tasks (or map indexes) the run has.
    The run must exist (`store.get_run` raises RunNotFound otherwise)."""
    ti = store.get_task_instance(run_id, task_id, map_index)
    if ti is not None:
        return ti
    store.get_run(run_id)  # RunNotFound first
    tis = store.get_task_instances(run_id)
    same = [t for t in tis if t.task_id == task_id]
    if not same:
        names = sorted({t.task_id for t in tis})
        raise TaskNotFound(
            f"run {run_id} has no task '{task_id}'." + did_you_mean(task_id, names),
            hint=f"tasks of this run: {', '.join(names) or '(none)'}")
    summary = next((t for t in same if t.map_index < 0), None)
    if summary is not None and summary.map_count is None:
        raise TaskNotFound(f"task '{task_id}' of run {run_id} is not mapped, so it has no "
                           f"map index {map_index}", hint="use map index -1 (the default)")
    count = summary.map_count if summary is not None and summary.map_count is not None \
        else len(same) - (1 if summary is not None else 0)
    have = f"map indexes 0 to {count - 1}" if count else "no instances yet"
    raise TaskNotFound(f"task '{task_id}' of run {run_id} has no map index {map_index}",
                       hint=f"it has {have}; -1 is the mapped task's summary")


def attempts_of(store: InspectStore, ti: TaskInstanceRecord, *,
                logs_dir: str) -> list[AttemptView]:
    """The ended attempts of `ti` in order, then the running one if it is running."""
    rows = store.get_attempts(ti.run_id, ti.task_id, ti.map_index)
    views = [attempt_view(a, logs_dir=logs_dir) for a in rows]
    recorded = {v.attempt for v in views}
    if is_running_attempt(ti, recorded):
        path = attempt_log_path(logs_dir, ti.run_id, ti.task_id, ti.map_index, ti.attempt)
        views.append(AttemptView(attempt=ti.attempt, state=TaskState.RUNNING,
                                 started_at=ti.started_at, ended_at=None, worker=ti.worker,
                                 error=None, log_path=path, live=True))
    return views


def is_running_attempt(ti: TaskInstanceRecord, recorded: set[int]) -> bool:
    """`ti` is running an attempt that has no attempt row yet (a mapped summary never
    runs itself)."""
    return (ti.state is TaskState.RUNNING and ti.map_count is None and ti.attempt >= 1
            and ti.attempt not in recorded)


def find_attempt(store: InspectStore, ti: TaskInstanceRecord, attempt: int | None, *,
                 logs_dir: str) -> AttemptView:
    """Attempt number `attempt` of `ti` (None: the newest), or TaskNotFound listing them."""
    views = attempts_of(store, ti, logs_dir=logs_dir)
    if attempt is None and views:
        return views[-1]
    for v in views:
        if v.attempt == attempt:
            return v
    who = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
    have = ", ".join(str(v.attempt) for v in views)
    if not views and ti.map_count is not None:
        raise TaskNotFound(f"task '{who}' of run {ti.run_id} is mapped: each of its "
                           f"{ti.map_count} instances has its own attempts and logs",
                           hint=f"pick one with map index 0 to {max(ti.map_count - 1, 0)}")
    if not views:
        why = (f"it was served from the cache (run {(ti.cache_origin or {}).get('run_id')})"
               if ti.state is TaskState.CACHED else f"it is {ti.state}")
        raise TaskNotFound(f"task '{who}' of run {ti.run_id} has no attempts: {why}",
                           hint="attempts exist once the task instance has started")
    raise TaskNotFound(f"task '{who}' of run {ti.run_id} has no attempt {attempt}",
                       hint=f"its attempts: {have}")


def attempt_view(a: AttemptRecord, *, logs_dir: str) -> AttemptView:
    """An ended attempt as shown, with its log file (found where the worker writes it when
    the row names none)."""
    # No log_path on the row (a cancelled or timed-out attempt): the file may still be where
    # the worker writes it.
    path = a.log_path
    if not path:
        guess = attempt_log_path(logs_dir, a.run_id, a.task_id, a.map_index, a.attempt)
        path = guess if os.path.isfile(guess) else None
    return AttemptView(attempt=a.attempt, state=a.state, started_at=a.started_at,
                       ended_at=a.ended_at, worker=a.worker, error=a.error, log_path=path)


# ---------------------------------------------------------------------------------------------
# Inputs


def input_refs(store: InspectStore, run: RunRecord, ti: TaskInstanceRecord,
               plan: Plan | None) -> list[InputRef]:
    """The inputs of `ti`, from the pipeline's Plan when the server has it, else from the
    artifact lineage of its output (which knows only artifact inputs and not their names).

    Cases:
      1. the Plan names the task: one InputRef per upstream output, parameter or literal
         in its arguments (a structure holding several gives several, under one name);
      2. no Plan (the pipeline did not load), or the Plan lacks the task (its code changed):
         the input artifacts the lineage recorded, named "input N";
      3. neither: no inputs known (an empty list).
    """
    node = plan.tasks.get(ti.task_id) if plan is not None else None
    if node is None:
        return _inputs_from_lineage(store, ti)  # cases 2, 3
    tis = _Lookup(store, ti.run_id)
    elements = _elements(node.mapped, node.args, ti.map_index, tis, run.params)
    out: list[InputRef] = []
    for name, value in node.args.items():
        element = elements.get(name)
        markers = list(iter_markers(value))
        if not markers:
            literal = value if element is None or not isinstance(value, list) \
                else value[element]
            out.append(InputRef(name=name, source="literal", element=element,
                                ref=ValueRef(kind="json", value=literal)))
            continue
        for marker in markers:
            out.append(_marker_ref(name, marker, element, tis, run.params))
    return out


class _Lookup:
    """Task instances of one run by (task id, map index), read one by one when first asked
    for and kept: an instance's inputs need a few upstream rows, and reading the whole run
    (10,000 mapped instances) for them would make one detail page cost a run's size."""

    def __init__(self, store: InspectStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.rows: dict[tuple[str, int], TaskInstanceRecord | None] = {}

    def get(self, key: tuple[str, int]) -> TaskInstanceRecord | None:
        if key not in self.rows:
            self.rows[key] = self.store.get_task_instance(self.run_id, key[0], key[1])
        return self.rows[key]


def _marker_ref(name: str, marker: TaskOutput | ParamValue, element: int | None,
                tis: _Lookup,
                params: Mapping[str, Any]) -> InputRef:
    if isinstance(marker, ParamValue):
        value = params.get(marker.name)
        if element is not None and isinstance(value, list) and element < len(value):
            value = value[element]
        return InputRef(name=name, source="param", param=marker.name, element=element,
                        ref=ValueRef(kind="json", value=value))
    summary = tis.get((marker.task_id, -1))
    if element is not None and summary is not None and summary.map_count is not None:
        child = tis.get((marker.task_id, element))  # element-wise over a mapped upstream
        return InputRef(name=name, source="task", task_id=marker.task_id, map_index=element,
                        ref=child.output if child is not None else None)
    return InputRef(name=name, source="task", task_id=marker.task_id, element=element,
                    ref=summary.output if summary is not None else None)


def _elements(mapped: Sequence[str], args: Mapping[str, Any], map_index: int,
              tis: _Lookup,
              params: Mapping[str, Any]) -> dict[str, int | None]:
    """For a mapped instance: which element of each mapped argument it got. The instances
    are the cartesian product of the axes in `mapped` order (the last varies fastest), so
    map index i decomposes in mixed radix over the axis lengths, when all are known."""
    if map_index < 0 or not mapped:
        return {}
    lengths = [_axis_length(args[name], tis, params) for name in mapped]
    if any(n is None for n in lengths):
        return dict.fromkeys(mapped)
    known = [int(n) for n in lengths if n is not None]
    if map_index >= math.prod(known):
        return dict.fromkeys(mapped)
    out: dict[str, int | None] = {}
    rest = map_index
    for name, n in zip(reversed(mapped), reversed(known), strict=True):
        out[name] = rest % n
        rest //= n
    return out


def _axis_length(value: Any, tis: _Lookup,
                 params: Mapping[str, Any]) -> int | None:
    if isinstance(value, TaskOutput):
        up = tis.get((value.task_id, -1))
        if up is None:
            return None
        if up.map_count is not None:
            return up.map_count
        out = up.output
        if out is not None and out.kind == "json" and isinstance(out.value, list):
            return len(out.value)
        return None  # a list stored as an artifact: its length is not in the store
    if isinstance(value, ParamValue):
        items = params.get(value.name)
        return len(items) if isinstance(items, list) else None
    return len(value) if isinstance(value, list) else None


def _inputs_from_lineage(store: InspectStore, ti: TaskInstanceRecord) -> list[InputRef]:
    out = ti.output
    if out is None or out.kind != "artifact" or not out.sha256:
        return []
    record = store.get_artifacts([out.sha256]).get(out.sha256)
    if record is None or not record.input_sha256s:
        return []
    known = store.get_artifacts(list(record.input_sha256s))
    refs: list[InputRef] = []
    for i, sha in enumerate(record.input_sha256s):
        a = known.get(sha)
        ref = ValueRef(kind="artifact", sha256=sha, uri=a.uri if a else None,
                       serializer=a.serializer if a else None, size=a.size if a else None,
                       type_name=a.type_name if a else None)
        refs.append(InputRef(name=f"input {i + 1}", source="task",
                             task_id=a.task_id if a else None,
                             map_index=a.map_index if a else -1, ref=ref))
    return refs
