"""`cadenza logs RUN_ID TASK`: the captured output of a task instance's attempts.

What belongs here: finding the attempts of a task instance in the store and printing their
log files (stdout, stderr, the task logger and the traceback of a failure, per attempt), and
`--follow`, which streams a running attempt's log as it grows and prints the rest of each
attempt when it ends, until the task instance is final.
A running attempt has no attempt row until it ends: its log so far is read where the worker
writes it (`core.logfiles.attempt_log_path`), as is an ended attempt's whose row has none.
What does not: writing logs (the worker does, one file per attempt).

Log text goes to stdout unchanged (no markup, no wrapping) so it can be piped; headers
between attempts and notes go to stdout only when several logs are printed, notes to stderr.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli import console as cli_console
from cadenza.cli.console import err, escape, label, out
from cadenza.core.logfiles import attempt_log_path
from cadenza.core.states import TaskState
from cadenza.core.suggest import did_you_mean

if TYPE_CHECKING:
    from cadenza.core.records import AttemptRecord, TaskInstanceRecord

FOLLOW_EVERY_S = 0.2


def _targets(
    tis: list[TaskInstanceRecord], task: str, map_index: int | None, run_id: str
) -> list[TaskInstanceRecord]:
    from cadenza.core.errors import TaskNotFound

    rows = [t for t in tis if t.task_id == task]
    if not rows:
        names = sorted({t.task_id for t in tis})
        raise TaskNotFound(
            f"run {run_id} has no task '{task}'." + did_you_mean(task, names),
            hint=f"tasks of this run: {', '.join(names) or '(none)'}",
        )
    summary = next((t for t in rows if t.map_index < 0), None)
    children = sorted((t for t in rows if t.map_index >= 0), key=lambda t: t.map_index)
    if map_index is None:
        return children if (summary is not None and summary.map_count is not None) else [
            summary or rows[0]]
    if summary is not None and summary.map_count is None and not children:
        if map_index < 0:
            return [summary]
        raise TaskNotFound(
            f"task '{task}' is not mapped, so it has no map index {map_index}",
            hint=f"drop --map-index: cadenza logs {run_id} {task}",
        )
    found = [t for t in children if t.map_index == map_index]
    if not found:
        count = summary.map_count if summary is not None else len(children)
        raise TaskNotFound(
            f"task '{task}' has no map index {map_index} in run {run_id}",
            hint=f"it has {count} instances: --map-index 0 to {max((count or 1) - 1, 0)}",
        )
    return found


def _log_path(logs_dir: str, run_id: str, task_id: str, map_index: int,
              attempt: int) -> str | None:
    """Where the worker writes this attempt's log, when that file exists."""
    path = attempt_log_path(logs_dir, run_id, task_id, map_index, attempt)
    return path if Path(path).is_file() else None


def _read_log(path: str, attempt: int) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        err().print(f"[yellow]the log file of attempt {attempt} is gone: {escape(path)}[/]")
    except OSError as exc:
        err().print(f"[yellow]cannot read {escape(path)}: {escape(exc)}[/]")
    return None


def _write_log(text: str) -> None:
    stream = cli_console._STDOUT
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


def _print_attempt(a: AttemptRecord, *, headers: bool, logs_dir: str) -> None:
    console = out()
    if headers:
        console.rule(f"{escape(label(a.task_id, a.map_index))} · attempt {a.attempt} · "
                     f"{escape(str(a.state))}", align="left", style="dim")
    # No log_path on the record (a cancelled or timed-out attempt, an older driver): the
    # file may still be where the worker writes it.
    path = a.log_path or _log_path(logs_dir, a.run_id, a.task_id, a.map_index, a.attempt)
    text = _read_log(path, a.attempt) if path else None
    if text:
        _write_log(text)
        return
    what = f"{label(a.task_id, a.map_index)} attempt {a.attempt} ({a.state}) wrote no output"
    if a.error is not None and a.state is not TaskState.SUCCESS:
        what += f"; it ended with {a.error.first_line()}"
    (console if headers else err()).print(f"[dim]{escape(what)}[/]")


