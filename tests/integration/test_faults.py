"""Every way a task can fail ends in a recorded state with an error that says what to do."""

from __future__ import annotations

import itertools

import pytest

from cadenza import ParameterError, RunState, TaskState
from cadenza.store import open_store
from tests.conftest import count
from tests.pipelines import faults, shapes

S = TaskState


def test_retries_until_success_and_records_every_attempt(cadenza_env, executor, counter_dir):
    result = faults.flaky_pipeline.run(folder=str(counter_dir), fail_times=2, executor=executor)

    assert result.state is RunState.SUCCESS
    assert result.outputs["flaky"] == "ok after 3"
    assert count(counter_dir, "flaky") == 3
    attempts = open_store(cadenza_env.database_url).get_attempts(result.run_id, "flaky", -1)
    assert [(a.attempt, a.state) for a in attempts] == [
        (1, S.UP_FOR_RETRY), (2, S.UP_FOR_RETRY), (3, S.SUCCESS)]
    assert "attempt 1 failed" in attempts[0].error.message


def test_retries_exhausted_fails_the_task(cadenza_env, counter_dir):
    result = faults.flaky_pipeline.run(folder=str(counter_dir), fail_times=10, executor="inline")

    assert result.state is RunState.FAILED
    assert count(counter_dir, "flaky") == 4  # 1 + retries=3


def test_retry_on_other_exception_types_does_not_retry(cadenza_env, counter_dir):
    result = faults.retry_on_pipeline.run(folder=str(counter_dir), executor="inline")

    assert result.task_states["wrong_error"] is S.FAILED
    assert count(counter_dir, "wrong_error") == 1


def test_timeout_stops_the_attempt(cadenza_env, executor, counter_dir):
    result = faults.timeout_pipeline.run(folder=str(counter_dir), executor=executor)

    assert result.task_states["hangs"] is S.FAILED
    err = result.failed["hangs"]
    assert err.kind == "timeout"
    assert "timed out after 0.5 s" in err.message
    # The attempt really stopped: it never reached the line after its sleep.
    assert not (counter_dir / "hangs-finished").exists()


def test_worker_killed_mid_task_is_retried_and_the_run_succeeds(cadenza_env, counter_dir):
    result = faults.kill_pipeline.run(folder=str(counter_dir), executor="processes")

    assert result.state is RunState.SUCCESS
    assert result.outputs["killed_once"] == "survived on attempt 2"
    attempts = open_store(cadenza_env.database_url).get_attempts(result.run_id, "killed_once", -1)
    assert attempts[0].error.kind == "worker_lost"
    # The next run gets a full pool again.
    again = shapes.fraud_training.run(n=5, executor="processes")
    assert again.state is RunState.SUCCESS


def test_a_worker_lost_once_costs_no_retry(cadenza_env, counter_dir):
    # retries=0, yet the run succeeds: the first lost worker is not the task's fault
    # (engine.rules.FREE_LOST_WORKER_RETRIES).
    result = faults.oom_killed_once.run(folder=str(counter_dir), executor="processes")

    assert result.state is RunState.SUCCESS
    assert result.outputs["killed_once_no_retries"] == "survived on attempt 2"
    attempts = open_store(cadenza_env.database_url).get_attempts(
        result.run_id, "killed_once_no_retries", -1)
    assert [(a.attempt, a.state, a.error and a.error.kind) for a in attempts] == [
        (1, S.UP_FOR_RETRY, "worker_lost"), (2, S.SUCCESS, None)]


def test_worker_killed_every_time_fails_with_a_clear_reason(cadenza_env, counter_dir):
    result = faults.kill_no_retry.run(folder=str(counter_dir), executor="processes")

    err = result.failed["killed_always"]
    assert err.kind == "worker_lost"
    assert "killed_always" in err.message
    assert "SIGKILL" in err.message
    assert count(counter_dir, "killed_always") == 2  # the free attempt, then no retries left


def test_unpicklable_output_fails_naming_the_task_type_and_fix(cadenza_env, executor):
    result = faults.unpicklable_output.run(executor=executor)

    err = result.failed["returns_lock"]
    assert err.kind == "serialization"
    assert "returns_lock" in err.message
    assert "lock" in err.message.lower()
    assert "register_serializer" in err.message


def test_wrong_parameter_type_is_refused_before_the_run(cadenza_env):
    with pytest.raises(ParameterError) as info:
        shapes.fraud_training.run(n="lots", executor="inline")
    text = str(info.value)
    assert "fraud_training" in text and "'n'" in text and "int" in text


