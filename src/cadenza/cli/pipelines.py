"""`cadenza pipelines list|check|pause|unpause`: every pipeline of the project, the files that
fail to import, checking them all for CI (`cli/check.py`), and pausing a pipeline's scheduling.

What belongs here: presenting what `discovery.py` found, with each pipeline's pause state
when the store has one (one query; a store that does not exist yet is not created for it).
A broken file is listed with its error; the other files still load. `list` exits 1 when some
file failed to import (so CI can use the command as a check), 0 otherwise. Pausing goes
through `triggers.loop.pause/unpause`; what pausing means is theirs to say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import escape, note, out, print_json
from cadenza.core.suggest import did_you_mean

if TYPE_CHECKING:
    from cadenza.core.settings import Settings
    from cadenza.graph.plan import Plan

app = typer.Typer(name="pipelines", help="The pipelines of the project; pause and unpause "
                  "their scheduling.", no_args_is_help=True)


def _type_label(annotation: Any) -> str:
    from typing import Any as AnyType

    if annotation is AnyType:
        return "any"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def paused_states(settings: Settings) -> dict[str, bool] | None:
    """Each pipeline's pause state from the store (one query), or None when the store has
    none to give: a SQLite file that does not exist yet (not created for this), or a store
    that cannot be reached (noted on stderr). Pipelines absent from the result were never
    paused."""
    from cadenza.core.errors import StoreError

    if settings.is_sqlite:
        from sqlalchemy.engine import make_url

        database = make_url(settings.database_url).database
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    try:
        from cadenza.store import open_store
        from cadenza.store.scheduling import scheduling_store

        states = scheduling_store(open_store(settings.database_url)).list_states()
    except StoreError as exc:
        note(f"pause state not shown: {exc.message}")
        return None
    return {name: state.paused for name, state in states.items()}


def pipeline_to_json(pipe: Plan, path: Path) -> dict[str, Any]:
    from cadenza.cli.discovery import display_path, schedule_text

    params = []
    for p in pipe.params:
        entry: dict[str, Any] = {"name": p.name, "type": _type_label(p.annotation),
                                 "required": not p.has_default}
        if p.has_default:
            entry["default"] = p.default
        params.append(entry)
    return {
        "name": pipe.name,
        "file": display_path(path),
        "target": f"{display_path(path)}:{pipe.name}",
        "tasks": len(pipe.graph),
        "schedule": schedule_text(pipe),
        "tags": list(pipe.tags),
        "params": params,
        "description": pipe.description.splitlines()[0] if pipe.description else "",
    }


@app.command("list")
def list_pipelines(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Files or folders to search instead of cadenza.toml's `pipelines`.",
        show_default=False)] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help='Print JSON: {"pipelines": [...], "errors": [...]}.')] = False,
) -> None:
    """List pipelines with their schedule, tags and task count.

    A file that fails to import is listed with its error (exit code 1); the others still load.
    """
    from cadenza.cli.discovery import display_path, load_project, user_path
    from cadenza.core.errors import NotFound
    from cadenza.core.settings import get_settings

    settings = get_settings()
    if paths:
        missing = [p for p in paths if not user_path(p).exists()]
        if missing:
            raise NotFound(f"no such file or folder: {missing[0]}", hint="check the path")
    files = load_project(settings, [p.resolve() for p in paths] if paths else None)
    rows = [(f, pipe) for f in files for pipe in f.pipelines.values()]
    broken = [f for f in files if f.error is not None]
    paused = paused_states(settings) if rows else None

    def to_json(pipe: Plan, path: Path) -> dict[str, Any]:
        data = pipeline_to_json(pipe, path)
        data["paused"] = None if paused is None else paused.get(pipe.name, False)
        return data

    if json_out:
        print_json({
            "pipelines": [to_json(p, f.path) for f, p in rows],
            "errors": [{"file": display_path(f.path), "error": f.error, "detail": f.detail}
                       for f in broken],
        })
        raise typer.Exit(1 if broken else 0)
    console = out()
    if rows:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        cols = ["PIPELINE", "FILE", "TASKS", "SCHEDULE", "TAGS"]
        if paused is not None:
            cols.append("PAUSED")
        for col in cols:
            table.add_column(col, no_wrap=True)
        for f, p in rows:
            data = to_json(p, f.path)
            cells = [escape(p.name), escape(data["file"]), str(data["tasks"]),
                     escape(data["schedule"] or "-"), escape(", ".join(data["tags"]) or "-")]
            if paused is not None:
                cells.append("[yellow]yes[/]" if data["paused"] else "no")
            table.add_row(*cells)
        console.print(table)
    elif not broken:
        console.print(f"No pipelines found in {len(files)} file(s). Define one with "
                      "@pipeline (from cadenza import pipeline).")
    if broken:
        e = console
        if rows:
            e.print()
        e.print(f"[bold red]{len(broken)} file(s) failed to import:[/]")
        for f in broken:
            e.print(f"  [bold]{escape(display_path(f.path))}[/]: {escape(f.error or '')}")
        e.print("  fix: `python FILE` shows the full error; `cadenza run FILE` names the "
                "problem and the fix")
        raise typer.Exit(1)


@app.command("check")
def check_pipelines(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Files or folders to check instead of cadenza.toml's `pipelines`.",
        show_default=False)] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help='Print JSON: {"ok": ..., "files": [...], "problems": [...]}.')] = False,
    pools: Annotated[list[str] | None, typer.Option(
        "--pool", help="A pool the deployment has (repeat for more): tasks may use it even "
        "if this machine's store does not have it.", show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds one file may take to import before it is stopped and reported.")] = 60.0,
    jobs: Annotated[int, typer.Option(
        help="Files imported at once, each in its own process.")] = min(4, os.cpu_count() or 1),
) -> None:
    """Check every pipeline file for CI: import each in its own process and report every
    problem of every file (definitions, schedules, triggers, pools, parameter defaults,
    import errors, names defined twice). Exit code 1 if there is any.
    """
    from cadenza.cli.check import render, run_check, to_json
    from cadenza.cli.discovery import require_project
    from cadenza.core.errors import NotFound, UsageError
    from cadenza.core.settings import get_settings
    from cadenza.engine.loading import pipeline_files

    if timeout <= 0 or jobs < 1:
        raise UsageError("--timeout must be > 0 seconds and --jobs >= 1",
                         hint="cadenza pipelines check --timeout 60 --jobs 4")
    settings = get_settings()
    if paths:
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise NotFound(f"no such file or folder: {missing[0]}", hint="check the path")
        files = pipeline_files([p.resolve() for p in paths])
    else:
        files = require_project(settings)
    if not files:
        raise NotFound("no pipeline files (*.py) to check in " +
                       ", ".join(str(p) for p in (paths or [])) if paths else
                       "no pipeline files (*.py) in the project",
                       hint="name the files or folders that hold your pipelines")
    reports = run_check(files, settings=settings, timeout_s=timeout, jobs=jobs,
                        declared_pools=set(pools or ()))
    if json_out:
        print_json(to_json(reports))
    else:
        render(reports, out())
    raise typer.Exit(1 if any(r["problems"] for r in reports) else 0)


def _known_names(name: str, store: Any, settings: Settings) -> tuple[bool, list[str]]:
    """(is `name` a pipeline the store or the project knows, the names known for a hint)."""
    from cadenza.store.scheduling import scheduling_store

    names = set(scheduling_store(store).list_states())
    if name in names or store.list_runs(pipeline=name, limit=1):
        return True, sorted(names)
    if settings.config_file is not None:
        from cadenza.cli.discovery import load_project

        names |= {n for f in load_project(settings) for n in f.pipelines}
    return name in names, sorted(names)


def _set_paused(name: str, paused: bool, *, force: bool) -> None:
    from cadenza.cli.runs import open_project_store
    from cadenza.core.errors import PipelineNotFound
    from cadenza.core.settings import get_settings
    from cadenza.store.scheduling import scheduling_store
    from cadenza.triggers.loop import pause, unpause

    settings = get_settings()
    verb = "pause" if paused else "unpause"
    store = open_project_store()
    before = scheduling_store(store).list_states().get(name)
    if before is None and not force:
        known, names = _known_names(name, store, settings)
        if not known:
            raise PipelineNotFound(
                f"no pipeline named '{name}' has runs or is in the project." +
                did_you_mean(name, names),
                hint=f"check the name with `cadenza pipelines list`, or `cadenza pipelines "
                f"{verb} {name} --force` to {verb} it before its first run")
    state = (pause if paused else unpause)(name, settings=settings)
    was = bool(before is not None and before.paused)
    console = out()
    if state.paused:
        if was:
            console.print(f"Pipeline [bold]{escape(name)}[/] was already [yellow]paused[/].")
        else:
            console.print(f"Pipeline [bold]{escape(name)}[/] is now [yellow]paused[/]: the "
                          "scheduler creates no scheduled, asset, sensor or event runs for it "
                          "(queued runs still run; backfill still works).")
        console.print(f"  undo: cadenza pipelines unpause {escape(name)}")
    elif not was:
        console.print(f"Pipeline [bold]{escape(name)}[/] is [green]active[/] (it was not "
                      "paused).")
    else:
        console.print(f"Pipeline [bold]{escape(name)}[/] is now [green]active[/]: the "
                      "scheduler creates its due runs again at its next tick (with catchup, "
                      "the intervals missed while paused too).")


_FORCE_HELP = "Even if no pipeline of that name has runs or is in the project."


@app.command("pause")
def pause_pipeline(
    name: Annotated[str, typer.Argument(help="The pipeline's name.")],
    force: Annotated[bool, typer.Option("--force", help=_FORCE_HELP)] = False,
) -> None:
    """Pause a pipeline: the scheduler creates no new runs for it until it is unpaused.

    No scheduled, asset, sensor or event runs; its queued and running runs still finish.
    """
    _set_paused(name, True, force=force)


@app.command("unpause")
def unpause_pipeline(
    name: Annotated[str, typer.Argument(help="The pipeline's name.")],
    force: Annotated[bool, typer.Option("--force", help=_FORCE_HELP)] = False,
) -> None:
    """Unpause a pipeline: the scheduler creates its due runs again."""
    _set_paused(name, False, force=force)
