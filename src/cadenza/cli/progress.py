"""Live progress of a run, and the summary printed when it ends.

What belongs here: watching a run's task instances (read from the store by one thread,
every 0.2 s, one SELECT each time) and drawing them, as a rich progress bar plus a compact
table in a terminal, or as one plain line per change when stdout is not a terminal or
NO_COLOR is set; and the end-of-run summary with the commands to look further.
What does not: starting, cancelling or resuming runs (`run.py` does that through the engine).

Reading the store rather than the driver's memory keeps the CLI on the public API and costs
one indexed query per tick; the driver is never slowed down or locked by the display.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cadenza.cli.console import (
    duration_s,
    escape,
    format_duration,
    label,
    styled_state,
)
from cadenza.core.states import FINAL_TASK_STATES, RunState, TaskState

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from cadenza.core.records import RunRecord, TaskInstanceRecord

POLL_EVERY_S = 0.2
DONE_OK = frozenset({TaskState.SUCCESS, TaskState.CACHED, TaskState.SKIPPED})
BAD = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED})
MAX_ROWS = 12


def leaves(rows: Sequence[TaskInstanceRecord]) -> list[TaskInstanceRecord]:
    """Task instances that run: expanded mapped tasks count by their instances."""
    return [r for r in rows if r.map_count is None or r.map_index >= 0]


def _now() -> datetime:
    return datetime.now(UTC)


def _elapsed(row: TaskInstanceRecord) -> float | None:
    if row.state.is_final:
        return duration_s(row.started_at, row.ended_at)
    if row.started_at is not None and row.state in (TaskState.RUNNING, TaskState.QUEUED):
        return (_now() - row.started_at).total_seconds()
    return None


class PlainView:
    """One line per task instance state change: scripts and CI logs can read it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: dict[tuple[str, int], str] = {}

    def start(self, header: str) -> None:
        self.console.print(escape(header))

    def baseline(self, rows: Sequence[TaskInstanceRecord]) -> None:
        """States already reported (a resumed run's finished tasks): not printed again."""
        for r in leaves(rows):
            self.seen[(r.task_id, r.map_index)] = str(r.state)

    def update(self, rows: Sequence[TaskInstanceRecord]) -> None:
        changed = [r for r in leaves(rows)
                   if self.seen.get((r.task_id, r.map_index)) != str(r.state)]
        # In the order things happened, not in the store's task id order.
        far = datetime.max.replace(tzinfo=UTC)
        changed.sort(key=lambda r: (r.ended_at or r.started_at or far))
        for row in changed:
            state = row.state
            self.seen[(row.task_id, row.map_index)] = state
            if state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.QUEUED):
                continue
            took = ""
            if state.is_final:
                took = format_duration(duration_s(row.started_at, row.ended_at))
            parts = [f"{_now().astimezone():%H:%M:%S}", f"{state:<15}", f"{took:>6}",
                     label(row.task_id, row.map_index)]
            if state is TaskState.UP_FOR_RETRY and row.error is not None:
                parts.append(f"attempt {row.attempt} failed: {row.error.first_line()}")
            elif state is TaskState.FAILED and row.error is not None:
                parts.append(row.error.first_line())
            elif state is TaskState.CACHED and row.cache_origin:
                parts.append(f"from run {row.cache_origin.get('run_id', '?')}")
            self.console.print(escape("  ".join(parts)))

    def note(self, message: str) -> None:
        self.console.print(escape(message))

    def stop(self) -> None:
        pass


