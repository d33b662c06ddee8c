"""Output helpers shared by every command: consoles, errors, JSON, durations.

What belongs here: how the CLI talks to a human or a script (rich consoles on stdout and
stderr, the one-line error format, `--json` output, small formatters). What does not: any
command's logic, and anything that imports the engine or the store (commands import those
inside their functions, so `cadenza --help` stays fast).

CLI output is not logging (STYLE §7): results go to stdout through a rich Console, errors
and notes to stderr. `NO_COLOR` and a non-terminal stdout give plain text.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from cadenza.core.states import STATE_COLOURS, TaskState

if TYPE_CHECKING:
    from rich.console import Console

# Set by the global `--debug` option (or CADENZA_DEBUG=1): show tracebacks of errors.
DEBUG = {"enabled": bool(os.environ.get("CADENZA_DEBUG"))}

# The process's real stdout/stderr, kept before any in-process task replaces sys.stdout with
# its capturing stream (executors/worker.py does that on the first in-process attempt).
_STDOUT: IO[str] = sys.stdout
_STDERR: IO[str] = sys.stderr
_consoles: dict[str, Console] = {}


def is_plain() -> bool:
    """True when output should be plain lines: not a terminal, NO_COLOR, or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return True
    try:
        return not _STDOUT.isatty()
    except (AttributeError, ValueError):
        return True


def _make(stream: IO[str]) -> Console:
    from rich.console import Console

    tty = False
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        pass
    width = None
    if not tty and not os.environ.get("COLUMNS"):
        width = 120  # scripts and pipes: don't wrap ids and error lines at 80 columns
    return Console(
        file=stream,
        width=width,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
        highlight=False,
        soft_wrap=not tty,  # pipes and files: one line stays one line
        emoji=False,
    )


def out() -> Console:
    """The stdout console (results)."""
    if "out" not in _consoles:
        _consoles["out"] = _make(_STDOUT)
    return _consoles["out"]


def err() -> Console:
    """The stderr console (errors, notes, hints)."""
    if "err" not in _consoles:
        _consoles["err"] = _make(_STDERR)
    return _consoles["err"]


def escape(text: object) -> str:
    from rich.markup import escape as _escape

    return _escape(str(text))


def print_json(data: Any) -> None:
    """JSON on stdout for scripts: one document, no colour, no wrapping."""
    _STDOUT.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    _STDOUT.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def note(message: str) -> None:
    """A dim line on stderr (progress notes that scripts should not parse)."""
    err().print(message, style="dim")


def render_error(exc: BaseException) -> None:
    """One readable error on stderr: where -> what, then the fix.

    CadenzaError's pipeline/task/hint fields are printed as they are; a DefinitionError
    lists every problem it found.
    """
    from cadenza.core.errors import CadenzaError, DefinitionError

    console = err()
    if isinstance(exc, DefinitionError) and exc.is_listing:
        console.print(f"[bold red]error:[/] {escape(exc._render())}")
        return
    if isinstance(exc, CadenzaError):
        where = []
        if exc.pipeline:
            where.append(f"pipeline '{exc.pipeline}'")
        if exc.task:
            where.append(f"task '{exc.task}'")
        head = f"{', '.join(where)}: {exc.message}" if where else exc.message
        console.print(f"[bold red]error:[/] {escape(head)}")
        if exc.hint:
            console.print(f"  [bold]fix:[/] {escape(exc.hint)}")
        return
    console.print(f"[bold red]error:[/] {escape(type(exc).__name__)}: {escape(exc)}")


def format_duration(seconds: float | None) -> str:
    """0.012 s -> "12ms", 1.23 s -> "1.2s", 75 s -> "1m15s", 3700 s -> "1h01m"; None -> "-"."""
    if seconds is None:
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def duration_s(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def format_time(at: datetime | None) -> str:
    """A timestamp in the local timezone, to the second."""
    if at is None:
        return "-"
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


CRASHED = "crashed"  # how surfaces show an unfinished run nobody drives any more

# Task states; run states share their names (a run is queued, running, success, failed or
# cancelled), so the same table styles both. The colours are core/states.py's STATE_COLOURS,
# the ones the web UI draws with.
_BOLD = {TaskState.FAILED, TaskState.RUNNING, CRASHED}
STATE_STYLES: dict[str, str] = {
    str(state): f"bold {colour}" if state in _BOLD else colour
    for state, colour in STATE_COLOURS.items()
}


def styled_state(state: object) -> str:
    text = str(state)
    style = STATE_STYLES.get(text)
    return f"[{style}]{text}[/]" if style else text


def label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def did_you_mean(word: str, choices: list[str]) -> str:
    """" Did you mean 'x'?" for the closest of `choices`, or ""."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
