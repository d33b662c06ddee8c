"""`cadenza pools set|list`: named slot counts that cap how many tasks of a pool run at once.

What belongs here: reading and writing pools through the store's public API. What does not:
admission (the engine reads the pools when a run starts).
"""

from __future__ import annotations

from typing import Annotated

import typer

from cadenza.cli.console import escape, out, print_json

app = typer.Typer(
    name="pools",
    help="Pools: named slot counts shared by every run (@task(pool=...)).",
    no_args_is_help=True,
)


@app.command("set")
def set_pool(
    name: Annotated[str, typer.Argument(help="Pool name, as in @task(pool=NAME).")],
    slots: Annotated[int, typer.Argument(help="How many tasks of this pool may run at once "
                                         "(0 pauses the pool).")],
    description: Annotated[str, typer.Option("--description", "-d",
                                             help="What the pool guards.")] = "",
) -> None:
    """Create a pool or change its slots."""
    from cadenza.cli.runs import open_project_store
    from cadenza.core.errors import UsageError

    if not name.strip():
        raise UsageError("a pool name cannot be empty", hint="cadenza pools set gpu 2")
    if slots < 0:
        raise UsageError(f"pool '{name}': slots must be 0 or more, got {slots}",
                         hint=f"cadenza pools set {name} 4  (0 pauses the pool)")
    store = open_project_store()
    before = store.get_pool(name)
    pool = store.set_pool(name, slots, description or (before.description if before else ""))
    if before is None:
        out().print(f"Created pool [bold]{escape(pool.name)}[/] with {pool.slots} slots.")
    else:
        out().print(f"Pool [bold]{escape(pool.name)}[/]: {before.slots} -> {pool.slots} slots.")


@app.command("list")
def list_pools(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (a list of pools).")] = False,
) -> None:
    """List pools and their slots."""
    from cadenza.cli.runs import open_project_store

    pools = open_project_store().list_pools()
    if json_out:
        print_json([{"name": p.name, "slots": p.slots, "description": p.description}
                    for p in pools])
        return
    console = out()
    if not pools:
        console.print("No pools yet (the 'default' pool is created by the first run). "
                      "Create one: cadenza pools set NAME SLOTS")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("POOL", "SLOTS", "DESCRIPTION"):
        table.add_column(col)
    for p in pools:
        table.add_row(escape(p.name), str(p.slots), escape(p.description))
    console.print(table)
