"""A PostgreSQL connection lost in the middle of a write's commit (store/lost_commit.py):
the write is neither lost nor applied twice, and the run goes on.

Found by the fault campaign (tests/chaos/): `pg_terminate_backend` of the driver's
connection while its commit waited on a row lock failed the whole run with a driver
traceback ("server closed the connection unexpectedly"). Both sides of the ambiguity are
provoked for real: the backend killed before COMMIT (nothing landed: written again), and the
connection cut after the server answered COMMIT (it landed: not written again)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from cadenza.core.records import WriteBatch
from cadenza.core.states import TaskState
from cadenza.store import RunStore, open_store
from tests.chaos.campaign import _libpq
from tests.fixtures.pgrelay import PgRelay
from tests.fixtures.waiting import wait_for
from tests.integration.test_store import attempt, make_run, ti

pytestmark = pytest.mark.postgres


def _batch(run_id: str, task_id: str) -> WriteBatch:
    return WriteBatch(
        task_instance_updates=[ti(run_id, task_id, state=TaskState.SUCCESS, attempt=1)],
        attempts=[attempt(run_id, task_id, 1, state=TaskState.SUCCESS)])


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_commit_whose_backend_is_terminated_is_written_again(db_url: str) -> None:
    app = "cadenza_lost_commit"
    store = open_store(f"{db_url}&application_name={app}")
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "b")])
    store.write(_batch(run.run_id, "a"))  # the kept connection exists
    killed: list[int] = []
    with psycopg.connect(_libpq(db_url)) as holder:
        # The driver's next commit waits on this lock; terminating its backend then lands
        # in the middle of the commit.
        holder.execute("SELECT 1 FROM task_instances WHERE run_id = %s AND task_id = 'b' "
                       "FOR UPDATE", (run.run_id,))

        def terminate_when_waiting() -> None:
            with psycopg.connect(_libpq(db_url), autocommit=True) as admin:
                pid = wait_for(lambda: admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND "
                    "wait_event_type = 'Lock'", (app,)).fetchone(), what="the commit to wait")
                admin.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
                killed.append(pid[0])
            holder.rollback()

        killer = threading.Thread(target=terminate_when_waiting)
        killer.start()
        store.write(_batch(run.run_id, "b"))  # raised StoreError before the fix
        killer.join(30)
    assert killed
    rows = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert rows == {"a": TaskState.SUCCESS, "b": TaskState.SUCCESS}
    assert [(a.task_id, a.attempt) for a in store.get_attempts(run.run_id)] == [("a", 1),
                                                                               ("b", 1)]
    store.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_commit_that_landed_before_the_connection_died_is_not_written_twice(
        pg_relay: tuple[RunStore, PgRelay]) -> None:
    store, relay = pg_relay
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "b")])
    store.write(_batch(run.run_id, "a"))
    relay.armed.set()
    store.write(_batch(run.run_id, "b"))  # its COMMIT's answer never arrives
    assert relay.cut.is_set()
    # Written once: sending it again would have broken the attempts' primary key.
    assert [(a.task_id, a.attempt) for a in store.get_attempts(run.run_id)] == [("a", 1),
                                                                               ("b", 1)]
    assert store.get_task_instance(run.run_id, "b").state is TaskState.SUCCESS


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_lost_commit_that_cannot_be_told_apart_still_raises(
        pg_relay: tuple[RunStore, PgRelay]) -> None:
    from cadenza.core.errors import StoreError
    from cadenza.core.records import MetricRecord

    store, relay = pg_relay
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a")])
    store.write(_batch(run.run_id, "a"))
    relay.armed.set()
    metric = MetricRecord(run_id=run.run_id, task_id="a", map_index=-1, attempt=1,
                          name="loss", value=0.5, kind="metric",
                          at=attempt(run.run_id, "a", 1).started_at)
    with pytest.raises(StoreError, match="connection|closed|lost"):
        store.write(WriteBatch(metrics=[metric]))  # no natural key: landed or not?
    assert relay.cut.is_set()
