"""The split-brain fence (issue 18): a driver's write batch (`WriteBatch.fence`) lands only
while the run's row still names that driver, checked in the batch's own transaction, on
SQLite and PostgreSQL and on every write path (SQLite's run path, the SQLAlchemy writer, and
PostgreSQL's fused one-statement write, its pipelined write and its checked-out connection).
A real second process taking a stopped `cadenza run` over: test_split_brain.py (chaos)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.errors import RunTakenOver
from cadenza.core.records import AttemptRecord, RunRecord, TaskInstanceRecord, WriteBatch
from cadenza.core.states import RunState, TaskState
from cadenza.store import RunStore

T0 = datetime(2026, 5, 1, tzinfo=UTC)
STALE, NEW = "host:1:stale", "host:2:new"


def _run(store: RunStore, driver: str | None = STALE) -> tuple[RunRecord, list[TaskInstanceRecord]]:
    run = RunRecord(run_id=f"run-{secrets.token_hex(5)}", pipeline="p", state=RunState.RUNNING,
                    created_at=T0, driver_id=driver, heartbeat_at=T0)
    tis = [TaskInstanceRecord(run_id=run.run_id, task_id=f"t{i}") for i in range(6)]
    store.create_run(run, tis)
    return run, tis


def _attempt(ti: TaskInstanceRecord, n: int = 1) -> AttemptRecord:
    return AttemptRecord(run_id=ti.run_id, task_id=ti.task_id, map_index=-1, attempt=n,
                         state=TaskState.SUCCESS, started_at=T0, ended_at=T0)


def _done(ti: TaskInstanceRecord) -> TaskInstanceRecord:
    return TaskInstanceRecord(run_id=ti.run_id, task_id=ti.task_id, state=TaskState.SUCCESS,
                              attempt=1, started_at=T0, ended_at=T0)


# Every shape a driver's commit takes: a chained step (one update + its attempt: PostgreSQL
# fuses it into one statement, with checks), inserts only (fused, no checks), more rows
# than a fused statement takes (pipelined), the run's own end (its update releases the run).
def _shapes(run: RunRecord, tis: list[TaskInstanceRecord]) -> dict[str, WriteBatch]:
    return {
        "chained": WriteBatch(task_instance_updates=[_done(tis[0])], attempts=[_attempt(tis[0])]),
        "inserts": WriteBatch(attempts=[_attempt(tis[1])]),
        "many": WriteBatch(task_instance_updates=[_done(t) for t in tis],
                           attempts=[_attempt(t) for t in tis]),
        "run_end": WriteBatch(run_updates=[RunRecord(
            run_id=run.run_id, pipeline="p", state=RunState.SUCCESS, created_at=T0,
            ended_at=T0, driver_id=None)], task_instance_updates=[_done(tis[2])]),
    }


SHAPES = ("chained", "inserts", "many", "run_end")


def _snapshot(store: RunStore, run_id: str) -> tuple[Any, ...]:
    run = store.get_run(run_id)
    tis = store.get_task_instances(run_id)
    attempts = [store.get_attempts(run_id, t.task_id, -1) for t in tis]
    return (run.state, run.driver_id, [(t.task_id, t.state) for t in tis], attempts)


def _take_over(store: RunStore, run_id: str) -> None:
    with use_clock(FakeClock(T0 + timedelta(seconds=60))):  # the stale lease long expired
        assert store.claim_run(run_id, NEW, lease_s=30)


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_holders_fenced_write_lands(store: RunStore, shape: str, synchronous: bool) -> None:
    run, tis = _run(store)
    batch = _shapes(run, tis)[shape]
    batch.fence, batch.synchronous = (run.run_id, STALE), synchronous
    store.write(batch)
    store.write(WriteBatch(attempts=[_attempt(tis[3], 2)]))  # an unfenced write lands too
    done = {t.task_id for t in store.get_task_instances(run.run_id)
            if t.state is TaskState.SUCCESS}
    assert done == {"chained": {"t0"}, "inserts": set(), "many": {f"t{i}" for i in range(6)},
                    "run_end": {"t2"}}[shape]


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_stale_drivers_write_lands_nothing_once_another_took_the_run(
        store: RunStore, shape: str, synchronous: bool) -> None:
    run, tis = _run(store)
    _take_over(store, run.run_id)
    before = _snapshot(store, run.run_id)
    batch = _shapes(run, tis)[shape]
    batch.fence, batch.synchronous = (run.run_id, STALE), synchronous
    with pytest.raises(RunTakenOver) as caught:
        store.write(batch)
    assert caught.value.message.startswith(
        f"run {run.run_id} was taken over by driver {NEW} while this one was stopped")
    assert caught.value.hint and f"cadenza runs show {run.run_id}" in caught.value.hint
    assert _snapshot(store, run.run_id) == before
    # The store is still usable: the new holder's write lands (same kept connection).
    store.write(WriteBatch(task_instance_updates=[_done(tis[5])], fence=(run.run_id, NEW)))
    assert store.get_task_instances(run.run_id)[5].state is TaskState.SUCCESS


def test_a_run_let_go_by_its_new_driver_still_refuses_the_stale_one(store: RunStore) -> None:
    run, tis = _run(store, driver=None)
    with pytest.raises(RunTakenOver, match="taken over by another driver"):
        store.write(WriteBatch(attempts=[_attempt(tis[0])], fence=(run.run_id, STALE)))
    assert store.get_attempts(run.run_id, "t0", -1) == []


def test_the_fence_works_on_every_postgresql_write_path(pg_url: str) -> None:
    """The kept connection's fused statement and pipeline are what `store` exercises; here
    also a connection checked out per write (a forked child, or psycopg without pipeline
    support) and the SQLAlchemy writer's generic path on SQLite."""
    from cadenza.store import dml
    from cadenza.store.runs import build_run_store

    store = build_run_store(pg_url)

    def write(n: int, synchronous: bool) -> None:
        steps = store._steps(WriteBatch(attempts=[_attempt(tis[0], n)]))
        dml._transaction(store._engine, store.url, None, steps, "writing",
                         synchronous=synchronous, fence=(run.run_id, STALE))

    try:
        run, tis = _run(store)
        write(1, True)
        write(2, False)
        _take_over(store, run.run_id)
        for n, synchronous in ((3, True), (4, False)):
            with pytest.raises(RunTakenOver, match=NEW):
                write(n, synchronous)
        assert [a.attempt for a in store.get_attempts(run.run_id, "t0", -1)] == [1, 2]
    finally:
        store.dispose()


