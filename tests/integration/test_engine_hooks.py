"""The engine's entry points for runs created by someone else (scheduler, backfill, events):
`new_run` builds a queued run, `drive_run` drives one a driver has claimed, `fail_run`
ends one that cannot start; what triggered a run reaches its tasks' context."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadenza import get_context, pipeline, task
from cadenza.core.errors import CadenzaError
from cadenza.core.ids import new_driver_id
from cadenza.core.states import RunState, TaskState
from cadenza.engine.api import drive_run, fail_run, new_run
from cadenza.store import open_store

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@task
def what_started_me() -> dict:
    ctx = get_context()
    return {"trigger": ctx.extra.get("trigger"), "n": ctx.params["n"],
            "logical_date": ctx.logical_date.isoformat() if ctx.logical_date else None}


@task
def after(info: dict) -> int:
    return info["n"]


@pipeline(name="hooked")
def hooked(n: int = 1):
    after(what_started_me())


def queue_and_claim(store, pipe, params, **kwargs):
    run, tis = new_run(pipe, params, trigger="event", **kwargs)
    assert run.state is RunState.QUEUED and run.driver_id is None
    assert [t.task_id for t in tis] == ["what_started_me", "after"]
    assert store.list_runs(pipeline=pipe.name) == []  # new_run writes nothing
    store.create_run(run, tis)
    driver_id = new_driver_id()
    assert store.claim_run(run.run_id, driver_id, lease_s=30, expected_driver=None)
    return store.get_run(run.run_id)


def test_a_claimed_queued_run_is_driven_with_its_trigger_in_the_context(cadenza_env):
    store = open_store(cadenza_env.database_url)
    trigger = {"kind": "event", "source": "redis://x/0?stream=s", "message_id": "1-0"}
    run = queue_and_claim(store, hooked, {"n": 7}, extra={"trigger": trigger},
                          logical_date=T0, data_interval=(T0, T0))
    result = drive_run(run, hooked, executor="threads")
    assert result.state is RunState.SUCCESS
    assert result.outputs["what_started_me"] == {
        "trigger": trigger, "n": 7, "logical_date": T0.isoformat()}
    assert result.outputs["after"] == 7
    stored = store.get_run(run.run_id)
    assert stored.started_at is not None and stored.driver_id is None
    assert stored.trigger == "event"


def test_a_run_whose_parameters_no_longer_validate_fails_and_cancels_its_tasks(cadenza_env):
    store = open_store(cadenza_env.database_url)
    run = queue_and_claim(store, hooked, {"n": 1})
    from dataclasses import replace

    run = replace(run, params={"n": "not a number"})  # as if the pipeline changed since
    result = drive_run(run, hooked, executor="threads")
    assert result.state is RunState.FAILED
    assert "the run cannot start" in result.error and "'n'" in result.error
    assert set(result.task_states.values()) == {TaskState.CANCELLED}


def test_only_a_claimed_queued_run_can_be_driven(cadenza_env):
    store = open_store(cadenza_env.database_url)
    run, tis = new_run(hooked, {}, trigger="manual")
    store.create_run(run, tis)
    with pytest.raises(CadenzaError, match="not a claimed queued run"):
        drive_run(run, hooked)


def test_fail_run_ends_a_run_that_cannot_be_loaded(cadenza_env):
    store = open_store(cadenza_env.database_url)
    run = queue_and_claim(store, hooked, {})
    fail_run(run, error="pipeline file moved: pipelines/hooked.py")
    stored = store.get_run(run.run_id)
    assert stored.state is RunState.FAILED and stored.driver_id is None
    assert stored.error == "pipeline file moved: pipelines/hooked.py"
    assert {t.state for t in store.get_task_instances(run.run_id)} == {TaskState.CANCELLED}


def test_a_scheduler_that_cannot_start_a_run_fails_it_with_the_reason(cadenza_env):
    from cadenza.triggers.loop import Scheduler

    store = open_store(cadenza_env.database_url)
    run, tis = new_run(hooked, {}, trigger="event")
    store.create_run(run, tis)
    sched = Scheduler([hooked], executor="no_such_executor")
    try:
        report = sched.run_once(timeout_s=30)
    finally:
        sched.close()
    assert report.started == [run.run_id]
    stored = store.get_run(run.run_id)
    assert stored.state is RunState.FAILED
    assert "the scheduler could not start it" in stored.error
    assert "no_such_executor" in stored.error


def test_one_task_runs_with_the_outputs_of_the_latest_good_run(cadenza_env):
    from cadenza.engine.task_test import prepare_task_test

    with pytest.raises(CadenzaError, match="no run of pipeline 'hooked' has a successful"):
        prepare_task_test(hooked, "after")
    full = hooked.run(executor="inline", n=5)
    test = prepare_task_test(hooked, "after")
    assert test.source_run.run_id == full.run_id and test.params == {"n": 5}
    result = test.run()
    assert result.state is RunState.SUCCESS and result.outputs["after"] == 5
    assert list(result.task_states) == ["after"]  # nothing upstream ran again
    given = prepare_task_test(hooked, "after", inputs={"info": {"n": 42}}).run()
    assert given.outputs["after"] == 42
    with pytest.raises(CadenzaError, match="input 'inf': no argument .* Did you mean 'info'"):
        prepare_task_test(hooked, "after", inputs={"inf": 1})
    with pytest.raises(CadenzaError, match="no task 'afterr'. Did you mean 'after'"):
        prepare_task_test(hooked, "afterr")