class LiveView:
    """A progress bar and a compact table of running / failed / recently done tasks."""

    def __init__(self, console: Console, title: str) -> None:
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.title = title
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
        )
        self.bar = self.progress.add_task(title, total=None, counts="")
        self.rows: Sequence[TaskInstanceRecord] = ()
        self.notes: list[str] = []
        self.finished_order: list[tuple[str, int]] = []
        self.live = Live(
            self._render(),
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._lock = threading.Lock()

    def start(self, header: str) -> None:
        self.console.print(escape(header))
        self.live.start(refresh=True)

    def baseline(self, rows: Sequence[TaskInstanceRecord]) -> None:
        pass

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table

        rows = leaves(self.rows)
        states = [r.state for r in rows]
        done = sum(1 for s in states if s in FINAL_TASK_STATES)
        counts = []
        for name, style in ((TaskState.RUNNING, "blue"), (TaskState.SUCCESS, "green"),
                            (TaskState.CACHED, "cyan"), (TaskState.FAILED, "red"),
                            (TaskState.UP_FOR_RETRY, "yellow"),
                            (TaskState.UPSTREAM_FAILED, "red"), (TaskState.SKIPPED, "dim"),
                            (TaskState.CANCELLED, "yellow")):
            n = states.count(name)
            if n:
                counts.append(f"[{style}]{n} {name}[/]")
        self.progress.update(self.bar, total=max(len(rows), 1) if rows else None,
                             completed=done, counts="  ".join(counts))

        for r in rows:
            key = (r.task_id, r.map_index)
            if r.state.is_final and key not in self.finished_order:
                self.finished_order.append(key)
        by_key = {(r.task_id, r.map_index): r for r in rows}
        running = [r for r in rows if r.state in (TaskState.RUNNING, TaskState.QUEUED,
                                                  TaskState.UP_FOR_RETRY)]
        bad = [by_key[k] for k in self.finished_order if by_key[k].state in BAD]
        ok = [by_key[k] for k in self.finished_order if by_key[k].state in DONE_OK]
        shown_ok = ok[-max(3, MAX_ROWS - len(running) - len(bad)):] if ok else []
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False,
                      expand=False)
        table.add_column("state")
        table.add_column("task")
        table.add_column("time", justify="right")
        table.add_column("")
        hidden_ok = len(ok) - len(shown_ok)
        if hidden_ok > 0:
            table.add_row("[dim]…[/]", f"[dim]{hidden_ok} more done[/]", "", "")
        for r in shown_ok:
            extra = ""
            if r.state is TaskState.CACHED and r.cache_origin:
                extra = f"[dim]from run {escape(r.cache_origin.get('run_id', '?'))}[/]"
            table.add_row(styled_state(r.state), escape(label(r.task_id, r.map_index)),
                          format_duration(_elapsed(r)), extra)
        for r in bad[:MAX_ROWS]:
            extra = escape(r.error.first_line()) if r.error is not None else escape(r.reason or "")
            table.add_row(styled_state(r.state), escape(label(r.task_id, r.map_index)),
                          format_duration(_elapsed(r)), f"[red]{extra}[/]" if extra else "")
        if len(bad) > MAX_ROWS:
            table.add_row("[dim]…[/]", f"[dim]{len(bad) - MAX_ROWS} more[/]", "", "")
        for r in running[:MAX_ROWS]:
            extra = ""
            if r.state is TaskState.UP_FOR_RETRY:
                extra = f"attempt {r.attempt} failed, retrying"
                if r.error is not None:
                    extra += f": {r.error.first_line()}"
                extra = f"[yellow]{escape(extra)}[/]"
            elif r.attempt > 1:
                extra = f"[yellow]attempt {r.attempt}[/]"
            table.add_row(styled_state(r.state), escape(label(r.task_id, r.map_index)),
                          format_duration(_elapsed(r)), extra)
        if len(running) > MAX_ROWS:
            table.add_row("[dim]…[/]", f"[dim]{len(running) - MAX_ROWS} more running[/]", "", "")
        parts: list[Any] = [self.progress]
        if table.row_count:
            parts.append(table)
        parts.extend(f"[yellow]{escape(n)}[/]" for n in self.notes)
        return Group(*parts)

    def update(self, rows: Sequence[TaskInstanceRecord]) -> None:
        with self._lock:
            self.rows = rows
            self.live.update(self._render(), refresh=True)

    def note(self, message: str) -> None:
        with self._lock:
            self.notes.append(message)
            self.live.update(self._render(), refresh=True)

    def stop(self) -> None:
        with self._lock:
            self.live.stop()


# The logger of per-task environment builds (executors/envs.py), by name: the CLI never
# imports executors. Its INFO records carry the run id.
ENVS_LOGGER = "cadenza.executors.envs"


class _EnvNotes(logging.Handler):
    """While a run is watched: its environment builds (INFO records of ENVS_LOGGER with its
    run id) become notes of the view; the logger's other warnings go on to Cadenza's handlers."""

    def __init__(self, run_id: str, view: PlainView | LiveView) -> None:
        super().__init__(logging.INFO)
        self.run_id = run_id
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "run_id", None) == self.run_id:
            try:
                self.view.note(record.getMessage())
            except Exception:  # noqa: BLE001 - logging must never break the run
                self.handleError(record)
        elif record.levelno >= logging.WARNING:
            logging.getLogger("cadenza").handle(record)