def _not_run_note(ti: TaskInstanceRecord) -> str:
    state = ti.state
    who = label(ti.task_id, ti.map_index)
    if state in (TaskState.SKIPPED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED):
        why = f": {ti.reason}" if ti.reason else ""
        return f"{who} did not run ({state}{why})"
    if state is TaskState.CACHED:
        origin = ti.cache_origin or {}
        return (f"{who} was served from the cache (run {origin.get('run_id', '?')}); see "
                f"cadenza logs {origin.get('run_id', 'RUN')} {origin.get('task_id', ti.task_id)}")
    if state is TaskState.RUNNING:
        why = f", {ti.reason}" if ti.reason else ""
        return f"{who} is running (attempt {ti.attempt}{why}) and has written no output yet"
    return f"{who} has not run yet ({state})"


def _is_live(ti: TaskInstanceRecord, recorded: set[tuple[int, int]]) -> bool:
    """A running attempt (a task, or a sensor step between pokes) with no attempt row yet."""
    return (ti.state is TaskState.RUNNING and ti.map_count is None and ti.attempt >= 1
            and (ti.map_index, ti.attempt) not in recorded)


def _print_live(ti: TaskInstanceRecord, *, headers: bool, logs_dir: str) -> bool:
    """The log so far of a running attempt, read from the file the worker appends to while
    it runs; False when it has written nothing yet."""
    path = _log_path(logs_dir, ti.run_id, ti.task_id, ti.map_index, ti.attempt)
    text = _read_log(path, ti.attempt) if path else None
    if not text:
        return False
    if headers:
        out().rule(f"{escape(label(ti.task_id, ti.map_index))} · attempt {ti.attempt} · "
                   f"{TaskState.RUNNING}", align="left", style="dim")
    _write_log(text)
    why = f", {ti.reason}" if ti.reason else ""
    err().print(f"[dim]{escape(label(ti.task_id, ti.map_index))} is still running (attempt "
                f"{ti.attempt}{escape(why)}): this is its log so far; `cadenza logs "
                f"{escape(ti.run_id)} {escape(ti.task_id)} --follow` waits for it to end[/]")
    return True


def logs_command(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    task: Annotated[str, typer.Argument(help="Task id.")],
    map_index: Annotated[int | None, typer.Option(
        "--map-index", "-m", help="One instance of a mapped task (default: all of them).")] = None,
    attempt: Annotated[int | None, typer.Option(
        "--attempt", "-a", min=1, help="One attempt (default: every attempt, in order).")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Stream the output of running attempts as it is written, "
        "until the task instance is final.")] = False,
) -> None:
    """Print the captured output (stdout, stderr, logger, traceback) of a task's attempts."""
    from cadenza.cli.runs import open_project_store
    from cadenza.core.errors import TaskNotFound
    from cadenza.core.settings import get_settings

    store = open_project_store()
    logs_dir = str(get_settings().logs_dir)
    rid = store.resolve_run_id(run_id)
    tis = store.get_task_instances(rid)
    targets = _targets(tis, task, map_index, rid)

    def attempts_now() -> list[AttemptRecord]:
        found: list[AttemptRecord] = store.get_attempts(rid, task, map_index)
        if attempt is not None:
            found = [a for a in found if a.attempt == attempt]
        return found

    if not follow:
        found = attempts_now()
        recorded = {(a.map_index, a.attempt) for a in store.get_attempts(rid, task, map_index)}
        live = [ti for ti in targets if _is_live(ti, recorded)
                and (attempt is None or attempt == ti.attempt)]
        if attempt is not None and not found and not live:
            have = sorted({a.attempt for a in store.get_attempts(rid, task)})
            raise TaskNotFound(
                f"task '{task}' of run {rid} has no attempt {attempt}",
                hint=f"attempts recorded: {', '.join(map(str, have)) or 'none yet'}",
            )
        headers = len(found) + len(live) > 1 or len(targets) > 1
        for a in found:
            _print_attempt(a, headers=headers, logs_dir=logs_dir)
        shown = {a.map_index for a in found}
        for ti in live:
            if not _print_live(ti, headers=headers, logs_dir=logs_dir):
                err().print(escape(_not_run_note(ti)))
            shown.add(ti.map_index)
        for ti in targets:
            if ti.map_index not in shown and attempt is None:
                err().print(escape(_not_run_note(ti)))
        return
    _follow(store, rid, task, map_index, attempts_now, logs_dir, attempt)


