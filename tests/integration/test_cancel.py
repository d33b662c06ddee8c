"""Cancel through the store, on SQLite and PostgreSQL: a request recorded by another
connection stops a run this process drives (its heartbeat thread sees it), a run nobody
drives is cancelled by the engine itself, and both runs resume to success. Plus the rule
that shows a run as crashed (engine/lease.py `is_orphaned`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.core import clock
from cadenza.core.records import RunRecord
from cadenza.core.states import RunState, TaskState
from cadenza.engine.api import new_run
from cadenza.engine.cancel import cancel_run
from cadenza.engine.lease import is_orphaned
from cadenza.engine.resume import resume_run
from cadenza.store import open_store
from tests.conftest import RAY, count
from tests.fixtures.waiting import wait_for
from tests.pipelines import cancellable

S = TaskState


def _drive_in_thread(folder: Path, executor: str) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def drive() -> None:
        box["result"] = cancellable.held.run(folder=str(folder), executor=executor)

    t = threading.Thread(target=drive, daemon=True)
    t.start()
    return t, box


@pytest.mark.parametrize("executor", ["threads", "processes", RAY])
def test_a_request_from_another_connection_cancels_a_driven_run_and_resume_finishes_it(
        cadenza_env, counter_dir, executor):
    t, box = _drive_in_thread(counter_dir, executor)
    wait_for(lambda: (counter_dir / "started").exists(), timeout_s=60)
    run_id = open_store(cadenza_env.database_url).list_runs(limit=1)[0].run_id

    report = cancel_run(run_id, wait_s=60)  # through the store only, as another process would

    assert (report.outcome, report.by, report.state) == ("cancelled", "driver",
                                                         RunState.CANCELLED)
    t.join(60)
    result = box["result"]
    assert result.state is RunState.CANCELLED
    assert result.task_states == {"first": S.SUCCESS, "hold": S.CANCELLED,
                                  "last": S.CANCELLED}
    store = open_store(cadenza_env.database_url)
    hold = store.get_task_instance(run_id, "hold")
    assert hold is not None and hold.reason == "cancelled on request (cadenza runs cancel)"
    (counter_dir / "release").write_text("go")
    resumed = resume_run(run_id, executor=executor)
    assert resumed.state is RunState.SUCCESS and resumed.outputs["last"] == 20
    assert count(counter_dir, "first.count") == 1
    assert store.get_run(run_id).cancel_requested_at is None  # resume forgot the request


def test_a_queued_run_nobody_drives_is_cancelled_by_the_engine(cadenza_env, counter_dir):
    run, rows = new_run(cancellable.held, {"folder": str(counter_dir)}, trigger="manual")
    store = open_store(cadenza_env.database_url)
    store.create_run(run, rows)

    report = cancel_run(run.run_id[:12], wait_s=5)

    assert (report.outcome, report.by, report.was) == ("cancelled", "engine", RunState.QUEUED)
    got = store.get_run(run.run_id)
    assert got.state is RunState.CANCELLED and got.driver_id is None and got.ended_at
    assert {t.state for t in store.get_task_instances(run.run_id)} == {S.CANCELLED}
    again = cancel_run(run.run_id)
    assert again.outcome == "finished"

    (counter_dir / "release").write_text("go")
    resumed = resume_run(run.run_id, pipeline=cancellable.held, executor="inline")
    assert resumed.state is RunState.SUCCESS and resumed.outputs["last"] == 20


def test_a_run_whose_driver_died_is_cancelled_by_the_engine(cadenza_env, counter_dir):
    run, rows = new_run(cancellable.held, {"folder": str(counter_dir)}, trigger="manual")
    dead = _dead_driver_id()
    now = clock.now()
    run = replace(run, state=RunState.RUNNING, started_at=now, driver_id=dead,
                  heartbeat_at=now)
    rows = [replace(r, state=S.SUCCESS) if r.task_id == "first" else
            replace(r, state=S.RUNNING, attempt=1, started_at=now) if r.task_id == "hold"
            else r for r in rows]
    store = open_store(cadenza_env.database_url)
    store.create_run(run, rows)

    report = cancel_run(run.run_id, wait_s=5)

    assert (report.outcome, report.by, report.orphaned) == ("cancelled", "engine", True)
    states = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert states == {"first": S.SUCCESS, "hold": S.CANCELLED, "last": S.CANCELLED}
    attempts = store.get_attempts(run.run_id, "hold")
    assert [(a.attempt, a.state, a.error.kind if a.error else None) for a in attempts] == \
        [(1, S.CANCELLED, "cancelled")]


def _dead_driver_id() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return f"{socket.gethostname()}:{proc.stdout.strip()}:dead00"


def _run(**kw: Any) -> RunRecord:
    fields: dict[str, Any] = {"run_id": "r1", "pipeline": "p", "state": RunState.RUNNING,
                              "created_at": clock.now()}
    fields.update(kw)
    return RunRecord(**fields)


def test_is_orphaned_follows_the_lease_and_the_drivers_process():
    now = clock.now()
    elsewhere = "another-host:123:abc"
    # a driver on another host: only its lease tells
    assert not is_orphaned(_run(driver_id=elsewhere, heartbeat_at=now), now=now, lease=30)
    assert is_orphaned(_run(driver_id=elsewhere, heartbeat_at=now - timedelta(seconds=31)),
                       now=now, lease=30)
    # a driver on this host: a dead process is dead at once, whatever its lease says
    assert is_orphaned(_run(driver_id=_dead_driver_id(), heartbeat_at=now), now=now, lease=30)
    here = f"{socket.gethostname()}:{_live_pid()}:abc"
    assert not is_orphaned(_run(driver_id=here, heartbeat_at=now), now=now, lease=30)
    # nobody drives it: a queued run waits, a running one is orphaned; finished is finished
    assert not is_orphaned(_run(state=RunState.QUEUED), now=now, lease=30)
    assert is_orphaned(_run(state=RunState.RUNNING), now=now, lease=30)
    assert not is_orphaned(_run(state=RunState.CANCELLED, driver_id=elsewhere), now=now,
                           lease=30)


def _live_pid() -> int:
    import os

    return os.getppid()  # pytest's parent: alive for the whole test


def test_a_scheduler_taking_over_a_dead_drivers_run_honours_its_cancel_request(
        cadenza_env, counter_dir):
    from cadenza.triggers.loop import Scheduler

    run, rows = new_run(cancellable.held, {"folder": str(counter_dir)}, trigger="manual")
    long_ago = clock.now() - timedelta(seconds=120)
    run = replace(run, state=RunState.RUNNING, started_at=long_ago,
                  driver_id="another-host:1:gone00", heartbeat_at=long_ago)
    store = open_store(cadenza_env.database_url)
    store.create_run(run, rows)
    assert store.request_cancel(run.run_id)  # asked before its driver was lost

    sched = Scheduler([cancellable.held], executor="inline", lease_s=30)
    report = sched.run_once(timeout_s=60)

    assert report.taken_over == [run.run_id]
    got = store.get_run(run.run_id)
    assert got.state is RunState.CANCELLED and got.driver_id is None
    assert not (counter_dir / "first.count").exists()  # cancelled, not resumed
