"""Talking to a SQLite file with the standard library alone: connections with the store's
pragmas, the value conversions of the store's column types, the background checkpointer,
and the fork counter that keeps a forked child off its parent's connections.

What belongs here: what both SQLite paths share, the SQLAlchemy one (`db.py`, `dml.py`,
`tables.py`) and the run path on plain `sqlite3` (`sqlite_store.py`), so each rule exists
once. What does not: statements (`sqlite_sql.py`, rendered from the Core ones), the store's
methods.

Imports no SQLAlchemy: a one-task run on SQLite never loads it (about 900 M of the
1,500 M instructions its driver process took, bench/cold_start.py).

The connection rules (db.py's docstring has the why): WAL, synchronous=NORMAL,
busy_timeout 30 s, foreign keys on, and the caller emits `BEGIN IMMEDIATE` itself for a
write transaction (`isolation_level=None`: sqlite3 starts no transaction of its own).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cadenza.core.errors import StoreError
from cadenza.store.failures import SQLITE_BUSY_TIMEOUT_S

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Values: what the store's column types bind and read on SQLite (tables.py's UTCDateTime and
# JSONDoc use these very functions, so both paths store the same text).


def bind_time(value: datetime | None) -> str | None:
    """A UTC-aware datetime as SQLite text, 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, naive): the
    format SQLAlchemy's SQLite DATETIME uses. A naive datetime is refused."""
    if value is None:
        return None
    tz = value.tzinfo
    if tz is None:
        raise ValueError(f"naive datetime {value!r}: the store needs UTC-aware datetimes")
    if tz is not UTC:
        value = value.astimezone(UTC)
    # The UTC offset's "+00:00" cut off the text: the same string as formatting the naive
    # `value.replace(tzinfo=None)`, without building that datetime (replace() parses its
    # keyword argument: ~2x the cost of the whole conversion, ~8 values per chained step).
    return value.isoformat(" ", "microseconds")[:-6]


def load_time(value: str | datetime | None) -> datetime | None:
    """SQLite text (or a datetime) back to a UTC-aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_dumps = json.dumps
_loads = json.loads


def bind_json(value: Any) -> str | None:
    """A JSON document as text; None is SQL NULL (the columns are `none_as_null`)."""
    return None if value is None else _dumps(value)


def load_json(value: Any) -> Any:
    return None if value is None else _loads(value)


def bind_float(value: Any) -> float | None:
    """A Float column's value (SQLAlchemy's SQLite Float binds float(value))."""
    return None if value is None else float(value)


def bind_none_directly() -> None:
    """Give `sqlite3` an adapter for None (None -> None), unless someone registered one.

    Why: `sqlite3` binds an int, float or str directly but sends every other parameter,
    None included, through its adapter protocol, which looks the type up in the adapter
    registry and then asks `PrepareProtocol.__adapt__`, raising and clearing an
    AttributeError per value. A chained step's write binds ~25 Nones (empty columns of two
    task instances and an attempt): ~110 k of its ~670 k instructions (callgrind). With
    an adapter registered, the lookup finds it and calls `{}.get(None)` (C, returns None),
    and the value is bound as NULL as before. The registry is process-wide; the adapter
    changes no value, and one registered before is kept.
    """
    key = (type(None), sqlite3.PrepareProtocol)
    if key not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _NONE_TO_NONE)


_EMPTY: dict[None, None] = {}
_NONE_TO_NONE: Callable[[None], None] = _EMPTY.get


# ---------------------------------------------------------------------------------------------
# Connections


def make_folder(path: str) -> None:
    """Create the folder of a SQLite file (StoreError naming the fix if it cannot be)."""
    folder = Path(path).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(
            f"cannot create the folder of the SQLite store {Path(path).expanduser()}: {e}",
            hint="set CADENZA_HOME or CADENZA_DATABASE_URL to a writable location",
        ) from e


def configure(conn: sqlite3.Connection, *, memory: bool = False) -> None:
    """The store's pragmas on a new connection (both paths)."""
    conn.isolation_level = None  # BEGIN is ours: sqlite3 starts no transaction behind our back
    cur = conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if not memory:
            _to_wal(cur)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _to_wal(cur: sqlite3.Cursor) -> None:
    """`PRAGMA journal_mode = WAL`, waiting up to the busy timeout. On a file not yet in WAL
    mode the switch fails at once, without SQLite's busy handler, while another connection
    holds the write lock (its deadlock rule): processes creating a store together each
    switch the new file, and one of them failed with "database is locked" in 60 ms (the
    error's hint then blamed a lock held for 30 s)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.001
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + pause > deadline:
                raise
            log.debug("the store's file is locked by another connection; switching it to "
                      "WAL again in %.3f s", pause)
        time.sleep(pause)  # as SQLite's busy handler does between its tries
        pause = min(pause * 2, 0.05)


def connect(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file `path`, configured as the store's (the file name made
    absolute, as SQLAlchemy's pysqlite dialect does). May raise sqlite3.Error."""
    conn = sqlite3.connect(os.path.abspath(path), timeout=SQLITE_BUSY_TIMEOUT_S,
                           check_same_thread=False, isolation_level=None)
    try:
        configure(conn)
    except BaseException:
        conn.close()
        raise
    return conn


