"""`cadenza tasks test FILE:PIPELINE TASK`: run one task now, with real upstream outputs.

What belongs here: building a one-task run of a pipeline and reporting it. The task's
upstream outputs come from `--input NAME=VALUE` (NAME is one of the task's arguments, or an
upstream task id), else from the latest run of the pipeline in which those upstream tasks
succeeded (their stored outputs are reused: nothing upstream runs again). Parameters come
from `--param`, else from that run, else the defaults.

The test is a real run (trigger "test") through the engine's public `run_pipeline`, so it is
stored, listed by `cadenza runs list` and its log read by `cadenza logs`. It makes one
attempt (no retries) and never serves the task from the cache.

TODO(#5): the one-node graph is built here with `dataclasses.replace` on the pipeline's graph
and the graph markers; an engine entry point (`run_task(pipeline, task_id, inputs=...)`)
would keep that knowledge in the engine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import typer

from cadenza.cli.console import did_you_mean, err, escape, label, out, print_json

app = typer.Typer(name="tasks", help="Work with one task of a pipeline.", no_args_is_help=True)

SEARCH_RUNS = 50


class _OneTaskPipeline:
    """What `run_pipeline` needs from a pipeline, for a graph cut down to one task."""

    def __init__(self, pipe: Any, graph: Any) -> None:
        self._pipe = pipe
        self.name = pipe.name
        self.graph = graph
        self.params = pipe.params
        self.tags = pipe.tags
        self.source_file = getattr(pipe, "source_file", None)

    def validate_params(self, params: Any) -> Any:
        return self._pipe.validate_params(params)


def _markers() -> tuple[Any, Any, Any]:
    from cadenza.graph.model import ParamValue, TaskOutput, substitute

    return TaskOutput, ParamValue, substitute


def _referenced_upstreams(value: Any) -> set[str]:
    TaskOutput, _, substitute = _markers()
    found: set[str] = set()

    def look(marker: Any) -> Any:
        if type(marker) is TaskOutput:
            found.add(marker.task_id)
        return marker

    substitute(value, look)
    return found


def _find_source_run(store: Any, pipeline: str, needed: set[str]) -> tuple[Any, dict[str, Any]]:
    """The newest run of `pipeline` where every task in `needed` ended success/cached."""
    for run in store.list_runs(pipeline=pipeline, limit=SEARCH_RUNS):
        if run.trigger == "test":
            continue
        rows = store.get_task_instances(run.run_id)
        by_task: dict[str, list[Any]] = {}
        for r in rows:
            by_task.setdefault(r.task_id, []).append(r)
        ok = True
        for task_id in needed:
            task_rows = by_task.get(task_id)
            summary = next((r for r in task_rows or [] if r.map_index < 0), None)
            if summary is None or str(summary.state) not in ("success", "cached"):
                ok = False
                break
        if ok:
            return run, by_task
    return None, {}


def _output_of(rows: list[Any]) -> Any:
    """The stored output of an upstream task: a ValueRef, or a list of them if mapped."""
    summary = next(r for r in rows if r.map_index < 0)
    if summary.map_count is not None:
        children = sorted((r for r in rows if r.map_index >= 0), key=lambda r: r.map_index)
        return [c.output for c in children]
    return summary.output


def _materialise(value: Any, artifact_root: str) -> Any:
    """A mapped argument must be a list when the run starts: load a stored list."""
    from cadenza.core.records import ValueRef

    if type(value) is ValueRef:
        if value.kind == "json":
            return value.value
        from cadenza.artifacts.store import load_value

        return load_value(value, root=artifact_root)
    return value


@app.command("test")
def test_task(
    target: Annotated[str, typer.Argument(metavar="FILE[:PIPELINE]", help="The pipeline.")],
    task: Annotated[str, typer.Argument(help="The task id to run.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="NAME=VALUE", help="A pipeline parameter (default: those of "
        "the run the inputs come from, else the defaults).")] = None,
    input_: Annotated[list[str] | None, typer.Option(
        "--input", "-i", metavar="NAME=VALUE", help="Value of one of the task's arguments "
        "(or of an upstream task's output), as JSON or text. Repeat for several.")] = None,
    executor: Annotated[str | None, typer.Option(
        "--executor", "-e", help="inline, threads, processes or ray (default: inline).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the test run as JSON.")] = False,
) -> None:
    """Run one task now, with the upstream outputs of an earlier run.

    Upstream outputs come from the latest run in which those tasks succeeded, or from
    --input; the test is recorded as a run with trigger "test" (one attempt, no cache).
    Exit code: 0 the task succeeded, 1 it failed, 2 usage error, 130 interrupted.
    """
    from cadenza.cli.discovery import resolve_pipeline
    from cadenza.cli.params import parse_inputs, parse_params, validate_params
    from cadenza.cli.run import check_executor, watch
    from cadenza.core.errors import CadenzaError
    from cadenza.core.settings import get_settings

    settings = get_settings()
    check_executor(executor)
    pipe = resolve_pipeline(target, settings)
    graph = pipe.graph
    if task not in graph.nodes:
        names = list(graph.nodes)
        raise CadenzaError(
            f"no task '{task}'." + did_you_mean(task, names),
            pipeline=pipe.name,
            hint=f"tasks of this pipeline: {', '.join(names)}",
        )
    node = graph.nodes[task]
    inputs = parse_inputs(input_ or [])
    valid_names = list(node.args) + [u for u in node.data_upstream if u not in node.args]
    for name in inputs:
        if name not in valid_names:
            raise CadenzaError(
                f"--input {name}: no argument or upstream task of that name."
                + did_you_mean(name, valid_names),
                pipeline=pipe.name, task=task,
                hint=f"inputs it takes: {', '.join(valid_names) or '(none)'}",
            )
    by_arg = {k: v for k, v in inputs.items() if k in node.args}
    by_task = {k: v for k, v in inputs.items() if k not in node.args}
    needed: set[str] = set()
    for name, value in node.args.items():
        if name not in by_arg:
            needed |= _referenced_upstreams(value)
    needed -= set(by_task)

    from cadenza.store import open_store

    store = open_store(settings.database_url)
    source_run: Any = None
    source_rows: dict[str, list[Any]] = {}
    if needed:
        source_run, source_rows = _find_source_run(store, pipe.name, needed)
        if source_run is None:
            first = min(needed)
            arg = next((a for a, v in node.args.items() if first in _referenced_upstreams(v)),
                       first)
            raise CadenzaError(
                f"no run of pipeline '{pipe.name}' has a successful '{first}' to take the "
                f"input '{arg}' of task '{task}' from",
                pipeline=pipe.name, task=task,
                hint=f"run the pipeline first (cadenza run {target}), or give the value: "
                f"--input {arg}=VALUE",
            )

    TaskOutput, _, substitute = _markers()

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
    one_graph = replace(graph, nodes={task: one})

    params: dict[str, Any] = {}
    if source_run is not None:
        known = {p.name for p in pipe.params}
        params.update({k: v for k, v in source_run.params.items() if k in known})
    params.update(parse_params(pipe, param or []))
    validate_params(pipe, params)

    from cadenza.engine.api import run_pipeline

    if not json_out:
        where = (f"inputs from run {source_run.run_id}" if source_run is not None
                 else "no upstream inputs needed" if not inputs else "inputs from --input")
        out().print(f"Testing task [bold]{escape(task)}[/] of pipeline [bold]{escape(pipe.name)}"
                    f"[/] ({escape(where)})")
    watched = watch(
        lambda on_start: run_pipeline(_OneTaskPipeline(pipe, one_graph), params,
                                      executor=executor or "inline", trigger="test",
                                      on_start=on_start),
        header=lambda driver: f"Test run {driver.run_id}",
        title=f"{pipe.name}.{task}",
        show_progress=False,
    )
    if watched.run is None:
        raise typer.Exit(130 if watched.interrupted else 1)
    if json_out:
        from cadenza.cli.runs import run_detail_json

        data = run_detail_json(watched.run, watched.rows, watched.attempts, watched.metrics)
        data["source_run_id"] = source_run.run_id if source_run is not None else None
        data["output"] = _output_for_json(watched, task)
        print_json(data)
        raise typer.Exit(watched.exit_code)
    _print_test(watched, task)
    raise typer.Exit(watched.exit_code)


def _output_value(watched: Any, task: str) -> tuple[bool, Any]:
    result = watched.result
    if result is None or str(watched.run.state) != "success":
        return False, None
    try:
        return True, result.outputs[task]
    except Exception as exc:  # noqa: BLE001 - the output is shown, not needed
        return True, f"<cannot load the output: {exc}>"


def _output_for_json(watched: Any, task: str) -> Any:
    import json

    ok, value = _output_value(watched, task)
    if not ok:
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _print_test(watched: Any, task: str) -> None:
    from pathlib import Path

    from cadenza.cli import console as cli_console
    from cadenza.cli.progress import print_summary

    console = out()
    for a in watched.attempts:
        text = ""
        if a.log_path and Path(a.log_path).is_file():
            text = Path(a.log_path).read_text(encoding="utf-8", errors="replace")
        if text:
            console.rule(f"output of {escape(label(a.task_id, a.map_index))} "
                         f"(attempt {a.attempt})", align="left", style="dim")
            cli_console._STDOUT.write(text if text.endswith("\n") else text + "\n")
            cli_console._STDOUT.flush()
            console.rule(style="dim")
    ok, value = _output_value(watched, task)
    if ok:
        text = repr(value)
        if len(text) > 2000:
            text = text[:2000] + f"… ({len(text)} characters)"
        console.print(f"[bold]returned:[/] {escape(text)}")
    print_summary(console, watched.run, watched.rows, interrupted=watched.interrupted,
                  resumable=False)
    if watched.interrupted:
        err().print("Interrupted.")