class _Tail:
    """What `--follow` printed of each attempt's log file so far: (map_index, attempt) ->
    bytes printed. The file only grows while the attempt runs (the worker appends and
    flushes at every write); when the attempt ends, only the rest is printed."""

    def __init__(self) -> None:
        self.printed: dict[tuple[int, int], int] = {}

    def more(self, key: tuple[int, int], path: str | None, *, whole_lines: bool = True) -> str:
        """The text of `path` past what was printed for `key`, marked printed. While the
        attempt runs, whole lines only: a line being written shows once it is complete."""
        if not path:
            return ""
        done = self.printed.get(key, 0)
        try:
            with open(path, "rb") as fh:
                fh.seek(done)
                data = fh.read()
        except OSError:
            return ""  # not written yet, or gone: the attempt's end says what there is
        if whole_lines:
            data = data[: data.rfind(b"\n") + 1]  # b"\n" never occurs inside a UTF-8 char
        if not data:
            return ""
        self.printed[key] = done + len(data)
        return data.decode("utf-8", errors="replace")


def _follow(store: Any, rid: str, task: str, map_index: int | None, attempts_now: Any,
            logs_dir: str, attempt: int | None = None) -> None:
    """Stream the log of each running attempt as it grows and print each attempt when it
    ends, until the task instance (all of them, for a mapped task without --map-index) is
    final or the run has ended.

    Cases, per attempt (map_index, attempt):
      1. running, no attempt row yet: its log file is tailed every FOLLOW_EVERY_S, whole
         lines only, under a "running" header printed once;
      2. ended after being tailed: the rest of its file, then a rule with its final state;
      3. ended before we saw it run: printed whole, as `cadenza logs` does.
    """
    ended: set[tuple[int, int]] = set()
    live_header: set[tuple[int, int]] = set()
    tail = _Tail()
    stop = threading.Event()
    announced = False
    try:
        while True:
            run = store.get_run(rid)
            tis = [t for t in store.get_task_instances(rid) if t.task_id == task]
            found = attempts_now()
            for a in found:
                key = (a.map_index, a.attempt)
                if key in ended:
                    continue
                ended.add(key)
                path = a.log_path or _log_path(logs_dir, a.run_id, a.task_id, a.map_index,
                                               a.attempt)
                if key not in live_header:  # case 3
                    _print_attempt(a, headers=True, logs_dir=logs_dir)
                    continue
                text = tail.more(key, path, whole_lines=False)  # case 2
                if text:
                    _write_log(text)
                out().rule(f"{escape(label(a.task_id, a.map_index))} · attempt {a.attempt} "
                           f"· {escape(str(a.state))}", align="left", style="dim")
            recorded = ended | {(a.map_index, a.attempt) for a in found}
            for ti in tis:  # case 1
                if map_index is not None and ti.map_index != map_index:
                    continue
                if attempt is not None and ti.attempt != attempt:
                    continue
                if not _is_live(ti, recorded):
                    continue
                key = (ti.map_index, ti.attempt)
                path = attempt_log_path(logs_dir, ti.run_id, ti.task_id, ti.map_index,
                                        ti.attempt)
                text = tail.more(key, path)
                if not text:
                    continue
                if key not in live_header:
                    live_header.add(key)
                    out().rule(f"{escape(label(ti.task_id, ti.map_index))} · attempt "
                               f"{ti.attempt} · {TaskState.RUNNING}", align="left", style="dim")
                _write_log(text)
            if map_index is None:
                watched = [t for t in tis if t.map_index < 0] or tis
            else:
                watched = [t for t in tis if t.map_index == map_index]
            if watched and all(t.state.is_final for t in watched):
                if not ended:
                    for t in watched:
                        err().print(escape(_not_run_note(t)))
                return
            if run.state.is_final:
                err().print(f"run {escape(rid)} ended ({escape(str(run.state))})")
                return
            if not announced:
                state = ", ".join(sorted({str(t.state) for t in watched})) or TaskState.PENDING
                err().print(f"[dim]following {escape(task)} in run {escape(rid)} ({state}); "
                            "output is printed as the task writes it. Ctrl-C to stop.[/]")
                announced = True
            stop.wait(FOLLOW_EVERY_S)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
