"""The commit rule, seen from inside the tasks: a dependent never starts on an uncommitted
input; a start ('running') is nobody's input, so it rides on a later commit, which still
comes while a long task runs (RunDriver._should_flush)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from cadenza import get_context, pipeline, task
from cadenza.core.states import RunState, TaskState
from cadenza.engine import driver as driver_mod
from cadenza.engine.api import run_pipeline
from cadenza.store import open_store
from tests.fixtures.waiting import wait_for

S = TaskState


@task
def first() -> int:
    return 1


@task
def upstream_state(x: int, upstream: str, db: str) -> int:
    """Fails unless `upstream`'s success is committed when this task starts (read through a
    connection of its own: only committed rows are visible to it). `db`: the test's store
    (a persistent worker process keeps the settings it started with)."""
    ctx = get_context()
    row = open_store(db).get_task_instance(ctx.run_id, upstream)
    if row is None or row.state is not S.SUCCESS:
        raise AssertionError(f"{upstream} is {row and row.state} in the store when its "
                             "dependent starts")
    return x + 1


@pipeline(name="committed_inputs")
def committed_inputs(db: str):
    x = first()
    x = upstream_state.with_options(name="second")(x, "first", db)
    x = upstream_state.with_options(name="third")(x, "second", db)
    upstream_state.with_options(name="fourth")(x, "third", db)


def test_each_dependent_starts_after_its_input_is_committed(cadenza_env, executor):
    result = run_pipeline(committed_inputs, {"db": cadenza_env.database_url}, executor=executor)
    assert result.state is RunState.SUCCESS, [(k, e.message) for k, e in result.failed.items()]
    assert result.outputs["fourth"] == 4


def test_a_quick_chain_writes_each_task_once_not_its_start(cadenza_env, executor,
                                                           monkeypatch):
    """With no time limit on group commits, no start is committed on its own: each task's
    one row write carries its end (the run still commits each input before its dependent)."""
    monkeypatch.setattr(driver_mod, "GROUP_COMMIT_S", 3600.0)
    monkeypatch.setattr(driver_mod, "GROUP_COMMIT_MAX_TASK_S", 3600.0)
    written: list[tuple[str, TaskState]] = []

    class Recording:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        def write(self, batch: Any, **kw: Any) -> None:
            written.extend((r.task_id, r.state) for r in batch.task_instance_updates)
            self._store.write(batch, **kw)

    def on_start(driver: Any) -> None:
        driver.store = Recording(driver.store)

    result = run_pipeline(committed_inputs, {"db": cadenza_env.database_url}, executor=executor, on_start=on_start)
    assert result.state is RunState.SUCCESS, [(k, e.message) for k, e in result.failed.items()]
    assert [state for _, state in written] == [S.SUCCESS] * 4, written
    assert [task for task, _ in written] == ["first", "second", "third", "fourth"]


@task
def gated(x: int, gate: str) -> int:
    """Runs until the file `gate` exists (the test creates it once it has seen the start)."""
    while not Path(gate).exists():
        time.sleep(0.01)
    return x + 1


@pipeline(name="long_second")
def long_second(gate: str):
    gated(first(), gate)


def test_a_long_task_is_recorded_running_while_it_runs(cadenza_env, executor, tmp_path):
    """`gated` starts right after the commit of its input, which leaves its start out; the
    start is committed by a later group commit, while it runs."""
    gate = tmp_path / "gate"
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["result"] = run_pipeline(long_second, {"gate": str(gate)}, executor=executor)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    store = open_store()
    try:
        def running() -> bool:
            runs = store.list_runs(pipeline="long_second")
            if not runs:
                return False
            row = store.get_task_instance(runs[0].run_id, "gated")
            return row is not None and row.state is S.RUNNING and row.attempt == 1

        wait_for(running, what="gated's start to be committed while it runs")
    finally:
        gate.touch()
        thread.join(timeout=120)
    assert "error" not in box, box.get("error")
    assert box["result"].state is RunState.SUCCESS
    assert box["result"].outputs["gated"] == 2



@task(retries=1)
def fails_once(marker: str) -> int:
    """Fails on its first attempt, succeeds on its second (a file remembers, across
    processes)."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise RuntimeError("first attempt fails")
    return 1


@task
def plus_one(x: int) -> int:
    return x + 1


@pipeline(name="retry_beside_chain")
def retry_beside_chain(marker: str):
    fails_once(marker)
    plus_one(first())


def test_every_commit_keeps_a_rows_attempt_at_least_its_attempts_rows(cadenza_env, executor,
                                                                      monkeypatch, tmp_path):
    """A retry that starts in the step whose commit carries its failed attempt is written in
    that commit (not left out with the other starts): after every commit, each stored task
    instance's attempt is at least that of its stored attempts, as resume needs."""
    monkeypatch.setattr(driver_mod, "GROUP_COMMIT_S", 3600.0)
    monkeypatch.setattr(driver_mod, "GROUP_COMMIT_MAX_TASK_S", 3600.0)
    lagging: list[str] = []

    class Checking:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        def write(self, batch: Any, **kw: Any) -> None:
            self._store.write(batch, **kw)
            records = [*batch.new_runs, *batch.run_updates, *batch.new_task_instances,
                       *batch.task_instance_updates, *batch.attempts]
            if not records:
                return
            rid = records[0].run_id
            tis = {(t.task_id, t.map_index): t.attempt
                   for t in self._store.get_task_instances(rid)}
            for a in self._store.get_attempts(rid):
                if tis[(a.task_id, a.map_index)] < a.attempt:
                    lagging.append(f"{a.task_id}: row at attempt "
                                   f"{tis[(a.task_id, a.map_index)]}, attempt {a.attempt} stored")

    def on_start(driver: Any) -> None:
        driver.store = Checking(driver.store)

    result = run_pipeline(retry_beside_chain, {"marker": str(tmp_path / "marker")},
                          executor=executor, on_start=on_start)
    assert result.state is RunState.SUCCESS, [(k, e.message) for k, e in result.failed.items()]
    assert lagging == []
    attempts = [a for a in open_store().get_attempts(result.run_id) if a.task_id == "fails_once"]
    assert [(a.attempt, a.state) for a in attempts] == [(1, S.UP_FOR_RETRY), (2, S.SUCCESS)]
