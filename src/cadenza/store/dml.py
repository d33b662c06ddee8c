"""The write hot path: prebuilt Core DML, executed with executemany on the pooled DBAPI connection.

What belongs here: compiling the store's INSERT/UPDATE statements once per dialect, turning
parameter dicts into DBAPI parameters with SQLAlchemy's own bind processors, and running a
list of them in one transaction. What does not: which statements exist and how records
become parameter dicts (`runs.py`).

Why not `Connection.execute()`: `RunStore.write()` runs once per scheduler step, usually with
1-3 rows. Measured on SQLite (WAL, synchronous=NORMAL; 2-core VM), a write of one task
instance update plus one attempt insert cost ~380 us through `engine.begin()` +
`Connection.execute()`, ~250 us of it SQLAlchemy's per-call bookkeeping (connection and
transaction objects, execution contexts, events). On the DBAPI cursor it costs ~140 us
median, of which ~105 us is SQLite itself and ~25 us our Python (pool checkout ~12 us,
parameters ~10 us). The SQL text and the value conversions
still come from SQLAlchemy (`stmt.compile(dialect)`, `TypeEngine.bind_processor`), so what is
stored is byte-for-byte what the Core path would store, and reads go through Core as usual.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Insert, Select, Update, exc
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import UpdateBase

from cadenza.core.errors import StoreError
from cadenza.store import failures, sqlite_conn
from cadenza.store.db import dialect_insert
from cadenza.store.failures import store_error
from cadenza.store.tables import UTCDateTime

if TYPE_CHECKING:
    from cadenza.store.pgwrite import PgStatement, PgWriteConnection

log = logging.getLogger(__name__)

Processor = Callable[[Any], Any]

# PostgreSQL: the tables whose plain INSERTs and UPDATEs a one-trip write may fuse into one
# statement (store/pgwrite.py `fused`), all keyed by their own columns. Not metrics (their
# ids come from a sequence in write order, and the WITH queries of one statement run in no
# set order), nor lineage and scheduling statements (they rely on locks taken by an
# earlier statement, or ON CONFLICT rules, in order).
_FUSABLE_TABLES = frozenset({"runs", "task_instances", "attempts"})


class PreparedDml:
    """One INSERT/UPDATE (or a SELECT run for its effect, such as taking a lock) compiled for
    one dialect, with its parameter conversion."""

    __slots__ = ("_procs", "_to_dbapi", "checked_sql", "pg", "pg_checked", "sql", "what")

    def __init__(self, stmt: UpdateBase | Select[Any], engine: Engine, what: str) -> None:
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.what = what
        # PostgreSQL: the statement in the form a Writer's one-trip write sends it, and for
        # an UPDATE, the form that fails when it matches no row (store/pgwrite.py).
        self.checked_sql: str | None = None
        self.pg: PgStatement | None = None
        self.pg_checked: PgStatement | None = None
        if dialect.name == "postgresql":
            from cadenza.store.pgwrite import PgStatement, checked_update

            # A one-row INSERT or checked UPDATE of the run tables may be fused with others
            # of a write into one statement (store/pgwrite.py `fused`).
            table: str | None = getattr(getattr(stmt, "table", None), "name", None)
            if table not in _FUSABLE_TABLES:
                table = None
            # Timestamps travel in binary (psycopg dumps an aware datetime as microseconds).
            binary = frozenset(name for name, bind in compiled.binds.items()
                               if isinstance(bind.type, UTCDateTime))
            self.pg = PgStatement(self.sql, binary=binary, fuse_as=(
                ("insert", table) if table is not None and isinstance(stmt, Insert) else None))
            if isinstance(stmt, Update):
                self.checked_sql = checked_update(self.sql)
                self.pg_checked = PgStatement(
                    self.checked_sql, fuse_as=None if table is None else ("update", table),
                    fuse_sql=self.sql, binary=binary)
        positional = compiled.positiontup
        names: list[str] = list(positional) if positional is not None else list(compiled.binds)
        procs: list[tuple[str, Processor]] = []
        for name in dict.fromkeys(names):  # a name may occur twice; convert it once
            bind_type = compiled.binds[name].type
            proc = bind_type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                procs.append((name, proc))
        self._procs = tuple(procs)
        if positional is not None:
            getter = itemgetter(*names)
            if len(names) == 1:
                self._to_dbapi: Callable[[dict[str, Any]], Any] = lambda row: (getter(row),)
            else:
                self._to_dbapi = getter
        else:
            self._to_dbapi = _identity

    def parameters(self, rows: Iterable[dict[str, Any]]) -> list[Any]:
        """DBAPI parameters for `rows` (the dicts are converted in place)."""
        procs = self._procs
        to_dbapi = self._to_dbapi
        out = []
        for row in rows:
            for name, proc in procs:
                row[name] = proc(row[name])
            out.append(to_dbapi(row))
        return out

    def parameters_shared(self, rows: Iterable[dict[str, Any]]) -> list[Any]:
        """`parameters`, converting each distinct value of a column once per call.

        For batches whose rows share values: the 1,000 runs a tick creates share their
        created_at, mostly their logical dates, and their empty params/tags/extra. There
        a run's conversion drops from ~14 us (four datetimes to ISO text, three JSON
        dumps; SQLite, 2 slow cores) to ~3 us. Values are shared by equality (with their
        type), which is safe because a bind processor's result depends on the value only;
        empty dicts and lists count as equal. Other unhashable values are converted each time.
        """
        procs = self._procs
        to_dbapi = self._to_dbapi
        memo: dict[Any, Any] = {}
        out = []
        for row in rows:
            for name, proc in procs:
                value = row[name]
                kind = type(value)
                if kind is dict or kind is list:
                    if value:
                        row[name] = proc(value)
                        continue
                    key: Any = (name, kind)
                else:
                    key = (name, kind, value)
                try:
                    row[name] = memo[key]
                except KeyError:
                    row[name] = memo[key] = proc(value)
                except TypeError:  # unhashable
                    row[name] = proc(value)
            out.append(to_dbapi(row))
        return out


class ArrayDml:
    """PostgreSQL: many rows as ONE statement whose parameters are one array per column,
    `INSERT INTO t (a, b) SELECT * FROM unnest(%b::A[], %b::B[])` (or an UPDATE joined to
    such an unnest). Values are converted by `row`, the one-row statement's PreparedDml;
    the arrays travel in binary (`%b`: psycopg's text array dumper escapes every element
    with a regex, 3.5x slower).

    Why: psycopg's executemany sends a Bind/Execute per row through Python generators;
    the 5,000 rows of a tick where 1,000 pipelines fall due (runs, task instances, keys,
    schedule marks) cost ~250 ms of CPU that way (2 slow cores), and a few ms this way.
    """

    __slots__ = ("_names", "_row", "sql", "what")

    def __init__(self, row: PreparedDml, sql: str, names: Sequence[str]) -> None:
        self._row = row
        self._names = tuple(names)
        self.sql = sql
        self.what = row.what

    def parameters(self, rows: Iterable[dict[str, Any]]) -> list[Any]:
        return self._columns(self._row.parameters(rows))

    def parameters_shared(self, rows: Iterable[dict[str, Any]]) -> list[Any]:
        return self._columns(self._row.parameters_shared(rows))

    def _columns(self, converted: list[Any]) -> list[Any]:
        return [tuple([r[name] for r in converted] for name in self._names)]


def array_insert(table: Any, engine: Engine, what: str, *,
                 conflict_do_nothing: Sequence[str] = ()) -> PreparedDml | ArrayDml:
    """An INSERT of every column of `table` (optionally ON CONFLICT (cols) DO NOTHING) for
    `execute_steps`: an ArrayDml on PostgreSQL, a PreparedDml (executemany) elsewhere."""
    from sqlalchemy import bindparam

    dialect = engine.dialect
    cols = list(table.columns)
    values: dict[str, Any] = {c.name: bindparam(c.name) for c in cols}
    if dialect.name == "postgresql":
        stmt = dialect_insert("postgresql", table).values(values)
        if conflict_do_nothing:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict_do_nothing))
        row = PreparedDml(stmt, engine, what)
        arrays = ", ".join(f"%b::{c.type.compile(dialect=dialect)}[]" for c in cols)
        sql = (f"INSERT INTO {table.name} ({', '.join(c.name for c in cols)}) "
               f"SELECT * FROM unnest({arrays})")
        if conflict_do_nothing:
            sql += f" ON CONFLICT ({', '.join(conflict_do_nothing)}) DO NOTHING"
        return ArrayDml(row, sql, [c.name for c in cols])
    if conflict_do_nothing:
        ins = (dialect_insert("sqlite", table).values(values)
               .on_conflict_do_nothing(index_elements=list(conflict_do_nothing)))
        return PreparedDml(ins, engine, what)
    return PreparedDml(table.insert().values(values), engine, what)


def array_update(table: Any, engine: Engine, what: str, *, key: tuple[str, str],
                 values: Mapping[str, str]) -> PreparedDml | ArrayDml:
    """`UPDATE table SET column = :param ... WHERE key_column = :key_param`, `key` being
    (param, column) and `values` param -> column, for `execute_steps`: an ArrayDml (one
    UPDATE ... FROM unnest) on PostgreSQL, a PreparedDml (executemany) elsewhere."""
    from sqlalchemy import bindparam, update

    param, column = key
    row = PreparedDml(update(table).where(table.c[column] == bindparam(param))
                      .values({col: bindparam(p) for p, col in values.items()}), engine, what)
    dialect = engine.dialect
    if dialect.name != "postgresql":
        return row
    names = [param, *values]
    columns = [column, *values.values()]
    arrays = ", ".join(f"%b::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)
    sets = ", ".join(f"{col} = v.{p}" for p, col in values.items())
    sql = (f"UPDATE {table.name} SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) "
           f"WHERE {table.name}.{column} = v.{param}")
    return ArrayDml(row, sql, names)


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    return row


# One step of a transaction: statement, parameter dicts, and whether every row must match
# an existing one (updates).
Step = tuple[PreparedDml, list[dict[str, Any]], bool]


def run_transaction(engine: Engine, url: str, steps: Sequence[Step], action: str, *,
                    synchronous: bool = True) -> None:
    """Execute `steps` in one transaction on a pooled DBAPI connection (checked out for this
    transaction only); `Writer.run` describes the steps."""
    _transaction(engine, url, None, steps, action, synchronous=synchronous)


class Writer:
    """Runs a store's write transactions (`run`); on a SQLite file or PostgreSQL, on one
    connection it keeps.

    Why keep one: a chained step writes once per task, and checking a connection out of
    SQLAlchemy's pool and back in costs ~25 us of the ~130 us such a write costs (SQLite WAL,
    2 slow cores), with no gain: SQLite lets one transaction write at a time anyway. The
    kept connection also keeps its page cache (SQLite) and its prepared statements
    (PostgreSQL: the pool handed out its connections in turn, so each one prepared every
    statement again) between writes.

    PostgreSQL: the kept connection is in autocommit mode and a write is ONE round trip:
    the statements (in BEGIN ... COMMIT when synchronous) go out in one libpq pipeline with
    one Sync (store/pgwrite.py). Through the pool it took three (BEGIN, the statements,
    COMMIT).

    Threads: the driver's thread and the watch thread of an inline run both write, so a
    lock holds the connection for one whole transaction at a time (a second thread waits
    for the COMMIT, as it would wait for SQLite's write lock).
    Fork: a child never touches the parent's connection nor its lock (a parent's thread may
    hold it at the fork); a write in a forked child through this Writer checks a connection
    out per transaction as before (`open_store` gives a child its own store anyway).
    A failed transaction rolls back; a connection that cannot (or was lost) is dropped and
    the next write takes a new one. In-memory SQLite (one shared connection for every
    thread, `StaticPool`) checks a connection out per transaction, as before.

    Checkpoints (SQLite): SQLite copies the WAL back into the database file (and fsyncs
    both) inside the COMMIT that crosses `wal_autocheckpoint` pages, about one commit in 100
    of a chain: measured on the loaded 2-core VM, the median commit took 35 us and those
    took 7-28 ms, ~60% of the mean commit. The kept connection turns that off and every
    `CHECKPOINT_EVERY` commits wakes a thread that runs the same PASSIVE checkpoint on
    another connection, in parallel (SQLite releases the GIL), without the write lock.
    Durability is unchanged: a commit is in the WAL when COMMIT returns, as before; the
    checkpoint only moves committed pages into the main file.
    """

    __slots__ = ("_born", "_checkpointer", "_commits", "_conn", "_engine", "_keep", "_lock",
                 "_pg", "_postgres", "_url", "lost")

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._url = url
        name = engine.dialect.name
        self._postgres = (name == "postgresql" and engine.dialect.driver == "psycopg"
                          and _pipelines_supported())
        self._keep = self._postgres or (name == "sqlite"
                                        and not isinstance(engine.pool, StaticPool))
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pg: PgWriteConnection | None = None  # PostgreSQL: the kept connection's state
        self._born = sqlite_conn.forks()
        self._commits = 0
        self._checkpointer: sqlite_conn.Checkpointer | None = None
        # The last run() failed because its kept connection was lost (dropped by the
        # server, a network cut): whether its COMMIT happened is unknown (store/lost_commit.py).
        self.lost = False

    def run(self, steps: Sequence[Step], action: str, *, synchronous: bool = True,
            meanwhile: Callable[[], object] | None = None,
            fence: tuple[str, str] | None = None) -> None:
        """Execute `steps` in one transaction; with a `fence` (run_id, driver_id:
        `WriteBatch.fence`), only if the run's row names that driver (RunTakenOver).

        1. SQLite: `BEGIN IMMEDIATE` first, so the write lock is taken (waiting on
           busy_timeout) before anything is read; PostgreSQL: BEGIN, then
           `SET LOCAL synchronous_commit = off` when not `synchronous` (see WriteBatch).
        2. Each step is one execute (one row) or executemany (several).
        3. An update that matched fewer rows than it was given raises StoreError.
        4. Any error rolls back; a disconnect also drops the connection.
        All DBAPI errors and parameter conversion errors become StoreError.
        `meanwhile` (RunStore.write): called at most once, while PostgreSQL commits a one-trip
        write, before the write elsewhere.
        """
        if not self._keep or sqlite_conn.forks() != self._born:
            if meanwhile is not None:
                meanwhile()
            _transaction(self._engine, self._url, None, steps, action, synchronous=synchronous,
                         fence=fence)
            return
        with self._lock:
            self.lost = False
            if self._conn is None:
                self._conn = self._connect(action)
            if self._pg is None and meanwhile is not None:
                meanwhile()
                meanwhile = None
            try:
                _transaction(self._engine, self._url, self._conn, steps, action,
                             synchronous=synchronous, one_trip=self._pg, meanwhile=meanwhile,
                             fence=fence)
            finally:
                if not self._conn.is_valid:  # invalidated by the failure: take a new one next
                    self._conn = self._pg = None
                    self.lost = True
            if self._postgres:
                return
            self._commits += 1
            if self._commits % sqlite_conn.CHECKPOINT_EVERY == 0:
                if self._checkpointer is None:
                    engine = self._engine
                    self._checkpointer = sqlite_conn.Checkpointer(
                        engine.raw_connection,
                        (exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error))
                self._checkpointer.request()

    def _connect(self, action: str) -> Any:
        conn = _checkout(self._engine, self._url, action)
        try:
            if self._postgres:
                from cadenza.store.pgwrite import PgWriteConnection

                pg = conn.driver_connection
                pg.autocommit = True
                pg.prepare_threshold = None  # see store/pgwrite.py
                self._pg = PgWriteConnection(pg)
            else:
                conn.dbapi_connection.execute("PRAGMA wal_autocheckpoint = 0")
        except self._engine.dialect.loaded_dbapi.Error as e:
            conn.invalidate(e)
            raise store_error(e, self._url, action) from e
        return conn

    def close(self) -> None:
        """Give the kept connection back to the pool (before the engine is disposed)."""
        if sqlite_conn.forks() != self._born:
            return
        with self._lock:
            conn, pg_write, self._conn, self._pg = self._conn, self._pg, None, None
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        if conn is not None:
            try:  # back to the pool as it came: in transactions (PostgreSQL), checkpointing
                # on its own commits (SQLite)
                if self._postgres:
                    if pg_write is not None:
                        pg_write.release()  # its session's synchronous_commit
                    pg = conn.driver_connection
                    pg.autocommit = False
                    pg.prepare_threshold = 5  # psycopg's default
                else:
                    conn.dbapi_connection.execute(
                        f"PRAGMA wal_autocheckpoint = {sqlite_conn.AUTOCHECKPOINT}")
            except self._engine.dialect.loaded_dbapi.Error as e:
                conn.invalidate(e)
            conn.close()


def _pipelines_supported() -> bool:
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


# Commits of a kept SQLite connection between two background checkpoints, and the rest of
# the checkpoint rules: store/sqlite_conn.py (the SQLite run path shares them).
CHECKPOINT_EVERY = sqlite_conn.CHECKPOINT_EVERY
AUTOCHECKPOINT = sqlite_conn.AUTOCHECKPOINT


def _checkout(engine: Engine, url: str, action: str) -> Any:
    try:
        return engine.raw_connection()
    # The pool hands the driver's own error through unwrapped (psycopg's OperationalError
    # when the database was dropped); an Engine.connect() would have wrapped it.
    except (exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as e:  # cannot connect
        raise store_error(e, url, action) from e


def _transaction(engine: Engine, url: str, kept: Any, steps: Sequence[Step], action: str, *,
                 synchronous: bool, one_trip: PgWriteConnection | None = None,
                 meanwhile: Callable[[], object] | None = None,
                 fence: tuple[str, str] | None = None) -> None:
    """One transaction of `steps` on `kept`, or on a connection checked out for it;
    PostgreSQL's `kept` in one round trip through `one_trip`, calling `meanwhile` while the
    server works. With a `fence`, the run's driver is read in the transaction first
    (one_trip: inside the statements it sends, see store/pgwrite.py) and the transaction
    rolled back with RunTakenOver if it is not fence's."""
    try:
        prepared = [(dml, dml.parameters(rows), rows, check) for dml, rows, check in steps]
    except (TypeError, ValueError) as e:
        raise _bad_values(e, action) from e
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    conn = kept if kept is not None else _checkout(engine, url, action)
    cursor = None
    try:
        if one_trip is not None:  # autocommit: BEGIN ... COMMIT in one round trip
            one_trip.run([(_pg_statement(dml, check), rows)
                          for dml, _params, rows, check in prepared], synchronous=synchronous,
                         meanwhile=meanwhile, fence=fence)
            return  # committed (nothing for conn.commit() to do in autocommit)
        if dialect.name == "postgresql":
            _execute_pipelined(conn.driver_connection, prepared, synchronous=synchronous,
                               fence=fence)
        else:
            cursor = conn.cursor()
            if dialect.name == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            if fence is not None:
                cursor.execute(_FENCE_SQL.replace("%s", "?"), (fence[0],))
                _check_fence(fence, cursor.fetchone())
            for dml, params, rows, check in prepared:
                if len(params) == 1:
                    cursor.execute(dml.sql, params[0])
                else:
                    cursor.executemany(dml.sql, params)
                if check and cursor.rowcount >= 0 and cursor.rowcount != len(params):
                    raise _missing_rows(cursor.rowcount, rows, dml.what)
        conn.commit()
    except dbapi_error as e:
        _rollback(conn, dialect, e, cursor)
        if fence is not None and one_trip is not None and conn.is_valid and (
                _is_missing_row(e) or _is_fenced(e)):
            _raise_if_taken_over(conn, fence)
        if one_trip is not None and _is_missing_row(e) and conn.is_valid:
            missing = _diagnose_missing_rows(conn, prepared)
            if missing is not None:
                raise missing from None
        raise store_error(e, url, action) from e
    except (TypeError, ValueError) as e:  # psycopg serialises JSON only while executing
        _rollback(conn, dialect, None, cursor)
        raise _bad_values(e, action) from e
    except BaseException:
        _rollback(conn, dialect, None, cursor)
        raise
    finally:
        if cursor is not None:
            cursor.close()
        if kept is None:
            conn.close()  # back to the pool