# ---------------------------------------------------------------------------------------------
# Forks

# Forks this process descends from: a writer made before a fork sees a bigger number in the
# child (comparing pids instead costs a getpid system call per write).
_forks = 0


def forks() -> int:
    """How many forks this process descends from (0 in a process never forked)."""
    return _forks


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


# ---------------------------------------------------------------------------------------------
# Checkpoints

# Commits of a kept SQLite connection between two background checkpoints; SQLite's own
# default (`AUTOCHECKPOINT` pages, ~4 MB of WAL) is crossed about every 100 commits of a
# chained step (a task instance update and an attempt insert dirty ~10 pages).
CHECKPOINT_EVERY = 100
CHECKPOINT_RETRIES = 5  # a checkpoint that left frames behind: tried again this often,
CHECKPOINT_RETRY_S = 0.5  # this far apart
AUTOCHECKPOINT = 1000


class Checkpointer:
    """A daemon thread that runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own
    (`connect()`, closed after each checkpoint) when asked (`request`, which never waits),
    until `stop`. `errors`: what a failed checkpoint raises (logged, tried again).

    Why (dml.Writer has the measurement): a kept writer connection runs with
    `wal_autocheckpoint = 0`, so no COMMIT of the run's path copies the WAL back into the
    database file; this thread does, in parallel (SQLite releases the GIL), without the
    write lock. A commit is durable in the WAL when COMMIT returns either way.
    """

    def __init__(self, connect: Callable[[], Any], errors: tuple[type[BaseException], ...]
                 ) -> None:
        self._connect = connect
        self._errors = errors
        self._wake = threading.Event()
        self._stopping = False
        self.left_behind = 0  # checkpoints that left WAL frames behind (then tried again)
        self._thread = threading.Thread(target=self._loop, name="cadenza-sqlite-checkpoint",
                                        daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        again_in: float | None = None
        tries = 0
        while True:
            self._wake.wait(again_in)
            self._wake.clear()
            if self._stopping:
                return
            again_in = None
            try:
                conn = self._connect()
                try:
                    cursor = conn.cursor()
                    row = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    cursor.close()
                finally:
                    conn.close()
            except self._errors as e:
                # Nothing is lost: the WAL keeps the commits; tried again below.
                log.warning("background SQLite checkpoint failed: %s", e)
                row = None
            # (busy, frames in the WAL, frames checkpointed): a PASSIVE checkpoint leaves
            # frames behind while a reader's snapshot or another checkpoint is in its way.
            # Try again shortly (a few times) rather than at the next CHECKPOINT_EVERY
            # commits, which may never come once a run has ended.
            done = row is not None and (row[1] <= 0 or row[2] >= row[1])
            tries = 0 if done else tries + 1
            if not done:
                self.left_behind += 1
            if not done and tries <= CHECKPOINT_RETRIES:
                again_in = CHECKPOINT_RETRY_S