def test_unknown_parameter_suggests_the_right_name(cadenza_env):
    with pytest.raises(ParameterError, match="Did you mean 'threshold'"):
        shapes.fraud_training.run(treshold=0.5, executor="inline")


def test_pool_slots_limit_concurrency(cadenza_env, counter_dir):
    store = open_store(cadenza_env.database_url)
    store.set_pool("one_slot", 1)
    result = faults.pooled_pipeline.run(folder=str(counter_dir), executor="threads")

    spans = sorted(result.outputs["pooled"])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # never two at once


def test_missing_pool_fails_the_task_with_the_fix(cadenza_env, counter_dir):
    result = faults.pooled_pipeline.run(folder=str(counter_dir), executor="inline")

    assert "cadenza pools set one_slot" in result.failed["pooled[0]"].message


def test_gpu_tasks_get_their_own_devices(cadenza_env, monkeypatch):
    monkeypatch.setenv("CADENZA_GPUS", "0,1")
    from cadenza.engine import ready

    monkeypatch.setattr(ready, "_shared", None)
    result = faults.gpu_pipeline.run(executor="processes")

    rows = result.outputs["gpu_task"]
    assert {r[0] for r in rows} <= {"0", "1"}
    # At any moment, the tasks running hold distinct devices.
    for i, (dev, start, end) in enumerate(rows):
        for dev2, start2, end2 in rows[i + 1:]:
            if start < end2 and start2 < end:
                assert dev != dev2
    monkeypatch.setattr(ready, "_shared", None)


def test_task_that_can_never_fit_fails_at_once(cadenza_env):
    result = faults.too_big_pipeline.run(executor="inline")

    msg = result.failed["too_big"].message
    assert "512" in msg and "too_big" in msg


def test_callbacks_fire_after_each_outcome(cadenza_env, tmp_path):
    folder = tmp_path / "cb"
    folder.mkdir()
    result = faults.make_callback_pipeline(str(folder)).run(executor="inline")

    assert result.state is RunState.FAILED
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["failure-always_fails-2", "retry-always_fails-1", "success-fine-1"]


def test_closures_run_on_processes(cadenza_env):
    result = faults.make_closure_pipeline(7).run(x=3, executor="processes")

    assert result.outputs["scale"] == 21


class FailingWrites:
    """Wraps a driver's store: `write(batch)` raises StoreError while `fails(batch)` says so."""

    def __init__(self, store, fails):
        self._store, self._fails, self.failures = store, fails, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, batch, **kw):
        from cadenza.core.errors import StoreError

        if self._fails(batch):
            self.failures += 1
            raise StoreError("database is locked")
        return self._store.write(batch, **kw)


def test_a_store_error_while_an_inline_task_runs_does_not_lose_the_task(cadenza_env):
    """The commit of a long inline task's 'running' row happens on the watch thread; if that
    write fails once (a lock timeout, a dropped connection), the task's success must still
    be recorded by the driver's next commit, not turned into a cancellation."""
    import threading

    from cadenza import pipeline, task
    from cadenza.engine.api import run_pipeline
    from cadenza.engine.resume import resume_run
    from tests.fixtures.waiting import wait_for

    started = threading.Event()
    ran: list[int] = []

    @task
    def train() -> int:
        ran.append(1)
        started.set()
        # Still running when the watch thread commits its 'running' row (and that fails).
        wait_for(failed_once, what="the watch's commit to fail")
        return 42

    @pipeline(name="flaky_store_inline")
    def flaky_store_inline():
        train()

    wrappers = []

    def on_start(driver):
        store = FailingWrites(driver.store, lambda batch: started.is_set() and not failed_once())
        driver.store = store
        wrappers.append(store)

    def failed_once() -> bool:
        return bool(wrappers) and wrappers[0].failures > 0

    result = run_pipeline(flaky_store_inline, {}, executor="inline", on_start=on_start)

    assert wrappers[0].failures == 1  # the failure did happen, on the watch's commit
    assert result.state is RunState.SUCCESS
    row = open_store(cadenza_env.database_url).get_task_instance(result.run_id, "train")
    assert row.state is S.SUCCESS and row.output.value == 42
    assert resume_run(result.run_id, executor="inline").state is RunState.SUCCESS
    assert ran == [1]


