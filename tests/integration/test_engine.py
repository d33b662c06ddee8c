"""The engine end to end on every executor and on SQLite and PostgreSQL (SPEC §1, §2, §5)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from cadenza import RunState, TaskState
from cadenza.store import open_store
from tests.pipelines import shapes

S = TaskState


def test_fan_out_fan_in_and_branch_runs_the_chosen_leg(cadenza_env, executor):
    result = shapes.fraud_training.run(n=50, threshold=0.85, executor=executor)

    assert result.state is RunState.SUCCESS
    assert result.outputs["train"] == [
        {"depth": 3, "auc": 0.83, "rows": 50},
        {"depth": 5, "auc": 0.85, "rows": 50},
        {"depth": 7, "auc": 0.87, "rows": 50},
    ]
    assert result.outputs["select_best"]["depth"] == 7
    assert result.task_states["deploy"] is S.SUCCESS
    assert result.task_states["alert"] is S.SKIPPED
    assert result.task_states["cleanup"] is S.SUCCESS
    assert result.outputs["deploy"] == "deployed depth=7"


def test_branch_takes_the_other_leg_when_the_gate_fails(cadenza_env, executor):
    result = shapes.fraud_training.run(n=10, threshold=0.99, executor=executor)

    assert result.state is RunState.SUCCESS
    assert result.task_states["deploy"] is S.SKIPPED
    assert result.task_states["alert"] is S.SUCCESS
    assert result.task_states["cleanup"] is S.SUCCESS


def test_run_and_every_task_instance_are_recorded_in_the_store(cadenza_env, executor):
    result = shapes.fraud_training.run(n=10, executor=executor)
    store = open_store(cadenza_env.database_url)

    run = store.get_run(result.run_id)
    assert run.state is RunState.SUCCESS
    assert run.pipeline == "fraud_training"
    assert run.params == {"n": 10, "threshold": 0.85}
    assert run.ended_at is not None and run.ended_at >= run.started_at
    rows = {(t.task_id, t.map_index): t for t in store.get_task_instances(result.run_id)}
    assert rows[("train", -1)].map_count == 3
    assert [rows[("train", i)].state for i in range(3)] == [S.SUCCESS] * 3
    assert rows[("alert", -1)].state is S.SKIPPED
    attempts = store.get_attempts(result.run_id, "select_best", -1)
    assert [a.attempt for a in attempts] == [1]
    assert attempts[0].state is S.SUCCESS and attempts[0].worker


def test_expand_chains_element_wise_over_a_runtime_list(cadenza_env, executor):
    result = shapes.chained_maps.run(n=5, executor=executor)

    assert result.state is RunState.SUCCESS
    assert result.outputs["square"] == [0, 1, 4, 9, 16]
    assert result.outputs["add_one"] == [1, 2, 5, 10, 17]
    assert result.outputs["total"] == 35


def test_expand_over_an_empty_list_gives_the_fan_in_an_empty_list(cadenza_env, executor):
    result = shapes.empty_map.run(n=0, executor=executor)

    assert result.state is RunState.SUCCESS
    assert result.outputs["square"] == []
    assert result.outputs["total"] == 0


def test_expand_over_several_lists_is_a_cartesian_product(cadenza_env):
    result = shapes.cartesian.run(executor="inline")

    assert result.outputs["product"] == ["x1", "y1", "x2", "y2", "x3", "y3"]


def test_a_failed_mapped_instance_fails_the_fan_in_but_not_its_siblings(cadenza_env, executor):
    result = shapes.map_with_failure.run(n=4, bad=2, executor=executor)

    assert result.state is RunState.FAILED
    states = {(t.task_id, t.map_index): t.state for t in result.instances}
    assert [states[("fail_on", i)] for i in range(4)] == [S.SUCCESS, S.SUCCESS, S.FAILED, S.SUCCESS]
    assert states[("fail_on", -1)] is S.FAILED
    assert states[("total", -1)] is S.UPSTREAM_FAILED
    assert "bad element 2" in result.failed["fail_on[2]"].message


def test_a_failing_task_does_not_raise_and_trigger_rules_react(cadenza_env, executor):
    result = shapes.failing.run(executor=executor)

    assert result.state is RunState.FAILED
    assert result.task_states["boom"] is S.FAILED
    assert result.task_states["after"] is S.UPSTREAM_FAILED
    assert result.task_states["on_any_failure"] is S.SUCCESS
    assert result.task_states["always_cleanup"] is S.SUCCESS
    assert result.task_states["none_failed_task"] is S.UPSTREAM_FAILED
    err = result.failed["boom"]
    assert err.type == "builtins.RuntimeError"
    assert "the data source is down" in err.message
    assert "boom" in err.traceback  # the user's frame is kept


@pytest.mark.parametrize("executor", ["threads", "processes"], indirect=True)
def test_sys_exit_in_a_task_fails_its_attempt_and_the_run_goes_on(sqlite_env, executor):
    # On a worker (thread or process) sys.exit() ends the call, not the driver: the attempt
    # fails with it, downstream learns of it, and the run ends instead of waiting forever
    # for an outcome (threads lost its pool thread and the outcome with it).
    result = shapes.exiting.run(executor=executor)

    assert result.state is RunState.FAILED
    assert result.task_states["exits"] is S.FAILED
    assert result.task_states["after"] is S.UPSTREAM_FAILED
    err = result.failed["exits"]
    assert err.type == "builtins.SystemExit"
    assert "ended" in err.message and "SystemExit" in err.message


def test_branch_may_choose_several_legs(cadenza_env, executor):
    result = shapes.multi_branch.run(which=["left", "right"], executor=executor)

    assert result.task_states["left"] is S.SUCCESS
    assert result.task_states["middle"] is S.SKIPPED
    assert result.task_states["right"] is S.SUCCESS
    assert result.task_states["join"] is S.SUCCESS


def test_branch_returning_an_unknown_task_fails_with_the_choices(cadenza_env):
    result = shapes.multi_branch.run(which=["lefty"], executor="inline")

    assert result.task_states["choose_many"] is S.FAILED
    msg = result.failed["choose_many"].message
    assert "lefty" in msg and "left, middle, right" in msg


def test_context_has_every_field_and_metrics_and_logs_are_kept(cadenza_env, executor):
    result = shapes.context_pipeline.run(label="abc", executor=executor)

    assert result.state is RunState.SUCCESS
    ctx = result.outputs["context_fields"]
    assert ctx["run_id"] == result.run_id
    assert ctx["pipeline"] == "context_pipeline"
    assert ctx["task_id"] == "context_fields"
    assert ctx["map_index"] == -1
    assert ctx["attempt"] == 1
    assert ctx["params"] == {"label": "abc"}
    assert result.outputs["mapped_context"] == [["mapped_context", 0, 10], ["mapped_context", 1, 20]]

    store = open_store(cadenza_env.database_url)
    metrics = {(m.name, m.kind): m.value for m in store.get_metrics(result.run_id)}
    assert metrics[("auc", "metric")] == 0.91
    assert metrics[("depth", "param")] == "5"
    (attempt,) = store.get_attempts(result.run_id, "context_fields", -1)
    log_text = Path(attempt.log_path).read_text()
    assert "hello from print" in log_text
    assert "hello from the context logger" in log_text


def test_attempt_log_is_readable_while_the_task_runs(sqlite_env, executor, tmp_path):
    import threading

    from cadenza.core.logfiles import attempt_log_path
    from tests.fixtures.waiting import wait_for
    from tests.pipelines import resumable

    holder = {}

    def on_start(driver):
        holder["run_id"] = driver.run_id

    def run():
        from cadenza.engine.api import run_pipeline

        holder["result"] = run_pipeline(resumable.chatty_pipeline, {"folder": str(tmp_path)},
                                        executor=executor, on_start=on_start)

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_for(lambda: "run_id" in holder)
        path = attempt_log_path(str(sqlite_env.logs_dir), holder["run_id"], "chatty", -1, 1)
        wait_for(lambda: os.path.exists(path) and "step 1 of 2" in Path(path).read_text())
        assert "step 2 of 2" not in Path(path).read_text()
    finally:
        (tmp_path / "release").write_text("go")
        t.join(60)
    assert holder["result"].state is RunState.SUCCESS
    assert "step 2 of 2" in Path(path).read_text()


def test_a_started_task_is_recorded_running_while_it_runs(cadenza_env, executor, tmp_path):
    """The store (and so the CLI and a crash-resume) sees a long task as running while it
    runs, not only once it ends: the 'running' row is committed within the group-commit
    window even when nothing else happens in the run."""
    import threading

    from cadenza.engine.api import run_pipeline
    from tests.fixtures.waiting import wait_for
    from tests.pipelines import resumable

    holder = {}

    def run():
        holder["result"] = run_pipeline(resumable.chatty_pipeline, {"folder": str(tmp_path)},
                                        executor=executor,
                                        on_start=lambda d: holder.setdefault("run_id", d.run_id))

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_for(lambda: "run_id" in holder)
        store = open_store(cadenza_env.database_url)

        def recorded_running() -> bool:
            ti = store.get_task_instance(holder["run_id"], "chatty")
            return ti is not None and ti.state is S.RUNNING and ti.attempt == 1

        wait_for(recorded_running, timeout_s=10)
        assert "result" not in holder  # seen while the task was still running
    finally:
        (tmp_path / "release").write_text("go")
        t.join(60)
    assert holder["result"].state is RunState.SUCCESS


def test_a_cached_branch_repeats_its_recorded_choice(sqlite_env):
    from cadenza import pipeline, task

    @task.branch(cache=True)
    def cached_gate(x: int) -> str:
        return "high" if x > 5 else "low"

    @task
    def high() -> str:
        return "high"

    @task
    def low() -> str:
        return "low"

    @pipeline
    def gated(x: int = 9):
        cached_gate(x) >> [high(), low()]

    gated.run(executor="inline")
    second = gated.run(executor="inline")

    assert second.task_states["cached_gate"] is S.CACHED
    assert second.task_states["high"] is S.SUCCESS
    assert second.task_states["low"] is S.SKIPPED


def test_commits_wait_for_the_disk_only_where_a_crash_of_the_database_could_cost_work(
        cadenza_env, executor):
    """Group commit (RunDriver._should_flush): a dependent starts only after its input's
    commit; commits of quick outcomes do not wait for the database's disk flush
    (WriteBatch.synchronous=False), those of an attempt that ran GROUP_COMMIT_MAX_TASK_S or
    longer, and the run's last, do."""
    import time

    from cadenza import pipeline, task
    from cadenza.engine.api import run_pipeline
    from cadenza.engine.driver import GROUP_COMMIT_MAX_TASK_S

    @task
    def quick(x: int) -> int:
        return x + 1

    @task
    def slow(x: int) -> int:
        time.sleep(GROUP_COMMIT_MAX_TASK_S * 2)  # the work whose loss a commit must prevent
        return x + 1

    @pipeline(name="commit_kinds")
    def commit_kinds():
        x = quick(0)
        for i in range(4):
            x = quick.with_options(name=f"quick_{i}")(x)
        quick.with_options(name="after_slow")(slow(x))

    batches: list[tuple[bool, list[Any], list[Any], list[Any]]] = []

    class Recording:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        def write(self, batch: Any, **kw: Any) -> None:
            batches.append((batch.synchronous,
                            [*batch.new_task_instances, *batch.task_instance_updates],
                            list(batch.attempts), list(batch.run_updates)))
            self._store.write(batch, **kw)

    def on_start(driver: Any) -> None:
        driver.store = Recording(driver.store)

    result = run_pipeline(commit_kinds, {}, executor=executor, on_start=on_start)

    assert result.state is RunState.SUCCESS
    succeeded: dict[str, int] = {}  # task -> the batch that wrote its success
    started: dict[str, int] = {}  # task -> the first batch that wrote it running or later
    for i, (_sync, rows, _attempts, _runs) in enumerate(batches):
        for row in rows:
            if row.state is S.SUCCESS:
                succeeded.setdefault(row.task_id, i)
            if row.state in (S.RUNNING, S.SUCCESS):
                started.setdefault(row.task_id, i)
    order = ["quick", "quick_0", "quick_1", "quick_2", "quick_3", "slow", "after_slow"]
    for up, down in itertools.pairwise(order):
        assert succeeded[up] <= started[down], (up, down)
    for sync, _rows, attempts, _runs in batches:
        if any((a.ended_at - a.started_at).total_seconds() >= GROUP_COMMIT_MAX_TASK_S
               for a in attempts):
            assert sync
    assert any(a.task_id == "slow" for _s, _r, attempts, _u in batches for a in attempts)
    final = [sync for sync, _r, _a, runs in batches if any(r.ended_at for r in runs)]
    assert final == [True]
    assert not all(sync for sync, *_ in batches)  # quick steps did not wait for the disk
