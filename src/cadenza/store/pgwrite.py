"""PostgreSQL's write transaction in one round trip, on the connection a store's Writer keeps.

What belongs here: sending one write transaction (BEGIN, the statements, COMMIT) to
PostgreSQL as one libpq pipeline with one Sync, preparing each statement once per
connection, and turning the server's answer into success or the first error. What does
not: which statements a write runs and how values are converted (`runs.py`, `dml.py`), nor
the connection's lifecycle (`dml.Writer`).

Why: a chained step writes once per task and waits for the write before it dispatches the
next task. Through a pooled connection and psycopg's cursor the write took three round
trips (BEGIN; the statements; COMMIT), and psycopg's pipeline machinery ran ~24 generator
steps and 8 waits per write in Python. Here the statements are prepared once (named
server-side statements, Parse sent in the same pipeline the first time; BEGIN, SET LOCAL and
COMMIT too, which were parsed again on every write), each execution is
one `send_query_prepared` with parameters dumped by psycopg's Transformer (C; text, but
timestamps binary), and the whole transaction is one flush and one read of the results.

A write of a few rows of distinct run tables (a chained step: the finished task's update
and its attempt) is ONE statement, each row a data-modifying WITH query (`fused`), sent
outside pipeline mode once prepared: one Bind/Execute/Sync and one result. Measured with
callgrind (bench/pg_backend_counts.py), the server's instructions per chained-step write
went 365 k -> 261 k with revision 0008 and this (the fusing's own share is on the client).

A write that need not wait for the WAL flush (`synchronous=False`, most of a chain's) sends
no BEGIN or COMMIT at all: the statements of one pipeline up to its Sync are one implicit
transaction, committed at the Sync (or rolled back there after an error), and the
connection's session runs with `synchronous_commit = off`. A synchronous write is BEGIN,
`SET LOCAL synchronous_commit = on`, the statements, COMMIT. Measured on the loaded 2-core
VM, a chained step's write (2 statements): 3 fewer messages, ~15% less server CPU.

A checked UPDATE cannot be checked by the client before the commit (the Sync is already on
the wire), so it runs as `checked_sql`, which fails on the server when it matches no row;
the error aborts the transaction and the server skips everything up to the Sync, COMMIT
included.

The connection is in autocommit mode (the Writer sets it), psycopg's own automatic
preparing is off on it (`prepare_threshold = None`: psycopg would otherwise DEALLOCATE ALL
on a rollback, ours included), its session's synchronous_commit is off until `release()`,
and only the Writer's lock holder uses it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import Connection, errors, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.generators import fetch_many, send

_BINARY = PyFormat.BINARY
_TEXT = PyFormat.TEXT
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_FATAL = pq.ExecStatus.FATAL_ERROR
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_names = itertools.count()


class PgStatement:
    """One statement in PostgreSQL's numbered form ($1, $2 ...), with the order in which
    its named parameters fill those numbers and the name it is prepared under.

    `fuse_as`: for an INSERT, or a checked UPDATE (`checked_update`), of one row that `fused`
    may merge with others into one statement: ("insert" | "update", its table), and
    `fuse_sql` the row's statement to merge (for an UPDATE, the unchecked one); None for
    any other statement."""

    __slots__ = ("formats", "fuse_as", "fuse_sql", "name", "names", "pyformat", "sql")

    def __init__(self, pyformat_sql: str, *, fuse_as: tuple[str, str] | None = None,
                 fuse_sql: str | None = None, binary: frozenset[str] = frozenset(),
                 formats: list[PyFormat] | None = None) -> None:
        self.pyformat = pyformat_sql
        self.sql, self.names = _numbered(pyformat_sql, 0)
        self.name = f"cadenza_w{next(_names)}".encode()
        self.fuse_as = fuse_as
        self.fuse_sql = pyformat_sql if fuse_sql is None else fuse_sql
        # How each parameter travels: binary for the names in `binary` (timestamps: the
        # server's text parser was ~6% of a chained step's backend instructions), text for
        # the rest (their casts decide the types; a binary int would carry its own width).
        self.formats = formats if formats is not None else [
            _BINARY if n in binary else _TEXT for n in self.names]


def _numbered(pyformat_sql: str, offset: int) -> tuple[bytes, tuple[str, ...]]:
    """`pyformat_sql` with its named placeholders numbered from `offset` + 1 (a name that
    occurs twice gets one number), and the names in number order."""
    order: dict[str, int] = {}

    def number(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        return f"${order.setdefault(m.group(1), len(order) + 1) + offset}"

    return _PLACEHOLDER.sub(number, pyformat_sql).encode(), tuple(order)


# A synchronous transaction's own statements, prepared like the others (no parse per write).
_BEGIN = PgStatement("BEGIN")
_WAITING = PgStatement("SET LOCAL synchronous_commit = on")
_COMMIT = PgStatement("COMMIT")
_CONTROL = (_BEGIN, _WAITING, _COMMIT)


class PgWriteConnection:
    """A kept autocommit psycopg connection and the statements prepared on it."""

    __slots__ = ("_fused", "_prepared", "_tx", "pg")

    def __init__(self, pg: Connection[Any]) -> None:
        self.pg = pg
        self._tx = Transformer(pg)
        pg.execute("SET synchronous_commit = off")  # a synchronous write turns it on for itself
        # A statement's name stands for the same SQL for the whole process (a counter), so
        # the names already prepared on this connection (by an earlier Writer that gave it
        # back to the pool) count as prepared here: preparing one again would fail.
        cur = pg.execute("SELECT name FROM pg_prepared_statements "
                         "WHERE name LIKE 'cadenza\\_w%'")
        self._prepared: set[bytes] = {name.encode() for (name,) in cur.fetchall()}
        cur.close()
        self._fused: dict[tuple[tuple[bytes, int], ...], PgStatement] = {}

    def release(self) -> None:
        """Before the connection goes back to a pool: its session as it came."""
        self.pg.execute("RESET synchronous_commit")

    def run(self, steps: Sequence[tuple[PgStatement, Sequence[Any]]], *,
            synchronous: bool, meanwhile: Callable[[], object] | None = None,
            fence: tuple[str, str] | None = None) -> None:
        """Every row of every step as one transaction in one pipeline: one flush, one read.
        Synchronous: inside BEGIN; SET LOCAL synchronous_commit = on; ... COMMIT. Otherwise
        the pipeline's implicit transaction. Raises the first error the server reported (a
        psycopg error); the transaction is then rolled back, or (synchronous) aborted and
        waiting for a ROLLBACK. `meanwhile` is called once everything is sent, before the
        answer is read (`_overlap`). With a `fence` (run_id, driver_id), the transaction
        also fails unless the run's row names that driver (`is_fenced`; the caller reads
        who holds it): in the fused statement's main query, or as the first statement."""
        pgconn = self.pg.pgconn
        tx = self._tx
        one = self._fuse(steps, fence)
        if one is not None:
            stmt, values = one
            if not synchronous and stmt.name in self._prepared:
                self._run_one(stmt, values, meanwhile)
                return
            steps = [(stmt, [values])]
        elif fence is not None:
            steps = [(_FENCE, [[fence[0], fence[1]]]), *steps]
        # Every value is dumped before anything is queued: a value psycopg cannot dump
        # raises here, with nothing sent.
        queries: list[tuple[bytes, Sequence[Any], Sequence[pq.Format] | None]] = []
        prepares: list[PgStatement] = []
        for stmt, rows in steps:
            if stmt.name not in self._prepared and stmt not in prepares:
                prepares.append(stmt)
            names = stmt.names
            for row in rows:
                values = row if isinstance(row, list) else [row[n] for n in names]
                queries.append((stmt.name, tx.dump_sequence(values, stmt.formats),
                                tx.formats))
        if synchronous:
            for stmt in _CONTROL:
                if stmt.name not in self._prepared:
                    prepares.append(stmt)
        pgconn.enter_pipeline_mode()
        try:
            for stmt in prepares:
                pgconn.send_prepare(stmt.name, stmt.sql)
            if synchronous:
                pgconn.send_query_prepared(_BEGIN.name, None)
                pgconn.send_query_prepared(_WAITING.name, None)
            for name, params, formats in queries:
                pgconn.send_query_prepared(name, params, param_formats=formats)
            if synchronous:
                pgconn.send_query_prepared(_COMMIT.name, None)
            pgconn.pipeline_sync()
            wait = self.pg.wait
            wait(send(pgconn))
            late = None if meanwhile is None else _overlap(meanwhile)
            error: pq.abc.PGresult | None = None
            for stmt in prepares:
                for res in wait(fetch_many(pgconn)):
                    if res.status == _FATAL:
                        error = error or res
                    elif res.status == _COMMAND_OK:
                        self._prepared.add(stmt.name)
            for _ in range(len(queries) + (3 if synchronous else 0)):
                for res in wait(fetch_many(pgconn)):
                    if res.status == _FATAL and error is None:
                        error = res
            wait(fetch_many(pgconn))  # the Sync's PIPELINE_SYNC
            pgconn.exit_pipeline_mode()
            if late is not None:
                raise late
        except BaseException:
            # Results left unread (an interrupt, a lost connection): this connection's
            # protocol state is unknown. Closing it makes the caller's rollback fail, and
            # that drops the connection from the pool.
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                self.pg.close()
            raise
        if error is not None:
            raise errors.error_from_result(error, encoding=self.pg.info.encoding)


    def _fuse(self, steps: Sequence[tuple[PgStatement, Sequence[Any]]],
              fence: tuple[str, str] | None = None) -> tuple[PgStatement, list[Any]] | None:
        """The steps as ONE statement and its values, when they can be: each row a
        data-modifying WITH query of one statement (a chained step: the task instance
        update and the attempt insert), and the `fence` in its main query. None when they
        cannot (see `fused`)."""
        if not 0 < len(steps) <= FUSE_MAX_STEPS:
            return None
        tables: set[str] = set()
        shape: list[tuple[bytes, int]] = []
        values: list[Any] = []
        rows_in_all = 0
        for stmt, rows in steps:
            fuse_as = stmt.fuse_as
            if fuse_as is None or fuse_as[1] in tables:
                return None
            tables.add(fuse_as[1])
            rows_in_all += len(rows)
            if rows_in_all > FUSE_MAX_ROWS:
                return None
            names = stmt.names
            if fuse_as[0] == "update" and len(rows) > 1:
                # One statement updates a row once: rows with the same key cannot be fused.
                keys = {tuple(row[n] for n in names if n.startswith("k_")) for row in rows}
                if len(keys) < len(rows):
                    return None
            for row in rows:
                values.extend([row[n] for n in names])
            shape.append((stmt.name, len(rows)))
        if fence is not None:
            if "runs" in tables:
                # The fence locks the runs row its statement's own WITH query updates: a row
                # one statement changed is not locked again by it (the EXISTS would be
                # false). Such a write (the run's start or end) sends `_FENCE` first instead.
                return None
            values.extend(fence)
            shape.append((_FENCE.name, 1))
        key = tuple(shape)
        one = self._fused.get(key)
        if one is None:
            one = self._fused[key] = fused([(s, len(rows)) for s, rows in steps],
                                           fence=fence is not None)
        return one, values

    def _run_one(self, stmt: PgStatement, values: list[Any],
                 meanwhile: Callable[[], object] | None = None) -> None:
        """One prepared statement as its own implicit transaction, outside pipeline mode:
        Bind, Execute and Sync in one flush, one result (`meanwhile` called in between)."""
        pgconn = self.pg.pgconn
        tx = self._tx
        params = tx.dump_sequence(values, stmt.formats)
        error: pq.abc.PGresult | None = None
        try:
            pgconn.send_query_prepared(stmt.name, params, param_formats=tx.formats)
            wait = self.pg.wait
            wait(send(pgconn))
            late = None if meanwhile is None else _overlap(meanwhile)
            for res in wait(fetch_many(pgconn)):
                if res.status == _FATAL and error is None:
                    error = res
            if late is not None:
                raise late
        except BaseException:
            # A result left unread: this connection's protocol state is unknown (see run).
            if pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                self.pg.close()
            raise
        if error is not None:
            raise errors.error_from_result(error, encoding=self.pg.info.encoding)


