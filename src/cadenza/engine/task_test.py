"""Run one task of a pipeline now, with real upstream outputs (`cadenza tasks test`).

What belongs here: cutting a pipeline's graph down to one task whose upstream outputs come
from given values or from the newest run in which those upstream tasks succeeded (their
stored outputs are reused; nothing upstream runs again). What does not: parsing
`--input`/`--param` and printing (cli/tasks.py).

The test is a real run (trigger "test") through `run_pipeline`: stored, listed by
`cadenza runs list`, its log read by `cadenza logs`. It makes one attempt (no retries) and
is never served from the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cadenza.core.errors import RunNotFound, TaskNotFound, UsageError
from cadenza.core.records import RunRecord, TaskInstanceRecord, ValueRef
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import TaskState
from cadenza.graph.model import PipelineGraph, TaskOutput, substitute
from cadenza.graph.plan import HasPlan, Plan, plan_of

# How many recent runs are searched for one whose upstream tasks succeeded.
SEARCH_RUNS = 50


@dataclass(slots=True, kw_only=True)
class TaskTest:
    """A one-task run, ready to start: `run()` it (on `inline` unless told otherwise)."""

    pipeline: Plan  # the real pipeline
    task_id: str
    params: dict[str, Any]
    source_run: RunRecord | None  # where the upstream outputs come from, if anywhere
    _one: Plan  # the pipeline's plan with its graph cut down to the task

    def run(self, *, executor: str | None = None, settings: Settings | None = None,
            on_start: Any = None) -> Any:
        from cadenza.engine.api import run_pipeline

        return run_pipeline(self._one, self.params, executor=executor or "inline",
                            settings=settings, trigger="test", on_start=on_start)


def prepare_task_test(
    pipeline: Plan | HasPlan,
    task_id: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> TaskTest:
    """A one-task run of `task_id`. `inputs` are values by argument name or by upstream task
    id; the other upstream outputs come from the newest run where those tasks succeeded.
    Parameters: `params`, over that run's, over the defaults (validated when it runs).

    Raises, naming the task and the fix: TaskNotFound for an unknown task, UsageError for an
    unknown input name, RunNotFound when no run has the upstream outputs it needs.
    """
    from cadenza.core.suggest import did_you_mean
    from cadenza.store import open_store

    pipeline = plan_of(pipeline)
    settings = settings or get_settings()
    graph: PipelineGraph = pipeline.graph
    if task_id not in graph.nodes:
        names = list(graph.nodes)
        raise TaskNotFound(f"no task '{task_id}'." + did_you_mean(task_id, names),
                           pipeline=pipeline.name,
                           hint=f"tasks of this pipeline: {', '.join(names)}")
    node = graph.nodes[task_id]
    given = dict(inputs or {})
    valid = list(node.args) + [u for u in node.data_upstream if u not in node.args]
    for name in given:
        if name not in valid:
            raise UsageError(
                f"input '{name}': no argument or upstream task of that name."
                + did_you_mean(name, valid),
                pipeline=pipeline.name, task=task_id,
                hint=f"inputs it takes: {', '.join(valid) or '(none)'}")
    by_arg = {k: v for k, v in given.items() if k in node.args}
    by_task = {k: v for k, v in given.items() if k not in node.args}
    needed: set[str] = set()
    for name, value in node.args.items():
        if name not in by_arg:
            needed |= _upstreams_in(value)
    needed -= set(by_task)

    source_run: RunRecord | None = None
    source_rows: dict[str, list[TaskInstanceRecord]] = {}
    if needed:
        store = open_store(settings.database_url)
        source_run, source_rows = _find_source_run(store, pipeline.name, needed)
        if source_run is None:
            first = min(needed)
            arg = next((a for a, v in node.args.items() if first in _upstreams_in(v)), first)
            raise RunNotFound(
                f"no run of pipeline '{pipeline.name}' has a successful '{first}' to take "
                f"the input '{arg}' of task '{task_id}' from",
                pipeline=pipeline.name, task=task_id,
                hint=f"run the pipeline first, or give the value (cadenza tasks test ... "
                f"--input {arg}=VALUE)")

    def lookup(marker: Any) -> Any:
        if type(marker) is not TaskOutput:
            return marker  # a parameter: the engine fills it in
        if marker.task_id in by_task:
            return by_task[marker.task_id]
        return _output_of(source_rows[marker.task_id])

    args: dict[str, Any] = {}
    for name, value in node.args.items():
        if name in by_arg:
            args[name] = by_arg[name]
            continue
        args[name] = substitute(value, lookup)
        if name in node.mapped:
            args[name] = _materialise(args[name], settings.artifact_root)
    one = replace(node, args=args, data_upstream=(), order_upstream=(),
                  options=replace(node.options, retries=0, cache=False))
    one_graph = replace(graph, nodes={task_id: one})

    merged: dict[str, Any] = {}
    if source_run is not None:
        known = set(pipeline.parameters.names)
        merged.update({k: v for k, v in source_run.params.items() if k in known})
    merged.update(params or {})
    return TaskTest(pipeline=pipeline, task_id=task_id, params=merged, source_run=source_run,
                    _one=replace(pipeline, graph=one_graph))


def _upstreams_in(value: Any) -> set[str]:
    found: set[str] = set()

    def look(marker: Any) -> Any:
        if type(marker) is TaskOutput:
            found.add(marker.task_id)
        return marker

    substitute(value, look)
    return found


def _find_source_run(store: Any, pipeline: str, needed: set[str]
                     ) -> tuple[RunRecord | None, dict[str, list[TaskInstanceRecord]]]:
    """The newest run of `pipeline` where every task in `needed` ended success/cached."""
    for run in store.list_runs(pipeline=pipeline, limit=SEARCH_RUNS):
        if run.trigger == "test":
            continue
        by_task: dict[str, list[TaskInstanceRecord]] = {}
        for row in store.get_task_instances(run.run_id):
            by_task.setdefault(row.task_id, []).append(row)
        if all(_succeeded(by_task.get(t)) for t in needed):
            return run, by_task
    return None, {}


def _succeeded(rows: list[TaskInstanceRecord] | None) -> bool:
    summary = next((r for r in rows or [] if r.map_index < 0), None)
    return summary is not None and summary.state in (TaskState.SUCCESS, TaskState.CACHED)


def _output_of(rows: list[TaskInstanceRecord]) -> Any:
    """The stored output of an upstream task: a ValueRef, or a list of them if mapped."""
    summary = next(r for r in rows if r.map_index < 0)
    if summary.map_count is not None:
        children = sorted((r for r in rows if r.map_index >= 0), key=lambda r: r.map_index)
        return [c.output for c in children]
    return summary.output


def _materialise(value: Any, artifact_root: str) -> Any:
    """A mapped argument must be a list when the run starts: load a stored list."""
    if type(value) is ValueRef:
        if value.kind == "json":
            return value.value
        from cadenza.artifacts.store import load_value

        return load_value(value, root=artifact_root)
    return value
