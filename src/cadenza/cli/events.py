"""`cadenza events list`: the messages event triggers processed, with the run each made or
why it made none.

What belongs here: reading the recorded messages through `triggers.events.list_events` and
showing them as a table or JSON. What does not: consuming messages (`cadenza scheduler`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cadenza.cli.console import escape, format_time, out, print_json

app = typer.Typer(
    name="events",
    help="Messages processed by event triggers (Redis Streams, NATS JetStream).",
    no_args_is_help=True,
)

STATUSES = ("run", "invalid")


def event_to_json(e: Any) -> dict[str, Any]:
    return {"received_at": e.received_at, "pipeline": e.pipeline, "source": e.source,
            "message_id": e.message_id, "status": e.status, "run_id": e.run_id,
            "error": e.error, "payload": e.payload}


def _styled_status(status: str) -> str:
    return "[bold red]invalid[/]" if status == "invalid" else f"[green]{escape(status)}[/]"


@app.command("list")
def list_events_command(
    pipeline: Annotated[str | None, typer.Option(
        "--pipeline", "-p", help="Only messages of this pipeline.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", "-s", help="Only messages with this status: run (a run was created) or "
        "invalid (no run; see the error).")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=1, help="At most this many messages, newest first.")] = 50,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print JSON (a list of messages, with their payloads).")] = False,
) -> None:
    """List processed messages, newest first, with their run or validation error."""
    from cadenza.cli.console import did_you_mean
    from cadenza.core.errors import CadenzaError
    from cadenza.core.settings import get_settings
    from cadenza.triggers.events import list_events

    if status is not None and status not in STATUSES:
        raise CadenzaError(f"unknown event status '{status}'." + did_you_mean(status,
                                                                              list(STATUSES)),
                           hint=f"use one of: {', '.join(STATUSES)}")
    events = list_events(pipeline=pipeline, status=status, limit=limit,
                         settings=get_settings())
    if json_out:
        print_json([event_to_json(e) for e in events])
        return
    console = out()
    if not events:
        what = " matching these filters" if (pipeline or status) else ""
        console.print(f"No messages{what} yet. Pipelines with triggers=[EventTrigger(url)] "
                      "get them while `cadenza scheduler` runs.")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("RECEIVED", "PIPELINE", "SOURCE", "MESSAGE ID", "STATUS", "RUN ID"):
        table.add_column(col, no_wrap=True)
    # The error takes the width left and is cut there (--json has all of it): the only
    # wrappable column, so rich narrows it first, while the cell itself never wraps.
    table.add_column("ERROR", min_width=12)
    for e in events:
        table.add_row(format_time(e.received_at), escape(e.pipeline), escape(e.source),
                      escape(e.message_id),
                      _styled_status(e.status),
                      escape(e.run_id or "-"),
                      Text(e.error.splitlines()[0] if e.error else "", no_wrap=True,
                           overflow="ellipsis"))
    console.print(table)