def _overlap(meanwhile: Callable[[], object]) -> BaseException | None:
    """Call `meanwhile` while the server works on what was sent; what it raised, to raise
    once the answer is read (the connection stays in step with the server, and the
    caller learns whether the transaction committed before it learns of the error).

    Why: a chained step's driver waited ~80-110 us for each commit doing nothing (loaded
    2-core VM); the server's work and the driver's next admission are independent, and
    on two cores they overlap."""
    try:
        meanwhile()
    except BaseException as exc:  # noqa: BLE001 - raised after the answer is read
        return exc
    return None


# `fused`'s limits: a write of more rows than this is sent as separate statements.
FUSE_MAX_STEPS = 4
FUSE_MAX_ROWS = 4


def fused(parts: Sequence[tuple[PgStatement, int]], *, fence: bool = False) -> PgStatement:
    """One statement that runs `rows` rows of each statement in `parts` (INSERTs and UPDATEs
    of distinct tables, see `PgStatement.fuse_as`) as data-modifying WITH queries, and fails
    like `checked_update` when any of the UPDATEs matched no row. Its parameters are each
    row's, in order. With `fence`, two more (run_id, driver_id) and it also fails like
    `_FENCE` when the run's row names another driver: its main query reads the runs row by
    primary key on the statement's snapshot, from before any of its own WITH queries.

    Why: a chained step's write was two statements in one pipeline; as one statement the
    server plans, starts and ends one executor instead of two and answers once, and the
    client dumps one parameter list and reads one result (measured: see docs/status.md,
    issue 12). PostgreSQL runs every data-modifying WITH query exactly once, to completion,
    whether or not the main query reads it, all of them on the statement's one snapshot:
    so the tables must be distinct (an UPDATE would not see a row an INSERT of the same
    statement adds), and an UPDATE's rows must have distinct keys (a statement updates a
    row once). Foreign keys are checked at the end of the statement, so they see every
    insert of it."""
    ctes: list[str] = []
    checks: list[str] = []
    formats: list[PyFormat] = []
    offset = 0
    for stmt, rows in parts:
        assert stmt.fuse_as is not None, stmt.pyformat
        for _ in range(rows):
            sql, names = _numbered(stmt.fuse_sql, offset)
            assert names == stmt.names, stmt.pyformat  # the same parameters, in one order
            offset += len(names)
            formats.extend(stmt.formats)
            alias = f"cadenza_w{len(ctes)}"
            if stmt.fuse_as[0] == "update":
                ctes.append(f"{alias} AS ({sql.decode()} RETURNING 1)")
                # NOT EXISTS, not count(*) = 0: no aggregate to start and run per write
                # (callgrind, bench/pg_backend_counts.py: 290 k -> 267 k server instructions
                # per fenced chained-step write).
                checks.append(f"NOT EXISTS (SELECT FROM {alias})")
            else:
                ctes.append(f"{alias} AS ({sql.decode()})")
    if fence:
        formats.extend([_TEXT, _TEXT])
        held = _HELD.replace("%(k_fence_run)s", f"${offset + 1}").replace(
            "%(k_fence_driver)s", f"${offset + 2}")
        if not checks:
            main = _FENCE_ALONE.replace("%(held)s", held)
        else:
            # One mark for both failures (a CASE between two cost ~15 k more server
            # instructions per write): the caller reads which one it was. The fence first:
            # an OR is evaluated left to right, and reading a WITH query runs its UPDATE, so
            # this locks the runs row before the task rows, the order every other writer
            # takes (the fence-first path, a takeover, gc's delete): no lock-order deadlock.
            checks.insert(0, f"NOT {held}")
    if checks:
        # The cast's text ends in pg_backend_pid() (not immutable): the planner never folds
        # the failing cast while it plans.
        main = (f"SELECT CAST('{_MISSING_ROW_MARK}' || pg_backend_pid() AS INTEGER) "
                f"WHERE {' OR '.join(checks)}")
    elif not fence:
        main = "SELECT 1 WHERE false"
    return PgStatement(f"WITH {', '.join(ctes)} {main}".replace("%", "%%"), formats=formats)

