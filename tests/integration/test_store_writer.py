"""The SQLite store's writer keeps one connection for its write transactions
(store/sqlite_store.py `SqliteWriter`, the run path on plain sqlite3): writes from two threads
never share a transaction, a failed write rolls back and leaves the connection usable, a
forked child never uses (nor waits for) the parent's connection, and dispose() closes it."""

from __future__ import annotations

import multiprocessing
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.errors import StoreError
from cadenza.core.records import WriteBatch
from cadenza.core.states import TaskState
from cadenza.store import RunStore, open_store, sqlite_conn
from tests.fixtures.waiting import wait_for
from tests.integration.test_store import attempt, make_run, ti


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[RunStore]:
    s = open_store(f"sqlite:///{tmp_path / 'w' / 'cadenza.db'}")
    try:
        yield s
    finally:
        s.dispose()


def _db_path(store: RunStore) -> str:
    return store.url.removeprefix("sqlite:///")


def _write_lock_is_free(store: RunStore) -> bool:
    """Another connection can take SQLite's write lock at once (no transaction left open)."""
    other = sqlite3.connect(_db_path(store), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def test_writes_reuse_one_connection_and_leave_no_transaction_open(
        sqlite_store: RunStore) -> None:
    run = make_run()
    sqlite_store.create_run(run, [ti(run.run_id, "a")])
    kept = sqlite_store._writer._conn
    assert kept is not None
    sqlite_store.write(WriteBatch(task_instance_updates=[
        ti(run.run_id, "a", state=TaskState.RUNNING, attempt=1)]))
    assert sqlite_store._writer._conn is kept
    assert _write_lock_is_free(sqlite_store)
    got = sqlite_store.get_task_instance(run.run_id, "a")
    assert got is not None and got.state is TaskState.RUNNING


def test_a_failed_write_rolls_back_and_the_next_write_works(sqlite_store: RunStore) -> None:
    run = make_run()
    sqlite_store.create_run(run, [ti(run.run_id, "a")])
    with pytest.raises(StoreError):
        sqlite_store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "a", state=TaskState.QUEUED)],
            attempts=[attempt(run.run_id, "a", 1), attempt(run.run_id, "a", 1)],  # same key
        ))
    assert _write_lock_is_free(sqlite_store)
    unchanged = sqlite_store.get_task_instance(run.run_id, "a")
    assert unchanged is not None and unchanged.state is TaskState.PENDING
    sqlite_store.write(WriteBatch(
        task_instance_updates=[ti(run.run_id, "a", state=TaskState.SUCCESS, attempt=1)],
        attempts=[attempt(run.run_id, "a", 1, state=TaskState.SUCCESS)],
    ))
    done = sqlite_store.get_task_instance(run.run_id, "a")
    assert done is not None and done.state is TaskState.SUCCESS
    assert len(sqlite_store.get_attempts(run.run_id)) == 1


def test_a_second_thread_waits_for_the_first_threads_transaction(sqlite_store: RunStore) -> None:
    """While thread A is inside its write transaction (after its UPDATE, before COMMIT),
    thread B's write waits; it does not run its BEGIN and statements on the shared
    connection inside A's transaction (which fails, or commits B's rows with A's)."""
    run = make_run()
    sqlite_store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "b")])
    sqlite_store.write(WriteBatch())  # no-op
    sqlite_store.create_run(make_run(), [])  # the writer now holds its connection
    kept = sqlite_store._writer._conn
    errors: list[BaseException] = []
    b_blocked: list[bool] = []

    def write_b() -> None:
        try:
            sqlite_store.write(WriteBatch(task_instance_updates=[
                ti(run.run_id, "b", state=TaskState.SUCCESS, attempt=1)]))
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    b = threading.Thread(target=write_b)

    class Cursor:  # the kept connection's cursor, starting B right after A's UPDATE
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def execute(self, sql: str, *args: Any) -> Any:
            out = self._real.execute(sql, *args)
            if sql.startswith("UPDATE") and not b_blocked:
                b.start()
                b.join(0.5)  # B gets every chance to run its transaction now
                b_blocked.append(b.is_alive())
            return out

    class Conn:
        def __getattr__(self, name: str) -> Any:
            return getattr(kept, name)

        def cursor(self) -> Cursor:
            return Cursor(kept.cursor())

    sqlite_store._writer._conn = Conn()
    try:
        sqlite_store.write(WriteBatch(task_instance_updates=[
            ti(run.run_id, "a", state=TaskState.SUCCESS, attempt=1)]))
    finally:
        b.join()
        sqlite_store._writer._conn = kept
    assert errors == []
    assert b_blocked == [True]
    states = {t.task_id: t.state for t in sqlite_store.get_task_instances(run.run_id)}
    assert states == {"a": TaskState.SUCCESS, "b": TaskState.SUCCESS}
    assert _write_lock_is_free(sqlite_store)