# A step of `execute_steps`: a statement (one row per execute, or many in one ArrayDml),
# its parameter dicts, and whether every row must match an existing one (updates).
BulkStep = tuple[PreparedDml | ArrayDml, list[dict[str, Any]], bool]


def execute_steps(conn: Connection, steps: Sequence[BulkStep], action: str) -> None:
    """Execute `steps` like `run_transaction`, but on `conn`, a Core connection inside a
    transaction the caller opened (and commits or rolls back): for transactions that also
    need Core for their reads and locks, such as creating many scheduled runs.

    Each step is one execute or executemany on the connection's DBAPI cursor (PostgreSQL:
    all of them in one psycopg pipeline), converting each distinct value once
    (`parameters_shared`). A DBAPI error is raised as SQLAlchemy's wrapper of it
    (IntegrityError, OperationalError, ...), as Core would raise it, for the caller to
    translate; conversion errors become StoreError. The caller's `with engine.begin()`
    then rolls back.
    """
    if not steps:
        return
    try:
        prepared = [(dml, dml.parameters_shared(rows), rows, check) for dml, rows, check in steps]
    except (TypeError, ValueError) as e:
        raise _bad_values(e, action) from e
    dialect = conn.dialect
    raw = conn.connection  # the pooled DBAPI connection, in the caller's transaction
    target: Any = raw
    pipeline: Any = nullcontext()
    if dialect.name == "postgresql":
        import psycopg

        target = raw.driver_connection
        if psycopg.Pipeline.is_supported():
            pipeline = target.pipeline()
    sql = ""
    cursors: list[Any] = []
    try:
        with pipeline:
            for dml, params, _rows, _check in prepared:
                sql = dml.sql
                cursor = target.cursor()
                cursors.append(cursor)
                if len(params) == 1:
                    cursor.execute(dml.sql, params[0])
                else:
                    cursor.executemany(dml.sql, params)
        for cursor, (dml, params, rows, check) in zip(cursors, prepared, strict=True):
            expected = len(rows) if isinstance(dml, ArrayDml) else len(params)
            if check and cursor.rowcount >= 0 and cursor.rowcount != expected:
                raise _missing_rows(cursor.rowcount, rows, dml.what)
    except dialect.loaded_dbapi.Error as e:
        raise exc.DBAPIError.instance(sql, None, e, dialect.loaded_dbapi.Error,
                                      hide_parameters=True, dialect=dialect) from e
    except (TypeError, ValueError) as e:  # psycopg serialises JSON only while executing
        raise _bad_values(e, action) from e
    finally:
        for cursor in cursors:
            cursor.close()


