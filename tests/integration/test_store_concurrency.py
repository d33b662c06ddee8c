"""Several processes writing one store at once never fail ("database is locked" on SQLite
is the failure this guards against) and lose nothing. Also: processes opening a brand-new
database together all succeed and create the schema once."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import secrets
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cadenza.core.records import (
    AttemptRecord,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
    WriteBatch,
)
from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store, sqlite_conn
from cadenza.store.tables import SCHEMA_REVISION
from tests.fixtures.waiting import wait_for

PROCESSES = 4
BATCHES = 300
RUNS_PER_PROCESS = 3
TASKS = 5


def _writer(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Create runs, then write BATCHES batches the way a driver does (TI update + attempt +
    metric per step), with reads interleaved as the CLI and UI would do."""
    try:
        store = open_store(url)
        t0 = datetime.now(UTC)
        runs = [
            RunRecord(
                run_id=f"w{worker}-{i}-{secrets.token_hex(3)}",
                pipeline=f"p{worker}",
                state=RunState.RUNNING,
                created_at=t0,
            )
            for i in range(RUNS_PER_PROCESS)
        ]
        barrier.wait(timeout=120)
        for run in runs:
            store.create_run(
                run, [TaskInstanceRecord(run_id=run.run_id, task_id=f"t{k}") for k in range(TASKS)]
            )
        attempts: dict[tuple[str, str], int] = {}
        for b in range(BATCHES):
            run = runs[b % RUNS_PER_PROCESS]
            task = f"t{(b // RUNS_PER_PROCESS) % TASKS}"
            n = attempts[run.run_id, task] = attempts.get((run.run_id, task), 0) + 1
            now = t0 + timedelta(milliseconds=b)
            store.write(
                WriteBatch(
                    task_instance_updates=[
                        TaskInstanceRecord(
                            run_id=run.run_id,
                            task_id=task,
                            state=TaskState.SUCCESS,
                            attempt=n,
                            ended_at=now,
                            output=ValueRef(kind="json", value=b),
                        )
                    ],
                    attempts=[
                        AttemptRecord(
                            run_id=run.run_id,
                            task_id=task,
                            map_index=-1,
                            attempt=n,
                            state=TaskState.SUCCESS,
                            started_at=now,
                            ended_at=now,
                        )
                    ],
                    metrics=[
                        MetricRecord(
                            run_id=run.run_id,
                            task_id=task,
                            map_index=-1,
                            attempt=n,
                            name="step",
                            value=float(b),
                        )
                    ],
                )
            )
            if b % 25 == 0:
                store.get_task_instances(run.run_id)
                store.list_runs(limit=5)
        for run in runs:
            store.write(
                WriteBatch(
                    run_updates=[
                        dataclasses.replace(run, state=RunState.SUCCESS, ended_at=datetime.now(UTC))
                    ]
                )
            )
        store.dispose()
        results.put((worker, [r.run_id for r in runs], None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((worker, [], f"{type(exc).__name__}: {exc}"))


def test_several_processes_write_one_store_at_once(db_url: str) -> None:
    open_store(db_url).dispose()  # the schema exists before the race, as in real use
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(db_url, w, barrier, results)) for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [err for _, _, err in got if err] == []
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    store = open_store(db_url)
    try:
        run_ids = [rid for _, ids, _ in got for rid in ids]
        assert len(run_ids) == PROCESSES * RUNS_PER_PROCESS
        assert len(store.list_runs(limit=1000)) == len(run_ids)
        total_attempts = total_metrics = 0
        for rid in run_ids:
            assert store.get_run(rid).state is RunState.SUCCESS
            tis = store.get_task_instances(rid)
            assert len(tis) == TASKS
            assert all(t.state is TaskState.SUCCESS for t in tis)
            attempts = store.get_attempts(rid)
            total_attempts += len(attempts)
            total_metrics += len(store.get_metrics(rid))
            # each task instance's attempt counter matches the attempts written for it
            for t in tis:
                assert t.attempt == sum(1 for a in attempts if a.task_id == t.task_id)
        assert total_attempts == PROCESSES * BATCHES
        assert total_metrics == PROCESSES * BATCHES
    finally:
        store.dispose()


def _opener(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=120)
        store = open_store(url)
        store.ensure_pool("default", 8)
        store.dispose()
        results.put(None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("openers", [4])
def test_processes_opening_a_new_database_together_all_succeed(db_url: str, openers: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(openers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_opener, args=(db_url, barrier, results)) for _ in range(openers)]
    for p in procs:
        p.start()
    errors = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert errors == [None] * openers
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            pools = conn.execute(text("SELECT name, slots FROM pools")).all()
    finally:
        engine.dispose()
    assert [v for (v,) in versions] == [SCHEMA_REVISION]
    assert [tuple(p) for p in pools] == [("default", 8)]


def test_switching_a_new_file_to_wal_waits_for_another_connections_write_lock(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a file not yet in WAL mode, SQLite fails the switch at once, without its busy
    handler, while another connection holds the write lock: one of four processes opening a
    new store together failed so in CI ("database is locked" in 60 ms). A connection opened
    then waits for the lock to go, as for any other write."""
    path = str(tmp_path / "new.db")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (i INTEGER)")
    other.execute("BEGIN IMMEDIATE")  # the write lock of a file in rollback-journal mode
    other.execute("INSERT INTO t VALUES (1)")
    opened: list[Any] = []

    def open_it() -> None:
        try:
            opened.append(sqlite_conn.connect(path))
        except BaseException as exc:  # noqa: BLE001 - the test fails on it below
            opened.append(exc)

    with caplog.at_level(logging.DEBUG, logger="cadenza.store.sqlite_conn"):
        thread = threading.Thread(target=open_it)
        thread.start()
        wait_for(lambda: opened or "switching it to WAL again" in caplog.text,
                 what="the new connection to try the switch")
        other.execute("COMMIT")
        thread.join(timeout=60)
    other.close()
    (conn,) = opened
    assert isinstance(conn, sqlite3.Connection), conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT i FROM t").fetchall() == [(1,)]
    conn.close()