class RunWatcher:
    """Reads a run's task instances from the store every POLL_EVERY_S on a daemon thread."""

    def __init__(self, store: Any, run_id: str, view: PlainView | LiveView) -> None:
        self.store = store
        self.run_id = run_id
        self.view = view
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cadenza-cli-progress",
                                        daemon=True)
        self._notes = _EnvNotes(run_id, view)
        self._saved: tuple[int, bool] | None = None

    def start(self) -> None:
        envs_log = logging.getLogger(ENVS_LOGGER)
        self._saved = (envs_log.level, envs_log.propagate)
        envs_log.addHandler(self._notes)
        if not envs_log.isEnabledFor(logging.INFO):
            envs_log.setLevel(logging.INFO)
        envs_log.propagate = False
        self._thread.start()

    def _poll(self) -> None:
        try:
            rows = self.store.get_task_instances(self.run_id)
        except Exception:  # noqa: BLE001 - a missed frame; the next tick tries again
            return
        self.view.update(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._poll()
            self._stop.wait(max(0.0, POLL_EVERY_S - (time.monotonic() - started)))

    def stop(self) -> None:
        """Stop polling, draw the final states once more, and release the terminal."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._poll()
        envs_log = logging.getLogger(ENVS_LOGGER)
        envs_log.removeHandler(self._notes)
        if self._saved is not None:
            envs_log.setLevel(self._saved[0])
            envs_log.propagate = self._saved[1]
            self._saved = None
        self.view.stop()


def make_view(console: Console, title: str, *, plain: bool) -> PlainView | LiveView:
    return PlainView(console) if plain else LiveView(console, title)


def print_summary(
    console: Console,
    run: RunRecord,
    rows: Sequence[TaskInstanceRecord],
    *,
    interrupted: bool = False,
    resumable: bool = True,
) -> None:
    """The end of a run: id, state, counts, failed tasks, and what to type next."""
    state = run.state
    leaf_rows = leaves(rows)
    counts: dict[str, int] = {}
    for r in leaf_rows:
        counts[str(r.state)] = counts.get(str(r.state), 0) + 1
    took = format_duration(duration_s(run.started_at, run.ended_at))
    verdict = {RunState.SUCCESS: "[bold green]succeeded[/]",
               RunState.FAILED: "[bold red]failed[/]",
               RunState.CANCELLED: "[bold yellow]was cancelled[/]"}.get(state, styled_state(state))
    console.print()
    console.print(f"Run [bold]{escape(run.run_id)}[/] of pipeline [bold]{escape(run.pipeline)}"
                  f"[/] {verdict} in {took}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    noun = "task instance" if len(leaf_rows) == 1 else "task instances"
    console.print(f"  {len(leaf_rows)} {noun}: {escape(summary) or 'none'}")
    if run.error:
        console.print(f"  [red]error:[/] {escape(run.error)}")
    failed = [r for r in leaf_rows if r.state is TaskState.FAILED]
    if failed:
        console.print("[bold red]Failed:[/]")
        width = max(len(label(r.task_id, r.map_index)) for r in failed[:20])
        for r in failed[:20]:
            line = r.error.first_line() if r.error is not None else (r.reason or "failed")
            console.print(f"  {escape(label(r.task_id, r.map_index)).ljust(width)}  "
                          f"{escape(line)}")
        if len(failed) > 20:
            console.print(f"  … and {len(failed) - 20} more")
    look = [f"cadenza runs show {run.run_id}"]
    if failed:
        first = failed[0]
        cmd = f"cadenza logs {run.run_id} {first.task_id}"
        if first.map_index >= 0:
            cmd += f" --map-index {first.map_index}"
        look.insert(0, cmd)
    if resumable and (state in (RunState.FAILED, RunState.CANCELLED) or interrupted):
        look.append(f"cadenza resume {run.run_id}")
    console.print("Look further:" if state is not RunState.SUCCESS else "Details:")
    for cmd in look:
        console.print(f"  [cyan]{escape(cmd)}[/]")
