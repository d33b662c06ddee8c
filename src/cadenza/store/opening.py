"""Opening the metadata store: one store per (database URL, process), closed at exit.

What belongs here: `open_store` and the per-process cache behind it, and the choice of
implementation by URL. What does not: engines and schema work (`db.py`), the stores
themselves (`runs.py`; `sqlite_store.py` for a SQLite file).

A SQLite file (a plain `sqlite:///path` URL) gets `SqliteStore`, whose run path (the calls a
run makes: create_run, write, get_run, get_task_instances, pools, secrets, leases, cancel
polls, the cache lookup) runs on the standard library's `sqlite3` and which builds the
SQLAlchemy `RunStore` only when something else is asked of it. So `python script.py` with a
one-task pipeline never imports SQLAlchemy: ~900 M of the ~1,500 M instructions of its
driver process (bench/cold_start.py). Every other URL gets the `RunStore`.

Imports no SQLAlchemy.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, cast

from cadenza.store.failures import plain_sqlite_path

if TYPE_CHECKING:
    from cadenza.store.runs import RunStore

log = logging.getLogger(__name__)


class ProcessCache:
    """Objects cached per (url, pid): after a fork the child builds its own engine and
    leaves the parent's pooled connections alone (using them from two processes corrupts
    PostgreSQL sessions and SQLite locks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], Any] = {}
        self._exit_hook = False
        # A thread of the parent may hold the lock at fork time; the child starts unlocked.
        os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()

    def urls(self) -> list[str]:
        """The URLs with an object cached in this process."""
        pid = os.getpid()
        return [url for url, owner in list(self._items) if owner == pid]

    def peek(self, url: str) -> Any:
        """The cached object for `url` in this process, or None (creates nothing)."""
        return self._items.get((url, os.getpid()))

    def get_or_create(self, url: str, factory: Any) -> Any:
        key = (url, os.getpid())
        item = self._items.get(key)
        if item is not None:
            return item
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = factory()
                self._items[key] = item
                if not self._exit_hook:
                    self._exit_hook = True
                    atexit.register(self._close_at_exit)
            return item

    def _close_at_exit(self) -> None:
        """Close this process's stores at exit: pooled connections are closed in order, and
        SQLite folds its WAL back into the database file on the last close, instead of
        leaving that to the interpreter's final garbage collection.

        (Freezing the heap here as well would skip that collection, ~25 ms of a one-task
        run, but it also skips the `__del__` of user objects in reference cycles, such as a
        buffered file that was never flushed: user data would be lost. Not done.)
        """
        pid = os.getpid()
        for (_, owner), item in list(self._items.items()):
            if owner == pid:
                try:
                    item.dispose()
                except Exception as exc:  # noqa: BLE001 - exiting anyway; say what failed
                    log.debug("closing %s at exit failed: %s", item, exc)

    def discard(self, url: str, item: Any) -> None:
        key = (url, os.getpid())
        with self._lock:
            if self._items.get(key) is item:
                del self._items[key]


# The store of each (url, pid); see open_store.
store_cache = ProcessCache()


def open_store(url: str | None = None) -> RunStore:
    """The process's store for `url` (default: settings' database_url).

    Cached per (url, pid): a process reuses one engine and connection pool; a forked child
    gets its own. The first open creates the SQLite file's folder and the schema (or
    migrates an older schema). Raises StoreError when the database cannot be reached.

    Example:
        >>> store = open_store()  # .cadenza/cadenza.db in the project folder
        >>> store.list_runs(limit=5)
        []
    """
    if url is None:
        from cadenza.core.settings import get_settings

        url = get_settings().database_url
    resolved = url

    def build() -> Any:
        path = plain_sqlite_path(resolved)
        if path is not None:
            from cadenza.store.sqlite_store import SqliteStore

            return SqliteStore.open(resolved, path)
        from cadenza.store.runs import build_run_store

        return build_run_store(resolved)

    # A SqliteStore is a RunStore to its callers: the run path's methods have RunStore's
    # signatures and everything else is RunStore's own (tests/unit/test_sqlite_store_api.py).
    return cast("RunStore", store_cache.get_or_create(url, build))
