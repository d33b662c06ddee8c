"""`cadenza gc` and `cadenza runs delete`: delete runs, then the artifacts and logs that
nothing references any more, and say what that freed.

What belongs here: orchestrating the layers, in this order for each batch of runs:
  1. the store deletes the runs' rows in one transaction and returns the artifacts no
     remaining row references (`store.retention.delete_runs`);
  2. after that commit, the artifact store deletes those files, sparing any a concurrent run
     wrote or reused within the grace period (`ArtifactStore.delete`), and the attempt logs
     go (`core.logfiles`);
  3. the store forgets the lineage records of the files that went (`forget_artifacts`).
Then artifacts left behind by an interrupted gc are swept the same way. The rules (which
runs are kept, the race with concurrent writers) are in `cadenza.core.retention`.
What does not: any SQL (store/retention.py) or file deletion logic (artifacts/store.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import err, escape, out, print_json

if TYPE_CHECKING:
    from cadenza.core.retention import RunsDeleted, StoredArtifact

GRACE_HELP = ("Never delete an artifact written or reused more recently than this (a run "
              "may be about to reference it). Default 1h.")


class _Report:
    """What was (or would be) freed; printed at the end."""

    def __init__(self, *, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.runs: list[str] = []
        self.skipped: dict[str, str] = {}
        self.artifacts = 0
        self.bytes = 0
        self.spared = 0  # unreferenced, but touched within the grace period
        self.logs = 0
        self.tried: set[str] = set()  # artifacts looked at by this command

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "runs_deleted": len(self.runs), "run_ids": self.runs,
                "skipped": self.skipped, "artifacts_deleted": self.artifacts,
                "bytes_freed": self.bytes, "artifacts_spared_recently_used": self.spared,
                "log_files_deleted": self.logs}

    def print(self, *, skipped_note: str = "") -> None:
        from cadenza.core.retention import format_bytes

        console = out()
        verb = "Would delete" if self.dry_run else "Deleted"
        console.print(f"{verb} {len(self.runs)} run{'s' if len(self.runs) != 1 else ''}, "
                      f"{self.artifacts} artifact{'s' if self.artifacts != 1 else ''} "
                      f"({format_bytes(self.bytes)}{' freed' if not self.dry_run else ''}), "
                      f"{self.logs} log file{'s' if self.logs != 1 else ''}.")
        if self.spared:
            console.print(f"Kept {self.spared} unreferenced artifact"
                          f"{'s' if self.spared != 1 else ''} used within the grace period "
                          "(a later gc deletes them).")
        for run_id, why in list(self.skipped.items())[:20]:
            err().print(f"[yellow]skipped[/] {escape(run_id)}: {escape(why)}")
        if len(self.skipped) > 20:
            err().print(f"[yellow]skipped[/] {len(self.skipped) - 20} more")
        if skipped_note:
            err().print(skipped_note, style="dim")


def _settings_and_store() -> tuple[Any, Any]:
    from cadenza.cli.runs import open_project_store
    from cadenza.core.settings import get_settings

    return get_settings(), open_project_store()


def _delete_files(settings: Any, store: Any, report: _Report, artifacts: list[StoredArtifact],
                  *, grace_s: float) -> None:
    """Step 2 and 3 for these unreferenced artifacts."""
    from cadenza.artifacts.store import artifact_store
    from cadenza.store import retention

    files = artifact_store(settings.artifact_root)
    gone: list[str] = []
    for a in artifacts:
        if a.sha256 in report.tried:
            continue
        report.tried.add(a.sha256)
        freed = files.delete(a.uri, grace_s=grace_s, dry_run=report.dry_run)
        if freed is None:
            report.spared += 1
            continue
        gone.append(a.sha256)
        if freed:
            report.artifacts += 1
            report.bytes += freed
    if gone and not report.dry_run:
        retention.forget_artifacts(store, gone)


def _run_deletion(run_ids: list[str], *, dry_run: bool, force: bool, grace_s: float,
                  what: str) -> _Report:
    from functools import partial

    from cadenza.core.logfiles import remove_attempt_logs, run_log_files
    from cadenza.engine.lease import is_held
    from cadenza.store import retention

    settings, store = _settings_and_store()
    report = _Report(dry_run=dry_run)
    logs_dir = str(settings.logs_dir)

    with _progress(len(run_ids), what) as advance:

        def on_batch(part: RunsDeleted) -> None:
            report.runs.extend(part.run_ids)
            report.skipped.update(part.skipped)
            _delete_files(settings, store, report, part.unreferenced, grace_s=grace_s)
            if dry_run:
                report.logs += len(run_log_files(logs_dir, part.run_ids, part.log_paths))
            else:
                report.logs += remove_attempt_logs(logs_dir, part.run_ids, part.log_paths)
            advance(len(part.run_ids) + len(part.skipped))

        retention.delete_runs(store, run_ids, force=force, dry_run=dry_run, on_batch=on_batch,
                              is_held=partial(is_held, lease=settings.lease_s))
    # Artifacts an interrupted gc (or `RunStore.delete_run`) left behind: recorded, their
    # producer run gone, referenced by nothing.
    _delete_files(settings, store, report, retention.orphan_artifacts(store), grace_s=grace_s)
    return report


class _progress:
    """A rich progress bar on a terminal for long work (more than one batch); nothing
    otherwise. Used as `with _progress(total, what) as advance: advance(n)`."""

    def __init__(self, total: int, what: str) -> None:
        from cadenza.cli.console import is_plain
        from cadenza.store.retention import BATCH

        self.bar: Any = None
        if total > BATCH and not is_plain():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                                console=out(), transient=True)
            self.task = self.bar.add_task(what, total=total)

    def __enter__(self) -> Any:
        if self.bar is None:
            return lambda n: None
        self.bar.start()
        return lambda n: self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _grace_s(grace: str) -> float:
    from cadenza.core.retention import parse_duration

    return parse_duration(grace, option="--grace").total_seconds()


def gc_command(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Delete runs created longer ago than this: 30d, 12h, 90m.")] = None,
    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", min=0, help="Keep the N newest runs of each pipeline.")] = None,
    pipeline: Annotated[str | None, typer.Option(
        "--pipeline", "-p", help="Only runs of this pipeline.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be deleted; delete nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Also delete unfinished runs that no live driver holds (crashed).")
    ] = False,
    grace: Annotated[str, typer.Option("--grace", help=GRACE_HELP)] = "1h",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete old runs, then the artifacts and logs nothing references any more.

    With both options, a run goes only if it is older than --older-than AND not among the --keep-last newest of its pipeline.

    Kept, and said: unfinished runs, the run of an asset's newest version, and artifacts that a remaining run, a cache entry or an asset version uses.
    """
    from cadenza.core.retention import parse_duration
    from cadenza.store import retention

    age = parse_duration(older_than) if older_than is not None else None
    grace_s = _grace_s(grace)
    _, store = _settings_and_store()
    selection = retention.select_runs(store, older_than=age, keep_last=keep_last,
                                      pipeline=pipeline)
    chosen = list(selection.delete)
    if force:
        chosen += selection.unfinished
    report = _run_deletion(chosen, dry_run=dry_run, force=force, grace_s=grace_s,
                           what="deleting runs")
    notes = []
    if selection.unfinished and not force:
        notes.append(f"kept {len(selection.unfinished)} unfinished run"
                     f"{'s' if len(selection.unfinished) != 1 else ''} (--force deletes "
                     "crashed ones)")
    if selection.newest_asset:
        assets = sorted(set(selection.newest_asset.values()))
        notes.append(f"kept {len(selection.newest_asset)} run"
                     f"{'s' if len(selection.newest_asset) != 1 else ''} that produced the "
                     f"newest version of {', '.join(assets[:5])}{', ...' if len(assets) > 5 else ''}")
    if json_out:
        data = report.to_json()
        data["kept_unfinished"] = [] if force else selection.unfinished
        data["kept_newest_asset"] = selection.newest_asset
        print_json(data)
        return
    report.print(skipped_note="; ".join(notes))


def runs_delete_command(
    run_ids: Annotated[list[str], typer.Argument(
        help="Run ids (a unique prefix is enough).", show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be deleted; delete nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Also delete an unfinished run that no live driver holds (crashed).")
    ] = False,
    grace: Annotated[str, typer.Option("--grace", help=GRACE_HELP)] = "1h",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete runs, their logs and the artifacts nothing else references.

    A run that has not finished is refused (exit 1); --force deletes a crashed one.
    """
    from cadenza.store import retention

    grace_s = _grace_s(grace)
    _, store = _settings_and_store()
    ids = retention.resolve_run_ids(store, run_ids)
    report = _run_deletion(ids, dry_run=dry_run, force=force, grace_s=grace_s,
                           what="deleting runs")
    if json_out:
        print_json(report.to_json())
    else:
        report.print()
    if report.skipped:
        raise typer.Exit(1)
