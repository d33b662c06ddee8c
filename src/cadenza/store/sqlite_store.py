"""The store of a run on a SQLite file, on the standard library's `sqlite3`: `SqliteStore`.

What belongs here: the run path (what a run asks of its store: create_run, write, get_run,
get_task_instances, ensure_pool, list_pools, load_secrets, renew_lease, cancel_requests,
find_cached), the schema check at open, and the one kept connection they run on. Everything
else a `RunStore` does (the CLI's, the API's and the scheduler's queries, claims, deletes,
migrations) goes to a SQLAlchemy `RunStore` on the same file, built on first use.
What does not: the SQL (`sqlite_sql.py`, rendered from the Core tables and statements, so
both paths send the same text and store the same values), record <-> parameter dicts
(`codec.py`), connection rules, value conversions and checkpoints (`sqlite_conn.py`).

Why: SQLAlchemy is ~900 M of the ~1,500 M instructions of a one-task `python script.py`
on SQLite (bench/cold_start.py), and its parameter handling was ~35 us of each chained
step's ~90 us of store work. Durability is the same as the SQLAlchemy path's: WAL,
synchronous=NORMAL, BEGIN IMMEDIATE, one transaction per write, a write returns after
COMMIT; checkpoints run off the commit path on a background thread (`sqlite_conn`).

Threads: one lock serialises the kept connection's transactions and reads (the driver's
thread, inline's watch thread, the heartbeat thread). Fork: a forked child never touches
its parent's connection or lock; it opens a connection per call (`open_store` gives a child
its own store anyway).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cadenza.core import clock
from cadenza.core.errors import RunNotFound, StoreError, UsageError
from cadenza.core.records import (
    PoolRecord,
    RunRecord,
    TaskInstanceRecord,
    WriteBatch,
)
from cadenza.core.states import TaskState
from cadenza.core.task_secrets import Secrets
from cadenza.store import sqlite_conn
from cadenza.store import sqlite_sql as sql
from cadenza.store.codec import (
    artifact_input_params,
    artifact_params,
    asset_event_params,
    attempt_params,
    by_sha,
    metric_params,
    run_from_row,
    run_params,
    run_update_params,
    ti_from_row,
    ti_params,
    ti_update_params,
)
from cadenza.store.failures import bad_values, missing_rows, store_error, taken_over

if TYPE_CHECKING:
    from cadenza.store.runs import RunStore

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Converter = Callable[[dict[str, Any]], tuple[Any, ...]]
# One statement of a write transaction: its SQL, its parameter tuples, and for an UPDATE
# that must match a row per tuple, what it updates and the parameter dicts (for the error).
Step = tuple[str, list[tuple[Any, ...]], str | None, list[dict[str, Any]] | None]

_POSTCOMPILE = "__[POSTCOMPILE_run_ids]"


def _rows(statement: str, convert: Converter, params: list[dict[str, Any]]) -> Step:
    return (statement, [convert(p) for p in params], None, None)


def _checked(statement: str, convert: Converter, params: list[dict[str, Any]],
             what: str) -> Step:
    return (statement, [convert(p) for p in params], what, params)


class SqliteWriter:
    """The SQLite run path's one kept connection: write transactions (`run`) and reads
    (`query`), one at a time, and the background checkpoints of its commits."""

    __slots__ = ("_born", "_checkpointer", "_commits", "_conn", "_lock", "_path", "_url")

    def __init__(self, path: str, url: str) -> None:
        self._path = path
        self._url = url
        self._lock = threading.Lock()
        self._conn: Any = None
        self._born = sqlite_conn.forks()
        self._commits = 0
        self._checkpointer: sqlite_conn.Checkpointer | None = None

    def _connect(self, action: str) -> sqlite3.Connection:
        try:
            return sqlite_conn.connect(self._path)
        except sqlite3.Error as e:
            raise store_error(e, self._url, action) from e

    def _kept(self, action: str) -> Any:
        conn = self._conn
        if conn is None:
            conn = self._connect(action)
            try:
                # Commits never checkpoint inside COMMIT; the Checkpointer does (sqlite_conn).
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            except sqlite3.Error as e:
                conn.close()
                raise store_error(e, self._url, action) from e
            self._conn = conn
        return conn

    def run(self, steps: Sequence[Step], action: str,
            fence: tuple[str, str] | None = None) -> None:
        """Execute `steps` in one transaction.

        1. `BEGIN IMMEDIATE` first, so the write lock is taken (waiting on busy_timeout)
           before anything is read. With a `fence` (run_id, driver_id: `WriteBatch.fence`),
           the run's driver_id is read next, under that lock: another driver's raises
           RunTakenOver with nothing written.
        2. Each step is one execute (one row) or executemany (several).
        3. An update that matched fewer rows than it was given raises StoreError.
        4. Any error rolls back; a connection that cannot roll back is dropped (the next
           write opens a new one). Every sqlite3 error becomes StoreError.
        """
        if fence is None:
            self._call(_transaction, steps, action)
        else:
            self._call(_fenced_transaction, (steps, fence), action)
        if sqlite_conn.forks() != self._born:
            return
        self._commits += 1  # under the GIL; an off-by-one only moves a checkpoint
        if self._commits % sqlite_conn.CHECKPOINT_EVERY == 0:
            with self._lock:
                if self._checkpointer is None:
                    path = self._path
                    self._checkpointer = sqlite_conn.Checkpointer(
                        lambda: sqlite_conn.connect(path), (sqlite3.Error,))
                self._checkpointer.request()

    def execute(self, statement: str, params: Sequence[Any], action: str) -> int:
        """One statement in its own write transaction; the number of rows it changed."""
        return self._call(_execute_one, (statement, params), action)

    def query(self, statement: str, params: Sequence[Any], action: str) -> list[Any]:
        """The rows of one SELECT (its own read transaction)."""
        return self._call(_fetch, (statement, params), action)

    def _call(self, fn: Callable[[Any, Any, str, str], _T], arg: Any, action: str) -> _T:
        """`fn(connection, arg, url, action)` on the kept connection, under the lock (in a
        forked child: on a connection of its own, closed after)."""
        if sqlite_conn.forks() != self._born:  # a forked child: never the parent's
            conn = self._connect(action)
            try:
                return fn(conn, arg, self._url, action)
            finally:
                conn.close()
        with self._lock:
            conn = self._kept(action)
            try:
                return fn(conn, arg, self._url, action)
            except BaseException:
                if _is_stuck(conn):  # the rollback failed: never reuse it
                    self._drop()
                raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as e:
                log.debug("closing a failed SQLite connection: %s", e)

    def close(self) -> None:
        """Stop the checkpointer and close the kept connection (SQLite folds the WAL into the
        database file when the last connection to it closes)."""
        if sqlite_conn.forks() != self._born:
            return
        with self._lock:
            conn, self._conn = self._conn, None
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as e:
                log.debug("closing the SQLite store's connection: %s", e)


def _is_stuck(conn: Any) -> bool:
    """Whether a transaction is still open on `conn` after a failure rolled it back."""
    try:
        return bool(conn.in_transaction)
    except sqlite3.Error:
        return True


def _rollback(conn: Any) -> None:
    """Roll back whatever is open (a failure leaves it open: the caller drops `conn`)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        log.warning("rollback failed (%s); discarding the connection", e)