# A driver's write is fenced on its run's driver (WriteBatch.fence): read it in the transaction.
_FENCE_SQL = "SELECT driver_id FROM runs WHERE run_id = %s"
# PostgreSQL (READ COMMITTED) locks the row it reads: a takeover's UPDATE of it, uncommitted
# when the write starts, is waited for and then seen; nor can one commit while the write runs.
_FENCE_SQL_LOCKED = _FENCE_SQL + " FOR SHARE"


def _check_fence(fence: tuple[str, str], row: Any) -> None:
    """RunTakenOver unless `row` (the fence query's) names fence's driver."""
    if row is None or row[0] != fence[1]:
        raise failures.taken_over(fence[0], None if row is None else row[0])


def _execute_pipelined(pg: Any, prepared: list[tuple[PreparedDml, list[Any], Any, bool]], *,
                       synchronous: bool = True, fence: tuple[str, str] | None = None) -> None:
    """PostgreSQL: send BEGIN and every statement in one psycopg pipeline, then check the
    update counts before the caller commits.

    Two round trips per write (statements, COMMIT) instead of one per statement plus BEGIN
    and COMMIT. On localhost this is within noise (the WAL flush at COMMIT dominates); against
    a server across a network each round trip saved is worth far more.

    Not `synchronous`: the transaction starts with `SET LOCAL synchronous_commit = off`
    (sent in the same pipeline), so COMMIT returns without waiting for the WAL flush, ~1 ms
    (2 slow cores, local SSD, fdatasync) of the ~1.1 ms a chained step cost on PostgreSQL.
    """
    import psycopg

    cursors = []
    fenced = None
    try:
        with pg.pipeline() if psycopg.Pipeline.is_supported() else nullcontext():
            if not synchronous:
                cur = pg.cursor()
                cursors.append(cur)
                cur.execute("SET LOCAL synchronous_commit = off")
            if fence is not None:
                fenced = pg.cursor()
                fenced.execute(_FENCE_SQL_LOCKED, (fence[0],))
            for dml, params, _rows, _check in prepared:
                cur = pg.cursor()
                cursors.append(cur)
                if len(params) == 1:
                    cur.execute(dml.sql, params[0])
                else:
                    cur.executemany(dml.sql, params)
        if fence is not None and fenced is not None:
            _check_fence(fence, fenced.fetchone())
        for cur, (dml, params, rows, check) in zip(cursors[0 if synchronous else 1:], prepared,
                                                   strict=True):
            if check and cur.rowcount >= 0 and cur.rowcount != len(params):
                raise _missing_rows(cur.rowcount, rows, dml.what)
    finally:
        for cur in cursors:
            cur.close()
        if fenced is not None:
            fenced.close()


