"""`open_store` on a SQLite file returns a SqliteStore typed as a RunStore: each method it
runs itself has RunStore's signature (tests/integration/test_sqlite_store.py: every other
name reaches the SQLAlchemy RunStore it builds on first use)."""

from __future__ import annotations

import inspect

from cadenza.store.runs import RunStore
from cadenza.store.sqlite_store import SqliteStore

# What a run asks of its store (engine/api.py, driver, cache, lease): on sqlite3.
RUN_PATH = {"create_run", "write", "get_run", "get_task_instances", "find_cached",
            "list_pools", "ensure_pool", "load_secrets", "renew_lease", "cancel_requests",
            "dispose"}


def _public(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)}


def test_the_run_path_is_sqlite3_and_keeps_runstores_signatures() -> None:
    assert _public(SqliteStore) - {"open"} == RUN_PATH
    for name in RUN_PATH:
        ours = inspect.signature(getattr(SqliteStore, name))
        theirs = inspect.signature(getattr(RunStore, name))
        assert ours == theirs, f"SqliteStore.{name}{ours} != RunStore.{name}{theirs}"