# The fence of a driver's write (`WriteBatch.fence`): the run's driver, read under the write
# lock. One primary-key lookup in the transaction the write takes anyway.
_FENCE = "SELECT driver_id FROM runs WHERE run_id = ?"


def _transaction(conn: Any, steps: Sequence[Step], url: str, action: str,
                 fence: tuple[str, str] | None = None) -> int:
    """Run `steps` in one transaction; the row count of the last statement."""
    cursor = conn.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE")
        if fence is not None:
            row = cursor.execute(_FENCE, (fence[0],)).fetchone()
            if row is None or row[0] != fence[1]:
                raise taken_over(fence[0], None if row is None else row[0])
        for statement, params, what, checked in steps:
            if len(params) == 1:
                cursor.execute(statement, params[0])
            else:
                cursor.executemany(statement, params)
            if what is not None and cursor.rowcount != len(params):
                assert checked is not None
                keys = [tuple(str(v) for k, v in p.items() if k.startswith("k_"))
                        for p in checked[:5]]
                raise missing_rows(cursor.rowcount, keys, len(params), what)
        count = int(cursor.rowcount)
        cursor.execute("COMMIT")
        return count
    except sqlite3.Error as e:
        _rollback(conn)
        raise store_error(e, url, action) from e
    except BaseException:
        _rollback(conn)
        raise
    finally:
        cursor.close()


