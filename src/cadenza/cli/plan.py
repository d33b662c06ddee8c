"""`cadenza plan FILE[:PIPELINE]`: before running, which tasks the cache would serve and which
would run, and why.

What belongs here: turning the command line into a `plan_pipeline` call (parameters are read
exactly as `cadenza run` reads them) and showing its entries as a table or JSON. What does
not: the prediction itself (`engine/preview.py`, which computes keys the way the run will).

Mapped tasks: the table shows one summary line per mapped task ("N of M instances cached");
`--all` adds a line per instance. `--json` always lists every entry. Exit code: 0 (a plan
was printed), 2 for a usage, definition or parameter error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from cadenza.cli.console import escape, note, out, print_json

if TYPE_CHECKING:
    from cadenza.engine.preview import PlanEntry

DECISION_STYLES = {"cached": "green", "will run": "yellow"}


def plan_command(
    target: Annotated[str, typer.Argument(
        metavar="FILE[:PIPELINE]",
        help="A pipeline file, with :PIPELINE when it defines several; or a pipeline name "
        "of the project (cadenza.toml).")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="NAME=VALUE",
        help="A pipeline parameter, read as `cadenza run` reads it (n=5 is an int; lists "
        "and dicts as JSON). Repeat for several.")] = None,
    show_all: Annotated[bool, typer.Option(
        "--all", help="Also show one line per instance of mapped tasks.")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print JSON: every entry, per-instance lines included.")] = False,
) -> None:
    """Show which tasks a run would serve from the cache and which it would run, and why.

    Nothing is run or recorded. Reasons: cache hit, code changed (which function), global
    or closure NAME changed (a value the code reads), input changed (which argument),
    version changed, expired, no entry, upstream will run, cache off, not cacheable (it
    reads a value with no stable hash: one warning line on stderr says which and the fix).
    """
    from cadenza.cli.discovery import resolve_pipeline
    from cadenza.cli.params import parse_params, validate_params
    from cadenza.core.settings import get_settings

    settings = get_settings()
    pipe = resolve_pipeline(target, settings)
    params = parse_params(pipe, param or [])
    validate_params(pipe, params)
    from cadenza.engine.preview import plan_pipeline

    entries = plan_pipeline(pipe, params, settings=settings)
    if json_out:
        print_json([e.to_json() for e in entries])
        return
    print_plan(pipe.name, entries, show_all=show_all)


def print_plan(pipeline: str, entries: Sequence[PlanEntry], *, show_all: bool) -> None:
    from rich.table import Table

    console = out()
    tasks = [e for e in entries if e.map_index is None or e.map_index < 0]  # one per task
    cached = sum(1 for e in tasks if e.is_cached)
    console.print(f"Plan for pipeline [bold]{escape(pipeline)}[/]: {cached} of {len(tasks)} "
                  f"task{'s' if len(tasks) != 1 else ''} cached, {len(tasks) - cached} will run")
    shown = [e for e in entries if show_all or e.map_index is None or e.map_index < 0]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("TASK", "DECISION", "REASON"):
        table.add_column(col, no_wrap=col != "REASON", overflow="fold")
    for e in shown:
        name = f"  {e.label}" if e.map_index is not None and e.map_index >= 0 else e.label
        style = DECISION_STYLES.get(e.decision)
        decision = f"[{style}]{escape(e.decision)}[/]" if style else escape(e.decision)
        table.add_row(escape(name), decision, escape(e.reason))
    console.print(table)
    hidden = len(entries) - len(shown)
    if hidden:
        note(f"{hidden} per-instance line{'s' if hidden != 1 else ''} of mapped tasks hidden; "
             "--all shows them")