_INHERITED: RunStore | None = None


def _child_writes_through_the_inherited_store(run_id: str) -> bool:
    assert _INHERITED is not None
    kept = _INHERITED._writer._conn
    _INHERITED.write(WriteBatch(task_instance_updates=[
        ti(run_id, "child", state=TaskState.SUCCESS, attempt=1)]))
    return _INHERITED._writer._conn is kept  # the parent's connection: not used, not replaced


def test_a_forked_child_neither_uses_nor_waits_for_the_parents_connection(
        sqlite_store: RunStore) -> None:
    """The fork happens while a parent thread holds the writer (mid-transaction): the
    child's write must not wait for a lock no thread of the child will ever release."""
    global _INHERITED
    run = make_run()
    sqlite_store.create_run(run, [ti(run.run_id, "child"), ti(run.run_id, "parent")])
    _INHERITED = sqlite_store
    try:
        with sqlite_store._writer._lock:  # as a parent thread in the middle of a write
            ctx = multiprocessing.get_context("fork")
            pool = ctx.Pool(1)
        try:
            assert pool.apply_async(_child_writes_through_the_inherited_store,
                                    (run.run_id,)).get(timeout=60)
        finally:
            pool.terminate()
            pool.join()
        sqlite_store.write(WriteBatch(task_instance_updates=[
            ti(run.run_id, "parent", state=TaskState.SUCCESS, attempt=1)]))
    finally:
        _INHERITED = None
    states = {t.task_id: t.state for t in sqlite_store.get_task_instances(run.run_id)}
    assert states == {"child": TaskState.SUCCESS, "parent": TaskState.SUCCESS}


def test_dispose_closes_the_kept_connection(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    run = make_run()
    s.create_run(run, [])
    kept = s._writer._conn
    assert kept is not None
    s.dispose()
    assert s._writer._conn is None
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        kept.execute("SELECT 1")


def _rows_in_main_file(store: RunStore, tmp_path: Path, run_id: str) -> int:
    """Attempts of `run_id` in the database file alone (a copy without its WAL): what
    checkpoints have moved there."""
    copy = tmp_path / f"main-only-{secrets.token_hex(3)}.db"
    shutil.copyfile(_db_path(store), copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM attempts WHERE run_id = ?",
                                (run_id,)).fetchone()[0])
    except sqlite3.OperationalError as e:  # the schema itself is still only in the WAL
        assert "no such table" in str(e)
        return 0
    except sqlite3.DatabaseError as e:  # copied while a checkpoint was writing the file
        assert "malformed" in str(e)
        return -1
    finally:
        conn.close()