# The error a checked UPDATE raises when it matched no row: casting this text (with the
# count, or in a fused statement the backend's pid, appended, so the planner cannot evaluate
# the cast ahead of time) to an integer.
_MISSING_ROW_MARK = "cadenza: the row to update does not exist "

# The fence of a driver's write (WriteBatch.fence): whether the run's row still names the
# driver, one primary-key lookup (an EXISTS: measured by callgrind, bench/pg_backend_counts.py,
# half the server instructions of reading the driver out with a scalar subquery) that locks
# the row FOR SHARE: a takeover's UPDATE of it that is not yet committed is waited for and
# its new driver then seen (READ COMMITTED re-reads a locked row), and none can commit while
# the write runs; an unlocked read saw the old driver on the statement's snapshot and the
# stale write landed after the takeover (+7 k server instructions per write, 267 -> 274 k;
# tests/integration/test_write_fence.py has the race); a write
# whose run names another driver fails like a checked UPDATE, with this mark (the caller then
# reads who holds the run). Alone (`_FENCE`, the first statement of a write that is not
# fused) or in a fused statement's main query. The cast's text ends in pg_backend_pid() (not
# immutable) so that the planner never folds the failing cast while it plans.
_FENCE_MARK = "cadenza: the run is driven by another driver "
_HELD = ("EXISTS (SELECT FROM runs WHERE run_id = %(k_fence_run)s "
         "AND driver_id = %(k_fence_driver)s FOR SHARE)")
_FENCE_ALONE = f"SELECT CAST('{_FENCE_MARK}' || pg_backend_pid() AS INTEGER) WHERE NOT %(held)s"
_FENCE = PgStatement(_FENCE_ALONE.replace("%(held)s", _HELD))


def is_fenced(e: BaseException) -> bool:
    """`e` is the error of a fenced write whose run names another driver (or none)."""
    return getattr(e, "sqlstate", None) == "22P02" and _FENCE_MARK in str(e)


def checked_update(sql: str) -> str:
    """`sql`, an UPDATE of one row by its primary key, as a statement that fails on the
    server when it matches no row."""
    return (f"WITH cadenza_updated AS ({sql} RETURNING 1) "
            f"SELECT CAST('{_MISSING_ROW_MARK}' || count(*) AS INTEGER) "
            "FROM cadenza_updated HAVING count(*) = 0")


def is_missing_row(e: BaseException) -> bool:
    """`e` is the error of a checked UPDATE that matched no row."""
    return getattr(e, "sqlstate", None) == "22P02" and _MISSING_ROW_MARK in str(e)
