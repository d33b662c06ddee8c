"""`cadenza tasks test FILE:PIPELINE TASK`: run one task now, with real upstream outputs.

What belongs here: building a one-task run of a pipeline and reporting it. The task's
upstream outputs come from `--input NAME=VALUE` (NAME is one of the task's arguments, or an
upstream task id), else from the latest run of the pipeline in which those upstream tasks
succeeded (their stored outputs are reused: nothing upstream runs again). Parameters come
from `--param`, else from that run, else the defaults.

The test is a real run (trigger "test") through the engine, so it is
stored, listed by `cadenza runs list` and its log read by `cadenza logs`. It makes one
attempt (no retries) and never serves the task from the cache.

The one-task run itself is built by the engine (`engine/task_test.py`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cadenza.cli.console import err, escape, label, out, print_json
from cadenza.core.states import RunState

app = typer.Typer(name="tasks", help="Work with one task of a pipeline.", no_args_is_help=True)


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
        "--executor", "-e", help="inline, threads or processes (default: inline).")] = None,
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
    from cadenza.core.settings import get_settings
    from cadenza.engine.task_test import prepare_task_test

    settings = get_settings()
    check_executor(executor)
    pipe = resolve_pipeline(target, settings)
    overrides = parse_params(pipe, param or [])
    test = prepare_task_test(pipe, task, inputs=parse_inputs(input_ or []), params=overrides,
                             settings=settings)
    validate_params(pipe, test.params)
    source_run = test.source_run

    if not json_out:
        where = (f"inputs from run {source_run.run_id}" if source_run is not None
                 else "no upstream inputs needed" if not input_ else "inputs from --input")
        out().print(f"Testing task [bold]{escape(task)}[/] of pipeline [bold]{escape(pipe.name)}"
                    f"[/] ({escape(where)})")
    watched = watch(
        lambda on_start: test.run(executor=executor, settings=settings, on_start=on_start),
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
    if result is None or watched.run.state is not RunState.SUCCESS:
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
