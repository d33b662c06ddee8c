"""`cadenza run` and `cadenza resume`: drive a run in this process, with live progress.

What belongs here: turning the command line into a `run_pipeline` / `resume_run` call,
Ctrl-C handling, and the exit code. The progress display and the summary live in
`progress.py`; the pipeline lookup in `discovery.py`.

Ctrl-C, by case:
  1. before the run is recorded -> nothing to cancel; exit 130.
  2. first Ctrl-C while it runs -> `RunDriver.cancel()`: the engine stops running tasks and
     records them (and everything not yet run) as cancelled; we print the summary and how to
     resume, and exit 130.
  3. a second Ctrl-C -> KeyboardInterrupt in the driver, which cancels at once (tasks still
     running are recorded as cancelled without waiting for them); exit 130.

A cancel from another terminal (`cadenza runs cancel RUN_ID`) reaches the driver through the
store (engine/lease.py); the summary then says the run was cancelled, and the exit code is 1.

Exit codes: 0 the run succeeded, 1 it failed or was cancelled from elsewhere, 2 a usage or
definition error (nothing ran), 130 interrupted.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from cadenza.cli import progress
from cadenza.cli.console import err, escape, is_plain, note, out, print_json
from cadenza.core.states import RunState

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(slots=True)
class Watched:
    """How a driven run ended, as the CLI saw it."""

    run_id: str | None = None
    result: Any = None
    run: Any = None
    rows: list[Any] = field(default_factory=list)
    attempts: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    interrupted: bool = False  # the user pressed Ctrl-C

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.run is None:
            return EXIT_FAILED
        return EXIT_OK if self.run.state is RunState.SUCCESS else EXIT_FAILED


def check_executor(name: str | None) -> None:
    if name is None:
        return
    from cadenza.core.errors import ConfigError
    from cadenza.executors.base import executor_names

    names = executor_names()
    if name not in names:
        from cadenza.core.suggest import did_you_mean

        raise ConfigError(f"unknown executor '{name}'." + did_you_mean(name, names),
                          hint=f"use one of: {', '.join(names)}")


def watch(
    start: Callable[[Callable[[Any], None]], Any],
    *,
    header: Callable[[Any], str],
    title: str,
    show_progress: bool = True,
    resumed: bool = False,
) -> Watched:
    """Call `start(on_start)` (which drives a run to its end) with progress and Ctrl-C
    handling; read the final state back from the store."""
    from cadenza.core.settings import get_settings
    from cadenza.store import open_store

    store = open_store(get_settings().database_url)
    watched = Watched()
    state: dict[str, Any] = {"driver": None, "watcher": None, "cancelling": False}

    def on_start(driver: Any) -> None:
        state["driver"] = driver
        watched.run_id = driver.run_id
        if not show_progress:
            return
        view = progress.make_view(out(), title, plain=is_plain())
        if resumed:
            view.baseline(store.get_task_instances(driver.run_id))
        view.start(header(driver))
        watcher = progress.RunWatcher(store, driver.run_id, view)
        state["watcher"] = watcher
        watcher.start()

    def on_sigint(signum: int, frame: Any) -> None:
        watched.interrupted = True
        driver = state["driver"]
        if driver is None or state["cancelling"]:
            raise KeyboardInterrupt
        state["cancelling"] = True
        driver.cancel()
        message = ("Cancelling: stopping running tasks and recording them as cancelled "
                   "(Ctrl-C again to stop at once)")
        if getattr(driver.run, "executor", "") == "inline":
            # TODO(#5): RunDriver.cancel() does not interrupt a call running inline (in the
            # driver's own thread); it stops after that task. Engine fix requested.
            message = ("Cancelling: the task running inline finishes first, then the rest "
                       "is cancelled (Ctrl-C again to stop it now)")
        watcher = state["watcher"]
        if watcher is not None:
            watcher.view.note(message)
        else:
            note(message)

    in_main = _is_main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        watched.result = start(on_start)
    except KeyboardInterrupt:
        watched.interrupted = True
    except ImportError as exc:
        if state["driver"] is not None:
            raise
        # Before the run starts, only loading the executor imports anything (a registered
        # third-party executor may need a package that is not installed).
        from cadenza.core.errors import ConfigError

        raise ConfigError(
            f"cannot start the run: {exc}",
            hint="install what the executor needs, or pick another one with "
            "--executor inline|threads|processes|ray",
        ) from exc
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
        watcher = state["watcher"]
        if watcher is not None:
            watcher.stop()
    if watched.run_id is not None:
        watched.run = store.get_run(watched.run_id)
        watched.rows = store.get_task_instances(watched.run_id)
        watched.attempts = store.get_attempts(watched.run_id)
        watched.metrics = store.get_metrics(watched.run_id)
    return watched


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def report(watched: Watched, *, json_out: bool) -> int:
    """Print the summary (or JSON) of a watched run; return the exit code."""
    if watched.run is None:
        if watched.interrupted:
            err().print("Interrupted before the run started; nothing was recorded.")
        return watched.exit_code
    if json_out:
        from cadenza.cli.runs import run_detail_json

        data = run_detail_json(watched.run, watched.rows, watched.attempts, watched.metrics)
        data["interrupted"] = watched.interrupted
        print_json(data)
        return watched.exit_code
    console = out()
    progress.print_summary(console, watched.run, watched.rows, interrupted=watched.interrupted)
    if watched.interrupted:
        err().print(f"Interrupted. Resume with: [bold]cadenza resume {escape(watched.run.run_id)}[/]")
    return watched.exit_code


def _header(pipe_name: str, verb: str) -> Callable[[Any], str]:
    def make(driver: Any) -> str:
        n = len(driver.graph)
        executor = getattr(driver.run, "executor", "") or ""
        return (f"{verb} run {driver.run_id} of pipeline {pipe_name} "
                f"({n} task{'s' if n != 1 else ''}, executor {executor})")

    return make


def run_command(
    target: Annotated[str, typer.Argument(
        metavar="FILE[:PIPELINE]",
        help="A pipeline file, with :PIPELINE when it defines several; or a pipeline name "
        "of the project (cadenza.toml).")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="NAME=VALUE",
        help="A pipeline parameter, coerced by its type hint (n=5 is an int); lists and "
        "dicts as JSON. Repeat for several.")] = None,
    executor: Annotated[str | None, typer.Option(
        "--executor", "-e", help="inline, threads, processes or ray (default: from "
        "cadenza.toml, else processes).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="No live progress; print the finished run as JSON.")] = False,
) -> None:
    """Run a pipeline now, with live progress; Ctrl-C cancels it cleanly (resumable).

    Exit code: 0 success, 1 the run failed, 2 usage or definition error, 130 interrupted.
    """
    from cadenza.cli.discovery import resolve_pipeline
    from cadenza.cli.params import parse_params, validate_params
    from cadenza.core.settings import get_settings

    settings = get_settings()
    check_executor(executor)
    pipe = resolve_pipeline(target, settings)
    params = parse_params(pipe, param or [])
    validate_params(pipe, params)  # before anything is recorded: exit 2 on a bad parameter
    from cadenza.engine.api import run_pipeline

    watched = watch(
        lambda on_start: run_pipeline(pipe, params, executor=executor, on_start=on_start),
        header=_header(pipe.name, "Started"),
        title=pipe.name,
        show_progress=not json_out,
    )
    raise typer.Exit(report(watched, json_out=json_out))


def _pipeline_of_run(source: str) -> Any:
    """The pipeline a run came from, loaded the way `cadenza run` loads files (so worker
    processes can import it); None to let the engine find it."""
    from pathlib import Path

    from cadenza.cli.discovery import split_target
    from cadenza.engine.loading import load_file

    file_part, name = split_target(source)
    if name is None or not file_part.endswith(".py") or not Path(file_part).is_file():
        return None
    loaded = load_file(Path(file_part))
    if loaded.error is not None:
        from cadenza.cli.discovery import _file_error

        raise _file_error(loaded, source)
    return loaded.pipelines.get(name)


def resume_command(
    run_id: Annotated[str, typer.Argument(help="The run to finish (a unique prefix is enough).")],
    executor: Annotated[str | None, typer.Option(
        "--executor", "-e", help="Executor for the tasks that run again (default: the "
        "run's own).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="No live progress; print the finished run as JSON.")] = False,
) -> None:
    """Finish a failed or interrupted run from the point of failure.

    Finished tasks keep their outputs; failed, cancelled and downstream tasks run again.
    Exit code: 0 success, 1 the run failed again, 2 usage error, 130 interrupted.
    """
    from cadenza.core.errors import UsageError
    from cadenza.core.settings import get_settings
    from cadenza.engine.resume import resume_run
    from cadenza.store import open_store

    check_executor(executor)
    store = open_store(get_settings().database_url)
    rid = store.resolve_run_id(run_id)
    run = store.get_run(rid)
    if run.state is RunState.SUCCESS:
        out().print(f"Run {escape(rid)} of pipeline {escape(run.pipeline)} already succeeded; "
                    "nothing to resume.")
        raise typer.Exit(EXIT_OK)
    if run.trigger == "test":
        raise UsageError(
            f"run {rid} is a task test (cadenza tasks test), which cannot be resumed",
            pipeline=run.pipeline,
            hint="run the test again with `cadenza tasks test FILE:PIPELINE TASK`",
        )
    pipe = _pipeline_of_run(run.source) if run.source else None
    watched = watch(
        lambda on_start: resume_run(rid, executor=executor, pipeline=pipe, on_start=on_start),
        header=_header(run.pipeline, "Resumed"),
        title=run.pipeline,
        show_progress=not json_out,
        resumed=True,
    )
    if watched.run_id is None and watched.result is not None:
        watched.run_id = rid
        watched.run = store.get_run(rid)
        watched.rows = store.get_task_instances(rid)
        watched.attempts = store.get_attempts(rid)
        watched.metrics = store.get_metrics(rid)
    raise typer.Exit(report(watched, json_out=json_out))
