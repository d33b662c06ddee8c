"""PostgreSQL's writer (store/dml.py `Writer`, store/pgwrite.py): a store keeps one
autocommit connection for its writes and sends each write transaction (the statements, in
BEGIN ... COMMIT when synchronous, otherwise as the pipeline's implicit transaction) as one
round trip, with statements prepared once per connection; updates are still
checked (on the server), a failed write rolls back and leaves the connection usable, and
dispose() gives the connection back as it came.

Round trips are counted by a TCP relay between the store and the server: a client burst is
data the client sends after the server last sent (or first), i.e. one request/response
exchange."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from cadenza.core.errors import StoreError
from cadenza.core.records import WriteBatch
from cadenza.core.states import TaskState
from cadenza.store import RunStore
from tests.fixtures.pgrelay import PgRelay
from tests.integration.test_store import attempt, make_run, ti

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_write_is_one_round_trip_on_the_kept_connection(
        pg_relay: tuple[RunStore, PgRelay]) -> None:
    """A chained step's write (the finished task's update and attempt, the next task's
    start) is ONE exchange with the server; through the pool it was three (BEGIN; the
    statements; COMMIT). Also when the statements are prepared (first write) and with
    synchronous_commit off."""
    store, relay = pg_relay
    run = make_run()
    names = [f"t{i}" for i in range(4)]
    store.create_run(run, [ti(run.run_id, n) for n in names])
    kept = store._writer._conn
    before = relay.bursts
    for i, (done, nxt) in enumerate(itertools.pairwise(names)):
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, done, state=TaskState.SUCCESS, attempt=1),
                                   ti(run.run_id, nxt, state=TaskState.RUNNING, attempt=1)],
            attempts=[attempt(run.run_id, done, 1, state=TaskState.SUCCESS)],
            synchronous=i % 2 == 1,
        ))
    assert relay.bursts - before == 3
    assert store._writer._conn is kept
    states = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert states == {"t0": TaskState.SUCCESS, "t1": TaskState.SUCCESS,
                      "t2": TaskState.SUCCESS, "t3": TaskState.RUNNING}
    assert len(store.get_attempts(run.run_id)) == 3


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_statements_are_prepared_once_per_connection(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a", map_index=m) for m in range(5)])
    for m in range(5):
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "a", map_index=m, state=TaskState.SUCCESS,
                                      attempt=1)],
            attempts=[attempt(run.run_id, "a", 1, map_index=m, state=TaskState.SUCCESS)],
            synchronous=m < 2,
        ))
    pg = store._writer._conn.driver_connection
    rows = pg.execute("SELECT statement, generic_plans + custom_plans FROM "
                      "pg_prepared_statements WHERE name LIKE 'cadenza_w%'").fetchall()
    runs = {what: sorted(n for stmt, n in rows if stmt.startswith(start))
            for what, start in [("run insert", "INSERT INTO runs"),
                                ("fused step", "WITH cadenza_w0 AS (UPDATE task_instances"),
                                ("attempt insert", "INSERT INTO attempts")]}
    # create_run's run and task instance inserts (6 rows: not fused), then the 5 writes'
    # update and insert as one statement, synchronous or not: each prepared once on the
    # kept connection, and run that many times.
    assert runs == {"run insert": [1], "fused step": [5], "attempt insert": []}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_chained_step_is_one_statement_and_other_writes_are_not(store: RunStore) -> None:
    """A write of a few rows of distinct run tables runs as ONE statement (each row a
    data-modifying WITH query); writes that one statement would get wrong are sent as
    separate statements and still land: two updates of the same row (a statement updates
    a row once), a task instance inserted and updated in one write (an update does not see
    an insert of its own statement), and more rows than FUSE_MAX_ROWS."""
    from cadenza.store import pgwrite

    run = make_run()
    store.create_run(run, [ti(run.run_id, n) for n in "abc"])  # 4 rows: fused
    pg = store._writer._conn.driver_connection

    def fused_runs() -> dict[str, int]:
        """Executions of each fused statement on the kept connection, by its first words."""
        rows = pg.execute("SELECT statement, generic_plans + custom_plans FROM "
                          r"pg_prepared_statements WHERE statement LIKE 'WITH cadenza\_w0 %'"
                          ).fetchall()
        return {stmt[:40]: n for stmt, n in rows if n}

    store.write(WriteBatch(  # the chained step and the run's update: fused
        task_instance_updates=[ti(run.run_id, "a", state=TaskState.SUCCESS, attempt=1)],
        attempts=[attempt(run.run_id, "a", 1, state=TaskState.SUCCESS)],
        run_updates=[run], synchronous=False))
    assert fused_runs() == {"WITH cadenza_w0 AS (INSERT INTO runs (ru": 1,
                            "WITH cadenza_w0 AS (UPDATE runs SET pipe": 1}
    store.write(WriteBatch(  # the same row twice: not fused, the later one wins
        task_instance_updates=[ti(run.run_id, "b", state=TaskState.RUNNING, attempt=1),
                               ti(run.run_id, "b", state=TaskState.SUCCESS, attempt=1)],
        synchronous=False))
    store.write(WriteBatch(  # inserted and updated in one write: not fused
        new_task_instances=[ti(run.run_id, "d")],
        task_instance_updates=[ti(run.run_id, "d", state=TaskState.SKIPPED)],
        synchronous=False))
    store.write(WriteBatch(  # too many rows: not fused
        attempts=[attempt(run.run_id, "c", n) for n in range(1, pgwrite.FUSE_MAX_ROWS + 2)],
        synchronous=False))
    assert sum(fused_runs().values()) == 2
    states = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert states == {"a": TaskState.SUCCESS, "b": TaskState.SUCCESS, "c": TaskState.PENDING,
                      "d": TaskState.SKIPPED}
    assert len(store.get_attempts(run.run_id)) == 1 + pgwrite.FUSE_MAX_ROWS + 1
    with pytest.raises(StoreError, match="1 of 2 task instances updated"):  # fused, checked
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "c", state=TaskState.QUEUED),
                                   ti(run.run_id, "ghost", state=TaskState.QUEUED)],
            attempts=[attempt(run.run_id, "c", 99)],
            synchronous=False))
    assert sum(fused_runs().values()) == 3
    c = store.get_task_instance(run.run_id, "c")
    assert c is not None and c.state is TaskState.PENDING  # rolled back, attempt too
    assert len(store.get_attempts(run.run_id)) == 1 + pgwrite.FUSE_MAX_ROWS + 1


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_write_is_one_transaction_and_waits_for_the_disk_only_when_synchronous(
        store: RunStore) -> None:
    """What the server saw, recorded by a trigger on each row update: the transaction and
    the synchronous_commit it ran under. A write without BEGIN (the pipeline's implicit
    transaction) is still one transaction."""
    run = make_run()
    store.create_run(run, [ti(run.run_id, n) for n in "abcd"])
    with store._engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE seen (task text, tx bigint, sync text)")
        conn.exec_driver_sql(
            "CREATE FUNCTION note_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO seen VALUES (NEW.task_id, txid_current(), "
            "current_setting('synchronous_commit')); RETURN NEW; END $$")
        conn.exec_driver_sql("CREATE TRIGGER note AFTER UPDATE ON task_instances "
                             "FOR EACH ROW EXECUTE FUNCTION note_update()")
    for pair, synchronous in [("ab", True), ("cd", False)]:
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, n, state=TaskState.SUCCESS, attempt=1)
                                   for n in pair],
            synchronous=synchronous))
    with store._engine.connect() as conn:
        seen = conn.exec_driver_sql("SELECT task, tx, sync FROM seen ORDER BY task").all()
    assert [(task, sync) for task, _, sync in seen] == [
        ("a", "on"), ("b", "on"), ("c", "off"), ("d", "off")]
    tx = [t for _, t, _ in seen]
    assert tx[0] == tx[1] and tx[2] == tx[3] and tx[1] != tx[2]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_failed_write_rolls_back_and_the_connection_stays_usable(store: RunStore) -> None:
    from psycopg.pq import TransactionStatus

    run = make_run()
    store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "b")])
    kept = store._writer._conn
    with pytest.raises(StoreError):  # a duplicate attempt key: the server refuses
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "a", state=TaskState.QUEUED)],
            attempts=[attempt(run.run_id, "a", 1), attempt(run.run_id, "a", 1)],
        ))
    with pytest.raises(StoreError, match="1 of 2 task instances updated"):  # checked update
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "b", state=TaskState.QUEUED),
                                   ti(run.run_id, "ghost", state=TaskState.QUEUED)],
            synchronous=False,
        ))
    assert store._writer._conn is kept
    pg: Any = kept.driver_connection
    assert pg.info.transaction_status is TransactionStatus.IDLE
    states = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert states == {"a": TaskState.PENDING, "b": TaskState.PENDING}
    assert store.get_attempts(run.run_id) == []
    store.write(WriteBatch(
        task_instance_updates=[ti(run.run_id, "a", state=TaskState.SUCCESS, attempt=1)],
        attempts=[attempt(run.run_id, "a", 1, state=TaskState.SUCCESS)],
    ))
    done = store.get_task_instance(run.run_id, "a")
    assert done is not None and done.state is TaskState.SUCCESS


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_meanwhile_runs_once_while_the_answer_is_awaited(
        pg_relay: tuple[RunStore, PgRelay]) -> None:
    """`write(meanwhile=...)` calls it once, after the write is sent and before its answer
    is read (libpq still has the command in progress), in the same one round trip; an
    error it raises comes out after the answer was read: the write landed and the kept
    connection goes on."""
    from psycopg.pq import TransactionStatus

    store, relay = pg_relay
    run = make_run()
    names = ["a", "b", "c", "d"]
    store.create_run(run, [ti(run.run_id, n) for n in names])
    pg: Any = store._writer._conn.driver_connection
    seen: list[TransactionStatus] = []
    before = relay.bursts
    for i, name in enumerate(names[:3]):  # fused and prepared on the first, synchronous on i=1
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, name, state=TaskState.SUCCESS, attempt=1)],
            attempts=[attempt(run.run_id, name, 1, state=TaskState.SUCCESS)],
            synchronous=i == 1,
        ), meanwhile=lambda: seen.append(pg.pgconn.transaction_status))
    assert seen == [TransactionStatus.ACTIVE] * 3
    assert relay.bursts - before == 3

    class Boom(Exception):
        pass

    def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        store.write(WriteBatch(
            task_instance_updates=[ti(run.run_id, "d", state=TaskState.SUCCESS, attempt=1)],
            attempts=[attempt(run.run_id, "d", 1, state=TaskState.SUCCESS)],
            synchronous=False,
        ), meanwhile=boom)
    assert pg.info.transaction_status is TransactionStatus.IDLE
    assert store._writer._conn.driver_connection is pg
    states = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert states == dict.fromkeys(names, TaskState.SUCCESS)
    assert len(store.get_attempts(run.run_id)) == 4


def _terminate_kept(store: RunStore) -> Any:
    kept = store._writer._conn
    pid = kept.driver_connection.info.backend_pid
    other = store._engine.raw_connection()
    try:
        cur = other.cursor()
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        cur.close()
    finally:
        other.close()
    return kept


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_lost_connection_is_replaced_and_the_write_goes_through(store: RunStore) -> None:
    """A write on a dead kept connection is written again on a new one when that is safe
    (store/lost_commit.py; tests/integration/test_lost_commit.py has the mid-commit cases)."""
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a")])
    kept = _terminate_kept(store)
    store.write(WriteBatch(task_instance_updates=[
        ti(run.run_id, "a", state=TaskState.RUNNING, attempt=1)]))
    assert store._writer._conn is not kept
    got = store.get_task_instance(run.run_id, "a")
    assert got is not None and got.state is TaskState.RUNNING


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_lost_connection_fails_an_unsafe_write_and_the_next_takes_a_new_one(
        store: RunStore) -> None:
    from cadenza.core.records import MetricRecord

    run = make_run()
    store.create_run(run, [ti(run.run_id, "a")])
    kept = _terminate_kept(store)
    with pytest.raises(StoreError):  # metrics only: landed or not cannot be told
        store.write(WriteBatch(metrics=[MetricRecord(
            run_id=run.run_id, task_id="a", map_index=-1, attempt=1, name="m", value=1.0)]))
    store.write(WriteBatch(task_instance_updates=[
        ti(run.run_id, "a", state=TaskState.RUNNING, attempt=1)]))
    assert store._writer._conn is not kept


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_close_gives_the_kept_connection_back_and_a_later_write_takes_it_again(
        store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    kept = store._writer._conn
    pg = kept.driver_connection
    assert pg.autocommit
    pool = store._engine.pool
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    assert pg.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    store._writer.close()
    assert store._writer._conn is None
    assert not pg.autocommit and pg.prepare_threshold == 5
    assert pg.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    pg.rollback()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    # The pool's one connection is taken again by the next write, with the statements the
    # first Writer prepared on it still there: they count as prepared (no second Parse).
    again = make_run()
    store.create_run(again, [ti(again.run_id, "a")])
    assert store._writer._conn.driver_connection is pg
    assert store.get_run(again.run_id).run_id == again.run_id