def test_checkpoints_run_off_the_commit_path(
        sqlite_store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept connection never checkpoints inside its COMMIT (wal_autocheckpoint 0); a
    background thread moves the WAL into the database file every CHECKPOINT_EVERY commits;
    dispose() stops it and closes the connection."""
    monkeypatch.setattr(sqlite_conn, "CHECKPOINT_EVERY", 5)
    run = make_run()
    sqlite_store.create_run(run, [ti(run.run_id, "a", map_index=m) for m in range(20)])
    kept = sqlite_store._writer._conn
    assert kept.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for m in range(20):
        sqlite_store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "a", map_index=m, state=TaskState.SUCCESS,
                                      attempt=1)],
            attempts=[attempt(run.run_id, "a", 1, map_index=m, state=TaskState.SUCCESS)],
        ))
    checkpointer = sqlite_store._writer._checkpointer
    assert checkpointer is not None
    # The 20th commit asked for a checkpoint: everything up to it reaches the main file.
    wait_for(lambda: _rows_in_main_file(sqlite_store, tmp_path, run.run_id) == 20)
    sqlite_store.dispose()
    assert not checkpointer._thread.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):  # closed by dispose
        kept.execute("SELECT 1")


def test_a_checkpoint_that_left_frames_behind_is_tried_again(
        sqlite_store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's snapshot stops a PASSIVE checkpoint short of the WAL's end. The run's
    last commit asked for that checkpoint and no commit comes after it, so the checkpointer
    itself tries again (CHECKPOINT_RETRY_S apart) until the frames reach the database file."""
    monkeypatch.setattr(sqlite_conn, "CHECKPOINT_EVERY", 20)  # one request: at the 20th commit
    monkeypatch.setattr(sqlite_conn, "CHECKPOINT_RETRY_S", 0.05)
    run = make_run()
    sqlite_store.create_run(run, [ti(run.run_id, "a", map_index=m) for m in range(20)])
    reader = sqlite3.connect(_db_path(sqlite_store), isolation_level=None)
    try:
        reader.execute("BEGIN")  # a snapshot with no attempts: frames past it must stay
        assert reader.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
        for m in range(20):
            sqlite_store.write(WriteBatch(
                task_instance_updates=[ti(run.run_id, "a", map_index=m,
                                          state=TaskState.SUCCESS, attempt=1)],
                attempts=[attempt(run.run_id, "a", 1, map_index=m,
                                  state=TaskState.SUCCESS)],
            ))
        checkpointer = sqlite_store._writer._checkpointer
        assert checkpointer is not None
        wait_for(lambda: checkpointer.left_behind >= 1)  # the 20th commit's checkpoint
        assert _rows_in_main_file(sqlite_store, tmp_path, run.run_id) < 20
    finally:
        reader.execute("COMMIT")
        reader.close()
    # No commit follows: only the checkpointer's own retry can move the frames now.
    wait_for(lambda: _rows_in_main_file(sqlite_store, tmp_path, run.run_id) == 20)


def test_none_is_bound_as_null_through_a_registered_adapter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite store registers sqlite3's adapter for None (store/db.py
    `_bind_none_directly`: the adapter protocol raised and cleared an AttributeError per
    None otherwise); values are still stored as NULL, and an adapter registered before is
    kept."""
    key = (type(None), sqlite3.PrepareProtocol)
    monkeypatch.delitem(sqlite3.adapters, key, raising=False)
    s = open_store(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        assert key in sqlite3.adapters and sqlite3.adapters[key](None) is None
        run = make_run()
        s.create_run(run, [ti(run.run_id, "a")])  # worker, cache_key, error ... are None
        raw = sqlite3.connect(_db_path(s))
        try:
            row = raw.execute("SELECT worker IS NULL, cache_key IS NULL, error IS NULL "
                              "FROM task_instances WHERE run_id = ?", (run.run_id,)).fetchone()
        finally:
            raw.close()
        assert row == (1, 1, 1)
    finally:
        s.dispose()

    def mine(value: None) -> None:
        return value

    monkeypatch.setitem(sqlite3.adapters, key, mine)
    other = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        assert sqlite3.adapters[key] is mine
    finally:
        other.dispose()

