"""`cadenza backfill FILE:PIPELINE --start D --end D`: create the missing interval runs of a
date range, idempotently, and drive them.

What belongs here: turning the command line into a `triggers.backfill.backfill()` call,
showing its progress (a progress bar in a terminal, one line per finished run otherwise)
and the summary. What does not: which intervals exist or are missing (`triggers/`).

Exit codes: 0 every interval of the range has a run that succeeded or is still to run, 1
an interval's run failed or was cancelled (driven now or by an earlier call: the summary
names each one; `--rerun-failed` resumes them), 2 a usage error (bad date, a pipeline without a schedule): nothing was created,
130 interrupted.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import err, escape, is_plain, out, print_json, styled_state
from cadenza.core.states import RunState

if TYPE_CHECKING:
    from cadenza.triggers.backfill import BackfillProgress, BackfillResult
    from cadenza.triggers.cron import Interval

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
# Failed intervals and dropped dates listed one by one up to this many.
LISTED = 10


def check_date(value: str, option: str) -> str:
    """`value` if it reads as YYYY-MM-DD or an ISO date-time; a usage error otherwise."""
    from cadenza.core.errors import UsageError

    try:
        datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{option} '{value}' is not a date or date-time",
                         hint=f"use ISO format: {option} 2026-01-31 or {option} "
                         "2026-01-31T02:00 (naive values are in the pipeline's timezone)"
                         ) from None
    return value.strip()


class _Progress:
    """`on_progress` for backfill(): a rich bar in a terminal, plain lines otherwise.

    Called from backfill's driving threads, hence the lock."""

    def __init__(self, pipeline: str, *, plain: bool, quiet: bool) -> None:
        self.pipeline = pipeline
        self.plain = plain
        self.quiet = quiet
        self.bar: Any = None
        self.task: Any = None
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, p: BackfillProgress) -> None:
        if self.quiet:
            return
        with self._lock:
            if p.run_id is None:  # the runs exist now; driving starts
                self._start(p.total)
                return
            state = str(p.state) if p.state is not None else "claimed elsewhere"
            self.counts[state] += 1
            if self.bar is not None:
                counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
                self.bar.update(self.task, completed=p.done, counts=counts)
            else:
                out().print(f"[{p.done}/{p.total}] run {escape(p.run_id)} "
                            f"{styled_state(state)}")

    def _start(self, total: int) -> None:
        console = out()
        console.print(f"Driving {total} new run{'s' if total != 1 else ''} of pipeline "
                      f"{escape(self.pipeline)}")
        if self.plain:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                            TimeElapsedColumn(), console=console)
        self.task = self.bar.add_task(escape(self.pipeline), total=total, counts="")
        self.bar.start()

    def stop(self) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.stop()
                self.bar = None


def logical_text(when: datetime, timezone: str) -> str:
    """A logical date in the pipeline's time zone: the day alone when it starts at midnight."""
    from cadenza.triggers.cron import zone

    local = when.astimezone(zone(timezone))
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return local.date().isoformat()
    return local.isoformat(timespec="minutes")


def _dates_text(intervals: list[Interval], timezone: str) -> str:
    dates = [logical_text(i.start, timezone) for i in intervals]
    if len(dates) <= LISTED:
        return ", ".join(dates)
    return f"{dates[0]} to {dates[-1]}"


def result_to_json(result: BackfillResult) -> dict[str, Any]:
    counts = Counter(str(s) for s in result.states.values())
    return {
        "pipeline": result.pipeline,
        "intervals": len(result.intervals),
        "created": list(result.created),
        "existing": result.existing,
        "queued": list(result.queued),
        "states": dict(sorted(counts.items())),
        "runs": {rid: str(s) for rid, s in result.states.items()},
        "rerun": list(result.rerun),
        "failed": [{"logical_date": f.interval.start, "run_id": f.run_id,
                    "state": str(f.state)} for f in result.failed],
        "dropped": [i.start for i in result.dropped],
        "ok": result.ok,
    }