CTRL_C_DURING_A_SLOW_COMMIT = '''
import os, signal, sqlite3, sys, threading
from cadenza import Asset, pipeline, task
from cadenza.core.settings import get_settings
from cadenza.engine.api import run_pipeline
from cadenza.executors.base import Outcomes
from cadenza.store import open_store

DB = get_settings().database_url
overlap = {"now": 0, "max": 0}
guard = threading.Lock()
lock_held = threading.Event()      # another writer holds SQLite's write lock
watch_writing = threading.Event()  # the watch thread's commit has begun (it waits on that lock)
task_returned = threading.Event()  # the task returned: the driver holds its outcome
sigint_seen = threading.Event()
holders = []

def on_sigint(signum, frame):
    sigint_seen.set()
    signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as usual

signal.signal(signal.SIGINT, on_sigint)

def hold_the_write_lock():
    con = sqlite3.connect(DB.split("sqlite:///", 1)[1], isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # another writer: the watch's commit must wait
    lock_held.set()
    sigint_seen.wait(30)  # released only once Ctrl-C has landed
    con.execute("COMMIT")

def ctrl_c_once_the_driver_waits_for_the_watch():
    if watch_writing.wait(30) and task_returned.wait(30):
        # To the main thread, where Python runs signal handlers (a terminal's Ctrl-C may land
        # in any thread; one blocked in C, as the watch's commit is, would hold the handler
        # back until the holder's wait for it timed out).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

class SaysWhenTheTaskReturned(Outcomes):
    def put(self, item):
        super().put(item)
        if item is not None:
            task_returned.set()  # the outcome is queued: the call is over

@task(outlets=[Asset("ctrl_c/out")])
def slow() -> int:
    holder = threading.Thread(target=hold_the_write_lock, daemon=True)
    holder.start()
    holders.append(holder)
    lock_held.wait(30)
    watch_writing.wait(30)  # still running when the watch commits its 'running' row
    return 1

@pipeline
def p():
    slow()

class CountsOverlaps:
    def __init__(self, store):
        self._store = store
    def __getattr__(self, name):
        return getattr(self._store, name)
    def write(self, batch, **kw):
        with guard:
            overlap["now"] += 1
            overlap["max"] = max(overlap["max"], overlap["now"])
        if threading.current_thread().name == "cadenza-commit-watch":
            # The watch fires GROUP_COMMIT_S into the call, maybe before the holder (a thread
            # the task starts) has the lock: its commit must meet the held lock, not pass first.
            lock_held.wait(30)
            watch_writing.set()
        try:
            return self._store.write(batch, **kw)
        finally:
            with guard:
                overlap["now"] -= 1

def on_start(driver):
    driver.store = CountsOverlaps(driver.store)
    driver.outcomes = SaysWhenTheTaskReturned()
    threading.Thread(target=ctrl_c_once_the_driver_waits_for_the_watch, daemon=True).start()

open_store(DB)
try:
    run_pipeline(p, {}, executor="inline", on_start=on_start)
except KeyboardInterrupt:
    pass
for holder in holders:
    holder.join(60)
run = open_store(DB).list_runs(limit=1)[0]
states = [str(t.state) for t in open_store(DB).get_task_instances(run.run_id)]
events = len(open_store(DB).list_asset_events("ctrl_c/out"))
print("RESULT", overlap["max"], sigint_seen.is_set(), run.state, states, events)
'''


def test_ctrl_c_while_the_watch_commits_waits_for_it(tmp_path):
    """Ctrl-C that lands while the watch thread is committing (the database is busy), after
    the task returned, must not let the driver write the run at the same time, and the task
    that returned is recorded as succeeded (its outcome was already queued), not cancelled,
    with what a success records (its asset event): the run ends cancelled with no task left
    'running'."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env["CADENZA_HOME"] = str(tmp_path / "home")
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_DURING_A_SLOW_COMMIT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), proc.stderr)
    assert line == "RESULT 1 True cancelled ['success'] 1", line  # its asset event too


def test_a_run_whose_last_write_fails_leaves_no_commit_thread_behind(cadenza_env):
    """The watch thread holds the driver (and its live outputs): it must end with the run
    even when the run's final write raises."""
    import threading

    from cadenza import pipeline, task
    from cadenza.core.errors import StoreError
    from cadenza.engine.api import run_pipeline
    from tests.fixtures.waiting import wait_for

    def watch_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "cadenza-commit-watch"]

    watching: list[bool] = []

    @task
    def slow() -> int:
        watching.append(bool(watch_threads()))  # the watch thread runs while the task does
        return 1

    @pipeline(name="last_write_fails")
    def last_write_fails():
        slow()

    def on_start(driver):
        driver.store = FailingWrites(
            driver.store, lambda batch: any(r.ended_at is not None for r in batch.run_updates))

    with pytest.raises(StoreError):
        run_pipeline(last_write_fails, {}, executor="inline", on_start=on_start)

    assert watching == [True]
    wait_for(lambda: not watch_threads(), timeout_s=10, what="the commit thread to end")
