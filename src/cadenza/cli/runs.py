"""`cadenza runs list|show|cancel`: what ran, when, and how each task instance ended.

What belongs here: reading runs, task instances and attempts from the store and showing
them as tables or JSON (the JSON shapes are shared with `cadenza run --json`); asking the
engine to cancel a run (`engine/cancel.py` does it; nothing here writes a state).
What does not: starting or changing runs.

Shown state: an unfinished run whose driver died (its lease expired, or its process on
this host is gone) is shown `crashed`, computed from the run row each time (the store
keeps what the engine wrote), with the way out: `cadenza resume RUN_ID`.

`cadenza runs cancel` exit codes: 0 the run is cancelled; 1 it had already ended (nothing
to cancel); 2 no such run, or another usage error; 3 the request is recorded but its
driver has not stopped the run within --wait (it will, at its next checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import (
    CRASHED,
    duration_s,
    escape,
    format_duration,
    format_time,
    label,
    out,
    print_json,
    styled_state,
)
from cadenza.core.states import RunState, TaskState
from cadenza.core.suggest import did_you_mean

if TYPE_CHECKING:
    from cadenza.core.records import AttemptRecord, MetricRecord, RunRecord, TaskInstanceRecord

app = typer.Typer(
    name="runs",
    help="List runs, show one run's task instances, cancel or delete runs.",
    no_args_is_help=True,
)


def open_project_store() -> Any:
    """The configured metadata store (StoreError with a fix when it cannot be reached).

    Outside a project it says so instead of creating an empty store in the current folder.
    A project is: a cadenza.toml here or above, CADENZA_HOME or CADENZA_DATABASE_URL set,
    or the default store (.cadenza/cadenza.db, made by `cadenza run FILE` here) existing."""
    import os
    from pathlib import Path

    from cadenza.core.errors import ConfigError
    from cadenza.core.settings import get_settings
    from cadenza.store import open_store

    settings = get_settings()
    url = settings.database_url
    if (settings.config_file is None and not os.environ.get("CADENZA_HOME")
            and not os.environ.get("CADENZA_DATABASE_URL") and settings.is_sqlite
            and not Path(url.removeprefix("sqlite:///")).exists()):
        raise ConfigError(
            f"no Cadenza project here: no cadenza.toml in {Path.cwd()} or its parents, no "
            f"runs in {settings.home}, and neither CADENZA_HOME nor CADENZA_DATABASE_URL is set",
            hint="cd into your project's folder, start one with `cadenza init`, or point "
            "CADENZA_HOME (or CADENZA_DATABASE_URL) at your runs")
    return open_store(url)


# --- JSON shapes -----------------------------------------------------------------------------


def shown_state(run: RunRecord) -> str:
    """The run's state as surfaces show it: `crashed` for an unfinished run nobody drives
    any more (engine.lease.is_orphaned), else the stored state."""
    if run.state.is_final:
        return str(run.state)
    from cadenza.engine.lease import is_orphaned

    return CRASHED if is_orphaned(run) else str(run.state)


def run_to_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "state": shown_state(run),
        "stored_state": str(run.state),
        "cancel_requested_at": run.cancel_requested_at,
        "trigger": run.trigger,
        "executor": run.executor,
        "params": run.params,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_s": duration_s(run.started_at, run.ended_at),
        "logical_date": run.logical_date,
        "error": run.error,
        "source": run.source,
        "tags": list(run.tags),
    }


def _error_json(error: Any) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "kind": error.kind, "message": error.message,
            "first_line": error.first_line(), "traceback": error.traceback}


def ti_to_json(ti: TaskInstanceRecord, attempts: Sequence[AttemptRecord]) -> dict[str, Any]:
    return {
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "label": label(ti.task_id, ti.map_index),
        "state": str(ti.state),
        "attempts": ti.attempt,
        "pool": ti.pool,
        "queued_at": ti.queued_at,
        "started_at": ti.started_at,
        "ended_at": ti.ended_at,
        "duration_s": duration_s(ti.started_at, ti.ended_at),
        "map_count": ti.map_count,
        "cache_origin": ti.cache_origin,
        "cache_key": ti.cache_key,
        "worker": ti.worker,
        "reason": ti.reason or None,
        "error": _error_json(ti.error),
        "output": ti.output.to_json() if ti.output is not None else None,
        "attempt_history": [
            {
                "attempt": a.attempt,
                "state": str(a.state),
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "duration_s": duration_s(a.started_at, a.ended_at),
                "worker": a.worker,
                "error": _error_json(a.error),
                "log_path": a.log_path,
            }
            for a in attempts
        ],
    }


def run_detail_json(
    run: RunRecord,
    tis: Sequence[TaskInstanceRecord],
    attempts: Sequence[AttemptRecord],
    metrics: Sequence[MetricRecord] = (),
) -> dict[str, Any]:
    by_key: dict[tuple[str, int], list[AttemptRecord]] = {}
    for a in attempts:
        by_key.setdefault((a.task_id, a.map_index), []).append(a)
    data = run_to_json(run)
    data["task_instances"] = [ti_to_json(t, by_key.get(t.key, []))
                              for t in in_graph_order(run, tis)]
    data["metrics"] = [
        {"task_id": m.task_id, "map_index": m.map_index, "attempt": m.attempt, "name": m.name,
         "value": m.value, "kind": m.kind}
        for m in metrics
    ]
    return data


# --- commands --------------------------------------------------------------------------------


@app.command("list")
def list_runs(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Only runs of this pipeline.")] = None,
    state: Annotated[str | None, typer.Option("--state", "-s", help="Only runs in this state: queued, running, success, failed, cancelled, crashed (its driver died).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many runs, newest first.")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (a list of runs).")] = False,
) -> None:
    """List runs, newest first."""
    from cadenza.core.errors import UsageError

    run_state = None
    if state is not None:
        valid = [*(s.value for s in RunState), CRASHED]
        if state not in valid:
            raise UsageError(f"unknown run state '{state}'." + did_you_mean(state, valid),
                             hint=f"use one of: {', '.join(valid)}")
        run_state = None if state == CRASHED else RunState(state)
    store = open_project_store()
    if state == CRASHED:
        runs = _crashed_runs(store, pipeline, limit)
    else:
        unfinished = run_state is not None and not run_state.is_final
        runs = store.list_runs(pipeline=pipeline, state=run_state,
                               limit=max(limit * 4, 200) if unfinished else limit)
        if unfinished:  # a crashed run is not 'running' any more
            runs = [r for r in runs if shown_state(r) == state][:limit]
    if json_out:
        print_json([run_to_json(r) for r in runs])
        return
    console = out()
    if not runs:
        what = " matching these filters" if (pipeline or state) else ""
        console.print(f"No runs{what} yet. Start one with: cadenza run FILE[:PIPELINE]")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("RUN ID", "PIPELINE", "STATE", "TRIGGER", "LOGICAL DATE", "STARTED",
                "DURATION"):
        table.add_column(col, no_wrap=True)
    for r in runs:
        table.add_row(escape(r.run_id), escape(r.pipeline), styled_state(shown_state(r)),
                      escape(r.trigger), format_time(r.logical_date),
                      format_time(r.started_at or r.created_at),
                      format_duration(duration_s(r.started_at, r.ended_at)))
    console.print(table)


def _crashed_runs(store: Any, pipeline: str | None, limit: int) -> list[RunRecord]:
    found = [r for st in (RunState.RUNNING, RunState.QUEUED)
             for r in store.list_runs(pipeline=pipeline, state=st, limit=10_000)
             if shown_state(r) == CRASHED]
    found.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return found[:limit]


@app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a run: parameters, timings and every task instance.

    For each task instance: map index, state, attempts, duration, cache origin and error.
    """
    store = open_project_store()
    rid = store.resolve_run_id(run_id)
    run = store.get_run(rid)
    tis = store.get_task_instances(rid)
    attempts = store.get_attempts(rid)
    metrics = store.get_metrics(rid)
    if json_out:
        print_json(run_detail_json(run, tis, attempts, metrics))
        return
    print_run_detail(run, tis, metrics)