@pytest.mark.parametrize("path", ["kept", "checked out"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_takeover_committing_while_a_stale_write_runs_is_waited_for_then_refuses_it(
        pg_url: str, shape: str, path: str) -> None:
    """PostgreSQL, READ COMMITTED: the takeover's UPDATE of the runs row is not yet committed
    when the stale driver's fenced write starts. The fence locks the runs row (FOR SHARE),
    so the write waits for the takeover, re-reads the row, and lands nothing. An unlocked
    read would see the old driver on its snapshot and land the stale write after the
    takeover committed."""
    import threading

    import psycopg

    from cadenza.store import dml, open_store
    from tests.fixtures.waiting import wait_for

    store = open_store(pg_url)
    run, tis = _run(store)
    before = _snapshot(store, run.run_id)
    libpq_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq_url) as taker, psycopg.connect(libpq_url,
                                                              autocommit=True) as watcher:
        xid = taker.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        taker.execute("UPDATE runs SET driver_id = %s WHERE run_id = %s", (NEW, run.run_id))
        batch = _shapes(run, tis)[shape]
        batch.fence = (run.run_id, STALE)
        raised: list[BaseException] = []
        done = threading.Event()

        def stale_write() -> None:
            try:
                if path == "kept":  # the Writer's connection: one round trip
                    store.write(batch)
                else:  # a connection checked out per write (a forked child): pipelined
                    dml._transaction(store._engine, store.url, None, store._steps(batch),
                                     "writing", synchronous=True, fence=batch.fence)
            except BaseException as exc:  # noqa: BLE001 - the assertion reads it
                raised.append(exc)
            finally:
                done.set()

        writer = threading.Thread(target=stale_write, daemon=True)
        writer.start()

        def waits_for_the_takeover() -> bool:
            return bool(watcher.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted "
                "AND transactionid::text = %s", (xid,)).fetchone())

        wait_for(lambda: done.is_set() or waits_for_the_takeover(), timeout_s=30,
                 what="the stale write to end or to wait for the takeover's row lock")
        taker.commit()
        writer.join(30)
    assert len(raised) == 1 and isinstance(raised[0], RunTakenOver), raised
    assert _snapshot(store, run.run_id)[2:] == before[2:]  # no task or attempt row changed


def test_the_fence_on_the_sqlalchemy_writer_for_sqlite(tmp_path: Any) -> None:
    from cadenza.store.runs import build_run_store

    store = build_run_store(f"sqlite:///{tmp_path}/s.db")
    try:
        run, tis = _run(store)
        store.write(WriteBatch(attempts=[_attempt(tis[0])], fence=(run.run_id, STALE)))
        _take_over(store, run.run_id)
        with pytest.raises(RunTakenOver, match=NEW):
            store.write(WriteBatch(attempts=[_attempt(tis[1])], fence=(run.run_id, STALE)))
        assert store.get_attempts(run.run_id, "t1", -1) == []
    finally:
        store.dispose()