def _print_summary(result: BackfillResult, *, start: str, end: str, drive: bool,
                   timezone: str, start_date: Any) -> None:
    from cadenza.triggers.backfill import DROPPED_LIMIT

    console = out()
    n, m = len(result.created), result.existing
    if result.dropped:
        from cadenza.triggers.cron import to_utc

        k = len(result.dropped)
        start_date = logical_text(to_utc(start_date, timezone), timezone)
        more = "+" if k >= DROPPED_LIMIT else ""
        console.print(f"[yellow]--start {escape(start)} is before the pipeline's start_date "
                      f"{escape(str(start_date))}: dropped {k}{more} logical "
                      f"date{'s' if k != 1 else ''} "
                      f"({escape(_dates_text(result.dropped, timezone))}).[/]")
    if not result.intervals:
        console.print(f"No interval of pipeline {escape(result.pipeline)} with a logical date "
                      f"from {escape(start)} to {escape(end)} has ended yet (or the range lies "
                      "outside its start_date/end_date); nothing to create.")
        return
    console.print(f"Backfill of {escape(result.pipeline)} from {escape(start)} to "
                  f"{escape(end)}: created {n} run{'s' if n != 1 else ''}, {m} already "
                  "existed.")
    if result.rerun:
        r = len(result.rerun)
        console.print(f"  {r} failed run{'s' if r != 1 else ''} of the range "
                      f"{'were' if r != 1 else 'was'} resumed (--rerun-failed).")
    if result.queued:
        q = len(result.queued)
        console.print(f"  {q} of those {'were' if q != 1 else 'was'} still queued from an "
                      f"earlier backfill and {'were' if q != 1 else 'was'} run now.")
    if result.states:
        counts = Counter(str(s) for s in result.states.values())
        console.print("  " + ", ".join(f"{c} {styled_state(s)}" for s, c in
                                       sorted(counts.items())))
    skipped = n + len(result.queued) - len(result.states)
    if drive and skipped:
        console.print(f"  {skipped} run{'s were' if skipped != 1 else ' was'} claimed by a "
                      "running scheduler, which drives "
                      f"{'them' if skipped != 1 else 'it'}.")
    if not drive and n:
        console.print("  The new runs are queued: `cadenza scheduler` drives them.")
    failed = result.failed
    if failed:
        k = len(failed)
        console.print(f"[bold red]{k} interval{'s' if k != 1 else ''} of the range did not "
                      "succeed:[/]")
        for f in failed[:LISTED]:
            console.print(f"  {escape(logical_text(f.interval.start, timezone))}  run "
                          f"{escape(f.run_id)}  {styled_state(f.state)}")
        if k > LISTED:
            console.print(f"  ... and {k - LISTED} more "
                          f"(cadenza runs list --pipeline {escape(result.pipeline)} "
                          "--state failed)")
        console.print(f"See why: cadenza runs show {escape(failed[0].run_id)}. Run "
                      f"{'them' if k != 1 else 'it'} again: the same backfill with "
                      "--rerun-failed.")
    others = [rid for rid, s in result.states.items()
              if s is not RunState.SUCCESS and rid not in {f.run_id for f in failed}]
    if others:
        console.print(f"[bold red]{len(others)} run{'s' if len(others) != 1 else ''} did not "
                      f"succeed.[/] See why: cadenza runs show {escape(others[0])}")


def backfill_command(
    target: Annotated[str, typer.Argument(
        metavar="FILE:PIPELINE",
        help="The pipeline (it needs a schedule): a file, with :PIPELINE when it defines "
        "several; or a pipeline name of the project.")],
    start: Annotated[str, typer.Option(
        "--start", help="First logical date: YYYY-MM-DD or an ISO date-time (naive values "
        "are in the pipeline's timezone).", show_default=False)],
    end: Annotated[str, typer.Option(
        "--end", help="Last logical date (inclusive), same format.", show_default=False)],
    max_active: Annotated[int | None, typer.Option(
        "--max-active", min=1, help="Runs driven at once (default: the pipeline's "
        "max_active_runs, else 4).")] = None,
    executor: Annotated[str | None, typer.Option(
        "--executor", "-e", help="inline, threads, processes or ray (default: from "
        "cadenza.toml, else processes).")] = None,
    no_run: Annotated[bool, typer.Option(
        "--no-run", help="Only create the runs (queued); `cadenza scheduler` drives "
        "them.")] = False,
    rerun_failed: Annotated[bool, typer.Option(
        "--rerun-failed", help="Also resume the runs of the range that failed or were "
        "cancelled (in place: their finished tasks keep their outputs).")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="No progress; print the result as JSON.")] = False,
) -> None:
    """Create the missing interval runs from --start to --end, and drive them.

    Idempotent: an interval that has a run already is left alone; a second call creates none.
    --rerun-failed resumes the range's failed runs.

    Exit code: 0 success, 1 an interval of the range failed (each is named), 2 usage
    error, 130 interrupted.
    """
    from cadenza.cli.discovery import resolve_pipeline
    from cadenza.cli.run import check_executor
    from cadenza.core.errors import UsageError
    from cadenza.core.settings import get_settings

    first = check_date(start, "--start")
    last = check_date(end, "--end")
    lo, hi = datetime.fromisoformat(first), datetime.fromisoformat(last)
    if (lo.tzinfo is None) == (hi.tzinfo is None) and lo > hi:
        raise UsageError(f"--start {first} is after --end {last}",
                         hint=f"swap them: --start {last} --end {first}")
    if rerun_failed and no_run:
        raise UsageError("--rerun-failed resumes runs, and --no-run drives none",
                         hint="drop one of the two options")
    settings = get_settings()
    check_executor(executor)
    pipe = resolve_pipeline(target, settings)
    if pipe.schedule is None:
        raise UsageError(
            "backfill needs a pipeline with a schedule, and this one has none",
            pipeline=pipe.name,
            hint=f'@pipeline(schedule="@daily", start_date="2026-01-01") on {pipe.name}; '
            "or run it once with `cadenza run`")
    from cadenza.triggers.backfill import backfill

    progress = _Progress(pipe.name, plain=is_plain(), quiet=json_out)
    try:
        result = backfill(pipe, first, last, max_active=max_active, drive=not no_run,
                          executor=executor, settings=settings, on_progress=progress,
                          rerun_failed=rerun_failed)
    except KeyboardInterrupt:
        progress.stop()
        err().print("Interrupted. Runs already created stay queued (run the same backfill "
                    "again, or `cadenza scheduler`, to run them; a run being driven is "
                    "resumed by `cadenza scheduler` once its lease expires); "
                    "`cadenza runs list --pipeline " + escape(pipe.name) + "` shows them.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        progress.stop()
    if json_out:
        print_json(result_to_json(result))
    else:
        _print_summary(result, start=first, end=last, drive=not no_run,
                       timezone=pipe.timezone, start_date=pipe.start_date)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)