def in_graph_order(run: RunRecord, tis: Sequence[TaskInstanceRecord]
                   ) -> list[TaskInstanceRecord]:
    """The run's task instances with upstream tasks first (the order recorded with the run;
    the store's order, by task id, for runs recorded before it was), map indexes in order."""
    order = {task_id: i for i, task_id in enumerate(run.task_order)}
    return sorted(tis, key=lambda t: (order.get(t.task_id, len(order)), t.task_id, t.map_index))


OUTPUT_CHARS = 40  # a small JSON output is shown up to this many characters


def _output_text(ti: TaskInstanceRecord) -> str:
    """An artifact output's SHA-256 prefix (what `cadenza lineage` takes), a small JSON
    output's value (cut to OUTPUT_CHARS), "-" for none."""
    from cadenza.artifacts.lineage import SHA_CHARS

    ref = ti.output
    if ref is None:
        return "-"
    if ref.kind == "json":
        import json

        text = json.dumps(ref.value, default=str, ensure_ascii=False)
        return text if len(text) <= OUTPUT_CHARS else text[:OUTPUT_CHARS - 1] + "…"
    if not ref.sha256:
        return "-"
    return ref.sha256[:SHA_CHARS]


def print_run_detail(run: RunRecord, tis: Sequence[TaskInstanceRecord],
                     metrics: Sequence[MetricRecord] = ()) -> None:
    import json

    from rich.table import Table

    console = out()
    shown = shown_state(run)
    console.print(f"[bold]Run {escape(run.run_id)}[/]  pipeline [bold]{escape(run.pipeline)}[/]  "
                  f"{styled_state(shown)}")
    if shown == CRASHED:
        console.print(
            f"[magenta]Its driver ({escape(run.driver_id or 'none')}) is gone: last heartbeat "
            f"{format_time(run.heartbeat_at)}. Finish it with: [bold]cadenza resume "
            f"{escape(run.run_id)}[/] (or stop it: cadenza runs cancel {escape(run.run_id)})[/]")
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="dim")
    meta.add_column()
    meta.add_row("trigger", escape(run.trigger))
    meta.add_row("executor", escape(run.executor or "-"))
    meta.add_row("params", escape(json.dumps(run.params, default=str)))
    meta.add_row("created", format_time(run.created_at))
    meta.add_row("started", format_time(run.started_at))
    meta.add_row("ended", format_time(run.ended_at))
    meta.add_row("duration", format_duration(duration_s(run.started_at, run.ended_at)))
    if run.logical_date is not None:
        meta.add_row("logical date", format_time(run.logical_date))
    if run.source:
        meta.add_row("source", escape(run.source))
    if run.cancel_requested_at is not None:
        meta.add_row("cancel requested", format_time(run.cancel_requested_at))
    if run.error:
        meta.add_row("error", f"[red]{escape(run.error)}[/]")
    console.print(meta)
    console.print()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("TASK", "STATE", "ATTEMPTS", "DURATION", "CACHE", "OUTPUT", "ERROR"):
        table.add_column(col, no_wrap=col != "ERROR", overflow="fold")
    for t in in_graph_order(run, tis):
        name = label(t.task_id, t.map_index)
        if t.map_index >= 0:
            name = "  " + name
        elif t.map_count is not None:
            name = f"{t.task_id} ({t.map_count} mapped)"
        cache = "-"
        if t.cache_origin:
            origin = t.cache_origin
            src = label(str(origin.get("task_id", t.task_id)), int(origin.get("map_index", -1)))
            cache = f"run {origin.get('run_id', '?')} {src}"
        error = ""
        if t.error is not None and t.state in (TaskState.FAILED, TaskState.UP_FOR_RETRY,
                                               TaskState.CANCELLED):
            error = t.error.first_line()
        elif t.state in (TaskState.UPSTREAM_FAILED, TaskState.SKIPPED,
                         TaskState.RUNNING) and t.reason:
            error = t.reason  # running: e.g. a sensor step "waiting for a file matching ..."
        attempts = str(t.attempt) if t.map_count is None else "-"
        table.add_row(escape(name), styled_state(t.state), attempts,
                      format_duration(duration_s(t.started_at, t.ended_at)), escape(cache),
                      escape(_output_text(t)),
                      f"[red]{escape(error)}[/]" if t.state is TaskState.FAILED else escape(error))
    console.print(table)
    if metrics:
        console.print()
        mt = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("TASK", "KIND", "NAME", "VALUE"):
            mt.add_column(col)
        for m in metrics:
            mt.add_row(escape(label(m.task_id, m.map_index)), m.kind, escape(m.name),
                       escape(m.value))
        console.print(mt)


