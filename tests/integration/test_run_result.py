"""The RunResult of a run just driven (engine/api.py `result_of_driver`): its state, error and
task states come from the driver and equal what the store holds; the task instances' rows are
read from the store on first use, and equal a result read back from the store."""

from __future__ import annotations

import pytest

from cadenza import pipeline, task
from cadenza.core.settings import Settings
from cadenza.core.states import RunState, TaskState
from cadenza.engine.api import result_from_store
from cadenza.store import open_store


@task
def zeta() -> int:
    return 1


@task
def alpha(x: int) -> int:
    return x + 1


@task
def broken(x: int) -> int:
    raise ValueError(f"no {x}")


@task
def after(x: int) -> int:
    return x


@task
def fan(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@pipeline(name="run_result_shape")
def shape() -> None:
    one = zeta()
    alpha(one)
    after(broken(one))
    square.expand(x=fan(3))


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_a_driven_runs_result_equals_the_stored_one(cadenza_env: Settings) -> None:
    result = shape.run(executor="inline")
    assert result._instances is None, "the rows are read on first use, not at the run's end"
    assert result.state is RunState.FAILED
    assert result.task_states["broken"] is TaskState.FAILED
    assert result.task_states["after"] is TaskState.UPSTREAM_FAILED
    stored = result_from_store(open_store(cadenza_env.database_url), result.run_id,
                               cadenza_env.artifact_root)
    assert (result.state, result.error, result.pipeline) == (stored.state, stored.error,
                                                             stored.pipeline)
    assert list(result.task_states.items()) == list(stored.task_states.items())  # same order
    assert result.instances == stored.instances
    assert result._instances is not None
    assert result.outputs["alpha"] == 2 and result.outputs["square"] == [0, 1, 4]
    assert set(result.failed) == {"broken"}
