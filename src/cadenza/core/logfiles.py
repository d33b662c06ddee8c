"""Where each task attempt's log goes: one file per attempt, known before it starts, so the
CLI and UI can follow a running attempt (`cadenza logs RUN TASK --follow`), and reading
byte ranges of it (the API's `.../logs?offset=&limit=` and its live follow)."""

from __future__ import annotations

import os
from dataclasses import dataclass

# The most one read returns (the API's `limit` is capped to it).
MAX_READ_BYTES = 1024 * 1024


def attempt_log_path(logs_dir: str, run_id: str, task_id: str, map_index: int, attempt: int) -> str:
    name = task_id if map_index < 0 else f"{task_id}.{map_index}"
    return os.path.join(logs_dir, run_id, f"{name}.{attempt}.log")


def run_log_files(logs_dir: str, run_ids: list[str], paths: list[str]) -> set[str]:
    """The log files of these runs that exist: those their attempts recorded, and whatever
    is in each run's folder under `logs_dir`."""
    found = {p for p in paths if os.path.isfile(p)}
    for run_id in run_ids:
        folder = os.path.join(logs_dir, run_id)
        for here, _, files in os.walk(folder):
            found.update(os.path.join(here, f) for f in files)
    return found


def remove_attempt_logs(logs_dir: str, run_ids: list[str], paths: list[str]) -> int:
    """Delete deleted runs' log files (see `run_log_files`) and their folders. How many
    files were removed."""
    import shutil

    files = run_log_files(logs_dir, run_ids, paths)
    for path in files:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass  # removed meanwhile: the result is the same
    for run_id in run_ids:
        folder = os.path.join(logs_dir, run_id)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
    return len(files)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogChunk:
    """Bytes [offset, next_offset) of a log file, decoded as UTF-8.

    `size` is the file's size when it was read (0 and `exists` False when there is no file
    yet). Reading again from `next_offset` continues exactly where this chunk ended: the end
    never splits a UTF-8 character, and with `whole_lines` it never splits a line either.
    """

    text: str
    offset: int
    next_offset: int
    size: int
    exists: bool = True

    @property
    def at_end(self) -> bool:
        return self.next_offset >= self.size


def read_log_range(path: str | None, offset: int = 0, limit: int = 65536, *,
                   whole_lines: bool = False) -> LogChunk:
    """Up to `limit` bytes of the log at `path` from byte `offset`.

    A negative `offset` counts from the end (-4096: the last 4 KiB, as `tail -c`); an
    offset past the end returns nothing from the end. `limit` is capped to MAX_READ_BYTES.
    A file that does not exist (an attempt that has written nothing yet) reads as empty.
    `whole_lines`: stop after the last complete line (a live follow shows a line once it
    is written), unless one line is longer than `limit`.

    Example:
        >>> chunk = read_log_range(path, 0, 1024)
        >>> rest = read_log_range(path, chunk.next_offset, 1024)
    """
    limit = max(0, min(limit, MAX_READ_BYTES))
    if not path:
        return LogChunk(text="", offset=0, next_offset=0, size=0, exists=False)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; open() is the existence check
    except (FileNotFoundError, NotADirectoryError):
        start = max(offset, 0)
        return LogChunk(text="", offset=start, next_offset=start, size=0, exists=False)
    with fh:
        size = os.fstat(fh.fileno()).st_size
        start = max(size + offset, 0) if offset < 0 else min(offset, size)
        fh.seek(start)
        data = fh.read(limit)
    end = len(data)
    if whole_lines and data and not data.endswith(b"\n"):
        newline = data.rfind(b"\n")
        if newline >= 0:
            end = newline + 1
        elif len(data) < limit:
            end = 0  # one line, still being written
    if end == len(data) and start + end < size:
        end = _utf8_boundary(data, end)
    return LogChunk(text=data[:end].decode("utf-8", errors="replace"), offset=start,
                    next_offset=start + end, size=size)


def _utf8_boundary(data: bytes, end: int) -> int:
    """`end`, moved back before a UTF-8 character that a cut at `end` would split."""
    i = end - 1
    while i >= 0 and end - i <= 3 and data[i] & 0xC0 == 0x80:  # continuation bytes
        i -= 1
    if i <= 0 or data[i] & 0xC0 != 0xC0:  # ASCII, or no lead byte in reach: cut as asked
        return end
    lead = data[i]
    need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return i if end - i < need else end