@app.command("cancel")
def cancel_run_command(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for the run's driver to stop it.")] = 30.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cancel a run from any terminal, whoever drives it (cadenza run, a script, a scheduler).

    Running attempts are killed on the processes executor, and interrupted at their next
    Python bytecode on threads/inline; every unfinished task instance becomes cancelled.
    A run nobody drives (queued, or its driver died) is cancelled at once. The run stays
    resumable: `cadenza resume RUN_ID`.

    Exit code: 0 cancelled, 1 the run had already ended, 2 no such run, 3 requested but
    its driver has not stopped it within --wait.
    """
    from cadenza.engine.cancel import cancel_run

    report = cancel_run(run_id, wait_s=wait)
    code = {"cancelled": 0, "finished": 1, "requested": 3}[report.outcome]
    if json_out:
        print_json({"run_id": report.run_id, "pipeline": report.pipeline,
                    "outcome": report.outcome, "by": report.by, "was": str(report.was),
                    "state": str(report.state), "executor": report.executor,
                    "crashed": report.orphaned, "exit_code": code})
        raise typer.Exit(code)
    console = out()
    rid, name = escape(report.run_id), escape(report.pipeline)
    if report.outcome == "finished":
        console.print(f"Run {rid} of pipeline {name} already ended {report.state}; "
                      "nothing to cancel.")
        raise typer.Exit(code)
    if report.outcome == "requested":
        console.print(f"Cancel of run {rid} of pipeline {name} is recorded, but its driver "
                      f"has not stopped it within {wait:g} s; it stops at its next checkpoint. "
                      f"Check with: cadenza runs show {rid}")
        raise typer.Exit(code)
    console.print(f"Cancelled run {rid} of pipeline {name}.")
    if report.by == "engine":
        why = ("it was queued and no driver had started it" if report.was is RunState.QUEUED
               and not report.orphaned else "its driver was gone (crashed)")
        console.print(f"  No process was driving it ({why}): "
                      "its unfinished tasks were recorded as cancelled.")
    elif report.executor == "processes":
        console.print("  Its driver stopped it: running tasks were killed (their worker "
                      "processes), the rest recorded as cancelled.")
    else:
        console.print(f"  Its driver stopped it: on {escape(report.executor)}, a running task "
                      "is interrupted at its next Python bytecode (a blocking call such as "
                      "time.sleep() returns first); the rest recorded as cancelled.")
    console.print(f"Resume it with: [bold]cadenza resume {rid}[/]")
    raise typer.Exit(code)
