"""Folders named by task kinds: where a relative path is read from, and a digest of a
folder's source files for cache keys (dbt projects, Feast repositories).

Standard library only: imported at definition time, never in the worker.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any


def caller_dir(depth: int) -> Path:
    """The folder of the file `depth` frames up (its caller's caller for depth=2): relative
    paths given to a task kind are read from the pipeline's file, wherever the command runs."""
    frame = sys._getframe(depth + 1)
    path = frame.f_globals.get("__file__")
    return Path(path).resolve().parent if path else Path.cwd()


def resolve_folder(value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(os.fspath(value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def folder_digest(folder: Path, *, skip_dirs: Collection[str] = (),
                  skip_suffixes: Collection[str] = ()) -> str:
    """SHA-256 over a folder's files (relative paths and bytes), leaving out hidden files
    and folders, `skip_dirs` (what a tool writes: dbt's target/, logs/) and files ending
    in `skip_suffixes` (Feast's SQLite registry and online store)."""
    h = hashlib.sha256()
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith(".")
                         and d != "__pycache__")
        for name in sorted(files):
            if name.startswith(".") or name.endswith(tuple(skip_suffixes)):
                continue
            path = Path(here) / name
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            try:
                h.update(path.read_bytes())
            except OSError:  # a file vanishing mid-walk: its name still counts
                continue
            h.update(b"\0")
    return h.hexdigest()
