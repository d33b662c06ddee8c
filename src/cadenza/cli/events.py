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
    from cadenza.core.errors import UsageError
    from cadenza.core.settings import get_settings
    from cadenza.core.suggest import did_you_mean
    from cadenza.triggers.events import list_events

    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown event status '{status}'."
                         + did_you_mean(status, list(STATUSES)),
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
    console.print(events_table(events, width=console.width))


# Narrower than this, the error is better read in the compact layout (one OUTCOME column).
ERROR_MIN = 30


def _short_source(source: str) -> str:
    """`redis://host:6379/0?stream=orders` -> `redis:orders`, `kafka://h:9092?topic=t` -> `kafka:t`
    (--json has the full source)."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(source)
    query = parse_qs(parts.query)
    for key in ("stream", "subject", "topic", "queue"):
        if query.get(key):
            return f"{parts.scheme}:{query[key][0]}"
    return source


def _compact_time(at: Any) -> str:
    """Month, day, hour and minute, in the local timezone (format_time's, shorter)."""
    return "-" if at is None else str(at.astimezone().strftime("%m-%d %H:%M"))


def _first_line(error: str | None) -> str:
    return error.splitlines()[0] if error else ""


def events_table(events: list[Any], *, width: int) -> Any:
    """The messages as a table that fits `width` columns.

    Wide enough for every column and an ERROR column of ERROR_MIN: one column each. Else
    the compact layout: short received time, the source (short) under the pipeline, and
    one OUTCOME column (a message has a run or an error, never both) that wraps. Message
    ids and run ids are folded, never cut (cut Redis ids share their prefix).
    """
    from rich.table import Table
    from rich.text import Text

    def widest(values: list[str], header: str) -> int:
        return max([len(header), *(len(v) for v in values)])

    errors = [_first_line(e.error) for e in events]
    fixed = (len(format_time(events[0].received_at))
             + widest([e.pipeline for e in events], "PIPELINE")
             + widest([e.source for e in events], "SOURCE")
             + widest([e.message_id for e in events], "MESSAGE ID")
             + widest([e.status for e in events], "STATUS")
             + widest([e.run_id or "-" for e in events], "RUN ID"))
    needed = fixed + 2 * 6 + min(widest(errors, "ERROR"), ERROR_MIN)

    table = Table(box=None, header_style="bold", pad_edge=False)
    if needed <= width:
        for col in ("RECEIVED", "PIPELINE", "SOURCE", "MESSAGE ID", "STATUS", "RUN ID"):
            table.add_column(col, no_wrap=True)
        table.add_column("ERROR", overflow="fold")  # the width left; wraps, never cut
        for e, error in zip(events, errors, strict=True):
            table.add_row(format_time(e.received_at), escape(e.pipeline), escape(e.source),
                          escape(e.message_id), _styled_status(e.status),
                          escape(e.run_id or "-"), Text(error, style="red"))
        return table
    table.add_column("RECEIVED", no_wrap=True)
    table.add_column("PIPELINE / SOURCE", overflow="fold")
    table.add_column("MESSAGE ID", overflow="fold")
    table.add_column("OUTCOME", overflow="fold")
    for e, error in zip(events, errors, strict=True):
        if e.status == "invalid":
            outcome = Text.assemble(("invalid", "bold red"), ": ", (error, "red"))
        else:
            outcome = Text.assemble((e.status, "green"), " ", e.run_id or "-")
        where = Text.assemble(e.pipeline, "\n", (_short_source(e.source), "dim"))
        table.add_row(_compact_time(e.received_at), where, Text(e.message_id), outcome)
    return table
