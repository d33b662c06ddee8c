"""`cadenza pipelines list`: every pipeline of the project, and the files that fail to import.

What belongs here: presenting what `discovery.py` found. A broken file is listed with its
error; the other files still load. Exit code 1 when some file failed to import (so CI can
use the command as a check), 0 otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cadenza.cli.console import escape, out, print_json

app = typer.Typer(name="pipelines", help="The pipelines of the project.", no_args_is_help=True)


def _type_label(annotation: Any) -> str:
    from typing import Any as AnyType

    if annotation is AnyType:
        return "any"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def pipeline_to_json(pipe: Any, path: Path) -> dict[str, Any]:
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
    from cadenza.cli.discovery import display_path, load_project
    from cadenza.core.errors import CadenzaError
    from cadenza.core.settings import get_settings

    settings = get_settings()
    if paths:
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise CadenzaError(f"no such file or folder: {missing[0]}", hint="check the path")
    files = load_project(settings, [p.resolve() for p in paths] if paths else None)
    rows = [(f, pipe) for f in files for pipe in f.pipelines.values()]
    broken = [f for f in files if f.error is not None]
    if json_out:
        print_json({
            "pipelines": [pipeline_to_json(p, f.path) for f, p in rows],
            "errors": [{"file": display_path(f.path), "error": f.error, "detail": f.detail}
                       for f in broken],
        })
        raise typer.Exit(1 if broken else 0)
    console = out()
    if rows:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("PIPELINE", "FILE", "TASKS", "SCHEDULE", "TAGS"):
            table.add_column(col, no_wrap=True)
        for f, p in rows:
            data = pipeline_to_json(p, f.path)
            table.add_row(escape(p.name), escape(data["file"]), str(data["tasks"]),
                          escape(data["schedule"] or "-"), escape(", ".join(data["tags"]) or "-"))
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
