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


def test_worker_killed_without_retries_fails_with_a_clear_reason(cadenza_env):
    result = faults.kill_no_retry.run(executor="processes")

    err = result.failed["killed_always"]
    assert err.kind == "worker_lost"
    assert "killed_always" in err.message


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