def _fenced_transaction(conn: Any, arg: tuple[Sequence[Step], tuple[str, str]], url: str,
                        action: str) -> int:
    return _transaction(conn, arg[0], url, action, arg[1])


def _execute_one(conn: Any, arg: tuple[str, Sequence[Any]], url: str, action: str) -> int:
    statement, params = arg
    return _transaction(conn, [(statement, [tuple(params)], None, None)], url, action)


def _fetch(conn: Any, arg: tuple[str, Sequence[Any]], url: str, action: str) -> list[Any]:
    statement, params = arg
    try:
        cursor = conn.execute(statement, params)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()
    except sqlite3.Error as e:
        raise store_error(e, url, action) from e


def _run_not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run with id '{run_id}'", hint="list run ids with `cadenza runs list`")


def _check_slots(name: str, slots: int) -> None:
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
        raise UsageError(
            f"pool '{name}': slots must be a whole number >= 0, got {slots!r}",
            hint="give the pool a whole number of slots, 0 or more (0 pauses the pool)",
        )


class SqliteStore:
    """The metadata store on a SQLite file, as `open_store` returns it for a plain
    `sqlite:///path` URL: a `RunStore` to its callers.

    The run path's methods (listed in the module docstring) run on `sqlite3` with the
    statements of `sqlite_sql.py`; any other attribute is the SQLAlchemy `RunStore`'s on the
    same file, built on first use (`__getattr__`). Their signatures and results are
    RunStore's (tests/unit/test_sqlite_store_api.py; tests/integration/test_store.py runs
    every store test on both).
    """

    __slots__ = ("_browse", "_full", "_full_lock", "_live", "_path", "_scheduling",
                 "_security", "_writer", "url")

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self._path = path
        self._writer = SqliteWriter(path, url)
        self._full: RunStore | None = None
        self._full_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, path: str) -> SqliteStore:
        """A store on the SQLite file `path` (of `url`), its folder and schema made: a new
        database gets the schema of `sqlite_sql.SCHEMA`, an older one is migrated by
        Alembic (through the SQLAlchemy RunStore). StoreError if it cannot be opened."""
        sqlite_conn.bind_none_directly()
        sqlite_conn.make_folder(path)
        store = cls(url, path)
        try:
            store._ensure_schema()
        except BaseException:
            store._close()
            raise
        return store

    def __repr__(self) -> str:
        return f"RunStore({self.url!r})"

    def __getattr__(self, name: str) -> Any:
        # Only for names this class does not have: the rest of RunStore's API.
        if name.startswith("__") or name in ("_full", "_full_lock", "_writer", "url", "_path"):
            raise AttributeError(name)
        return getattr(self._runstore(), name)

    def _runstore(self) -> RunStore:
        """The SQLAlchemy RunStore on this file (built once; the schema is current)."""
        full = self._full
        if full is None:
            with self._full_lock:
                full = self._full
                if full is None:
                    from cadenza.store.db import create_store_engine
                    from cadenza.store.runs import RunStore

                    full = self._full = RunStore(self.url, create_store_engine(self.url))
        return full

    # -- schema ---------------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        """db.ensure_schema's rules: current -> nothing (one SELECT); no Cadenza tables ->
        create them and stamp the revision in one transaction; an older (or newer)
        revision -> Alembic, through the SQLAlchemy path; our tables without a version row
        -> refuse."""
        if self._revision() == sql.REVISION:
            return
        if self._create_schema():
            return
        if self._revision() == sql.REVISION:  # another process created it meanwhile
            return
        from cadenza.store.runs import build_run_store

        self._full = build_run_store(self.url)  # migrates (or says why it cannot)

    def _revision(self) -> str | None:
        try:
            rows = self._writer.query(sql.SELECT_REVISION, (), "opening the store")
        except StoreError as e:
            if f"no such table: {sql.VERSION_TABLE}" in e.message:
                return None
            raise
        return str(rows[0][0]) if rows else None

    def _create_schema(self) -> bool:
        """Create the schema if the database has no Cadenza tables; False if it has a
        revision (to migrate or current)."""
        w = self._writer
        with w._lock:
            conn = w._kept("opening the store")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(sql.SELECT_REVISION).fetchall()
                    conn.execute("ROLLBACK")
                    return False
                except sqlite3.OperationalError as e:
                    if "no such table" not in str(e):
                        raise
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                     "AND name = 'runs'").fetchone()
                if found is not None:
                    conn.execute("ROLLBACK")
                    raise StoreError(
                        f"metadata store {self.url} has Cadenza tables but no "
                        "alembic_version row, so its schema revision is unknown",
                        hint="point CADENZA_DATABASE_URL at a fresh database, or stamp it "
                        "with `alembic stamp` after checking its schema",
                    )
                for ddl in sql.SCHEMA:
                    conn.execute(ddl)
                conn.execute(sql.INSERT_VERSION, sql.insert_version(
                    {"version_num": sql.REVISION}))
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                _rollback(conn)
                raise store_error(e, self.url, "opening the store") from e
        log.info("created the metadata store schema in %s", self.url)
        return True

    # -- writes ---------------------------------------------------------------------------------

    def create_run(self, run: RunRecord, task_instances: list[TaskInstanceRecord]) -> None:
        """Insert a run and its task instances in one transaction."""
        try:
            steps = [_rows(sql.INSERT_RUN, sql.insert_run, [run_params(run)])]
            if task_instances:
                steps.append(_rows(sql.INSERT_TI, sql.insert_ti,
                                   [ti_params(t) for t in task_instances]))
        except (TypeError, ValueError) as e:
            raise bad_values(e, "creating a run") from e
        self._writer.run(steps, "creating a run")

    def write(self, batch: WriteBatch, *, meanwhile: Callable[[], object] | None = None
              ) -> None:
        """Write everything one engine step changed, in ONE transaction (RunStore.write has
        the rules: order, whole-record updates, a missing row is the caller's bug, first
        producer wins, asset versions in this transaction). `meanwhile` is called first
        (SQLite commits in this thread: there is no wait to fill)."""
        if not batch:
            return
        if meanwhile is not None:
            meanwhile()
        try:
            steps = self._steps(batch)
        except (TypeError, ValueError) as e:
            raise bad_values(e, "writing a batch") from e
        self._writer.run(steps, "writing a batch", batch.fence)

    def _steps(self, batch: WriteBatch) -> list[Step]:
        steps: list[Step] = []
        if batch.new_runs:
            steps.append(_rows(sql.INSERT_RUN, sql.insert_run,
                               [run_params(r) for r in batch.new_runs]))
        if batch.run_updates:
            steps.append(_checked(sql.UPDATE_RUN, sql.update_run,
                                  [run_update_params(r) for r in batch.run_updates], "runs"))
        if batch.new_task_instances:
            steps.append(_rows(sql.INSERT_TI, sql.insert_ti,
                               [ti_params(t) for t in batch.new_task_instances]))
        if batch.task_instance_updates:
            steps.append(_checked(sql.UPDATE_TI, sql.update_ti,
                                  [ti_update_params(t) for t in batch.task_instance_updates],
                                  "task instances"))
        if batch.attempts:
            steps.append(_rows(sql.INSERT_ATTEMPT, sql.insert_attempt,
                               [attempt_params(a) for a in batch.attempts]))
        if batch.metrics:
            steps.append(_rows(sql.INSERT_METRIC, sql.insert_metric,
                               [metric_params(m) for m in batch.metrics]))
        if batch.artifacts or batch.asset_events:
            now = clock.now()
            if batch.artifacts:
                ordered = sorted(batch.artifacts, key=by_sha)  # store/lineage.py, rule 3
                steps.append(_rows(sql.INSERT_ARTIFACT, sql.insert_artifact,
                                   [artifact_params(a, now) for a in ordered]))
                edges = artifact_input_params(ordered)
                if edges:
                    steps.append(_rows(sql.INSERT_ARTIFACT_INPUT, sql.insert_artifact_input,
                                       edges))
            if batch.asset_events:
                steps.append(_rows(sql.INSERT_ASSET_EVENT, sql.insert_asset_event,
                                   [asset_event_params(e, now) for e in batch.asset_events]))
        return steps

    # -- reads ----------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id; RunNotFound if there is none."""
        rows = self._writer.query(sql.SELECT_RUN, (run_id,), "reading a run")
        if not rows:
            raise _run_not_found(run_id)
        return run_from_row(sql.select_run_row(rows[0]))

    def get_task_instances(self, run_id: str) -> list[TaskInstanceRecord]:
        """The run's task instances, ordered by task id then map index."""
        rows = self._writer.query(sql.SELECT_TIS, (run_id,), "reading task instances")
        convert = sql.select_tis_row
        return [ti_from_row(convert(r)) for r in rows]

    def find_cached(
        self, cache_key: str, *, not_before: datetime | None = None
    ) -> TaskInstanceRecord | None:
        """The newest successful task instance (any run) with this cache key.

        Newest by run (run ids sort by creation); with `not_before`, only those that ended at
        or after it.
        """
        params: dict[str, Any] = {"cache_key": cache_key, "state": TaskState.SUCCESS.value}
        if not_before is None:
            statement, args = sql.FIND_CACHED, sql.find_cached(params)
        else:
            params["not_before"] = not_before
            try:
                statement, args = sql.FIND_CACHED_NOT_BEFORE, sql.find_cached_not_before(params)
            except (TypeError, ValueError) as e:
                raise bad_values(e, "looking up the cache") from e
        rows = self._writer.query(statement, args, "looking up the cache")
        return ti_from_row(sql.find_cached_row(rows[0])) if rows else None

    # -- pools ----------------------------------------------------------------------------------

    def list_pools(self) -> list[PoolRecord]:
        rows = self._writer.query(sql.LIST_POOLS, (), "listing pools")
        return [PoolRecord(name=n, slots=s, description=d) for n, s, d in rows]

    def ensure_pool(self, name: str, slots: int) -> PoolRecord:
        """Create the pool if it is missing; otherwise return it unchanged."""
        _check_slots(name, slots)
        self._writer.run([_rows(sql.ENSURE_POOL, sql.ensure_pool,
                                [{"name": name, "slots": slots, "description": ""}])],
                         "creating a pool")
        rows = self._writer.query(sql.SELECT_POOL, (name,), "creating a pool")
        n, s, d = rows[0]  # inserted, or there before; pools are never deleted by a run
        return PoolRecord(name=n, slots=s, description=d)

    # -- secrets, leases, cancel requests -------------------------------------------------------

    def load_secrets(self, key: bytes | None | Callable[[], bytes | None],
                     names: Sequence[str] | None = None) -> Secrets:
        """The stored secrets, decrypted (RunStore.load_secrets); with no secrets stored, the
        key is not read and cryptography not imported."""
        if names is not None:
            return self._runstore().load_secrets(key, names)
        rows = self._writer.query(sql.SELECT_SECRETS, (), "reading secrets")
        if not rows:
            return Secrets()
        from cadenza.store.secret_values import decrypt_secrets

        return decrypt_secrets([(str(n), str(c)) for n, c in rows], key)

    def renew_lease(self, run_id: str, driver_id: str) -> bool:
        """Refresh the heartbeat; False if the run is no longer ours (another driver took it)."""
        params = sql.renew_lease({"k_run_id": run_id, "k_driver_id": driver_id,
                                  "heartbeat_at": clock.now()})
        return self._writer.execute(sql.RENEW_LEASE, params, "renewing a run lease") == 1

    def cancel_requests(self, run_ids: Sequence[str]) -> set[str]:
        """Which of `run_ids` someone asked to cancel (one indexed read; no write lock)."""
        if not run_ids:
            return set()
        statement = sql.SELECT_CANCEL_REQUESTS.replace(
            _POSTCOMPILE, ", ".join("?" * len(run_ids)))
        rows = self._writer.query(statement, sql.select_cancel_requests(
            {"run_ids": list(run_ids)}), "reading cancel requests")
        return {str(r[0]) for r in rows}

    # -- lifecycle ------------------------------------------------------------------------------

    def dispose(self) -> None:
        """Close the connections and forget this store in the process cache.

        A later `open_store()` with the same URL builds a new one.
        """
        from cadenza.store.opening import store_cache

        store_cache.discard(self.url, self)
        self._close()

    def _close(self) -> None:
        self._writer.close()
        full, self._full = self._full, None
        if full is not None:
            full.dispose()