def _pg_statement(dml: PreparedDml, check: bool) -> PgStatement:
    stmt = dml.pg_checked if check else dml.pg
    assert stmt is not None, dml.what  # PostgreSQL statements have both; only UPDATEs are checked
    return stmt


def _is_fenced(e: BaseException) -> bool:
    from cadenza.store.pgwrite import is_fenced

    return is_fenced(e)


def _raise_if_taken_over(conn: Any, fence: tuple[str, str]) -> None:
    """After a fenced one-trip write failed (and was rolled back): RunTakenOver naming the
    run's driver now, unless it is still fence's (a missing row, then). A holder that cannot
    be read is named as unknown."""
    import psycopg

    try:
        with conn.driver_connection.cursor() as cur:
            row = cur.execute(_FENCE_SQL, (fence[0],)).fetchone()
    except psycopg.Error as e:
        log.warning("could not read which driver holds run %s: %s", fence[0], e)
        raise failures.taken_over(fence[0], None) from None
    _check_fence(fence, row)


def _is_missing_row(e: BaseException) -> bool:
    from cadenza.store.pgwrite import is_missing_row

    return is_missing_row(e)


def _diagnose_missing_rows(conn: Any, prepared: list[tuple[PreparedDml, list[Any], Any, bool]]
                           ) -> StoreError | None:
    """After a one-trip write failed on a missing row (and was rolled back): run its
    statements again in a transaction that is always rolled back, checking the counts one
    step at a time, for the error that names the rows. None if it does not find them."""
    import psycopg

    cur = conn.driver_connection.cursor()
    try:
        cur.execute(b"BEGIN")
        for dml, params, rows, check in prepared:
            if len(params) == 1:
                cur.execute(dml.sql, params[0])
            else:
                cur.executemany(dml.sql, params)
            if check and cur.rowcount >= 0 and cur.rowcount != len(params):
                return _missing_rows(cur.rowcount, rows, dml.what)
        return None
    except psycopg.Error:  # the caller reports the first error
        return None
    finally:
        try:
            cur.execute(b"ROLLBACK")
        except psycopg.Error as e:
            conn.invalidate(e)
        finally:
            cur.close()


def _rollback(conn: Any, dialect: Any, error: BaseException | None, cursor: Any) -> None:
    if error is not None and dialect.is_disconnect(error, conn.dbapi_connection, cursor):
        conn.invalidate(error)
        return
    try:
        conn.rollback()
    except dialect.loaded_dbapi.Error as e:  # the connection is unusable: drop it
        log.warning("rollback failed (%s); discarding the connection", e)
        conn.invalidate(e)


def _bad_values(e: Exception, action: str) -> StoreError:
    return failures.bad_values(e, action)


def _missing_rows(count: int, rows: list[dict[str, Any]], what: str) -> StoreError:
    keys = [tuple(str(v) for k, v in row.items() if k.startswith("k_")) for row in rows[:5]]
    return failures.missing_rows(count, keys, len(rows), what)
