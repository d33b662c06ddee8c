"""Retention: the records `cadenza gc` and `cadenza runs delete` pass between the layers, and
the durations people write for them ("30d", "12h", "90m").

What belongs here: plain data and parsing, shared by the store (which deletes rows), the
artifact store (which deletes files) and the CLI (which orchestrates them). What does not:
any SQL (`store/retention.py`) or file deletion (`artifacts/store.py`).

The rules, in one place (the CLI's help and the README repeat them):
1. Only finished runs (success, failed, cancelled) are deleted. An unfinished run is skipped
   and named; `--force` also deletes one that no live driver holds (its driver crashed, or it
   was queued and never claimed). A run whose driver's lease is alive is never deleted.
2. A run that produced the newest version of an asset is kept: deleting it would make the
   next version reuse its number, and asset-triggered pipelines would miss that version.
3. An artifact is deleted only when no remaining task instance output (a run's output or a
   cache entry: cache entries are the successful task instances of remaining runs) and no
   remaining asset version references it, re-checked in the transaction that deletes the
   rows, and only after that transaction commits. A lineage edge (X was computed from Y)
   does not keep Y's file: lineage is a record of what happened, and `cadenza lineage` still
   shows a deleted input by its SHA-256 (its own record goes with its file).
4. A concurrent run may write (or reuse through the cache) the same content-addressed
   artifact between that check and the file's deletion. Writers and cache hits touch the
   file (mtime) when they reuse it; gc deletes only files untouched for a grace period
   (default 1 hour), moving a file aside before it looks at its mtime, so a writer either
   touched it first (gc puts it back) or finds it gone and writes it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from cadenza.core.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, *, option: str = "--older-than") -> timedelta:
    """`timedelta` for "30d", "12h", "90m", "45s" or "2w"; ConfigError naming the fix."""
    match = _DURATION.match(text or "")
    if match is None:
        raise ConfigError(f"{option} '{text}' is not a duration",
                          hint=f"write a number and a unit: {option} 30d (days), 12h (hours), "
                          "90m (minutes), 45s (seconds) or 2w (weeks)")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _SECONDS[unit.lower()])


def format_bytes(size: int) -> str:
    """Human units, 1024-based: 0 B, 512 B, 1.5 KiB, 12.0 MiB, 3.2 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredArtifact:
    """An artifact file as the metadata store knows it (size may be unknown: None)."""

    sha256: str
    uri: str
    size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSelection:
    """The runs a retention policy would delete, and the ones it keeps on purpose."""

    delete: list[str] = field(default_factory=list)  # run ids, newest first per pipeline
    unfinished: list[str] = field(default_factory=list)  # rule 1
    newest_asset: dict[str, str] = field(default_factory=dict)  # run id -> asset (rule 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunsDeleted:
    """What one deleting transaction removed: runs, the log files of their attempts, and the
    artifacts nothing references any more (their files are the caller's to delete)."""

    run_ids: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why it was kept
    unreferenced: list[StoredArtifact] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)


__all__ = ["RunSelection", "RunsDeleted", "StoredArtifact", "format_bytes", "parse_duration"]
