"""What surfaces show about a task instance (engine/inspect.py) after real runs, on SQLite and
PostgreSQL: attempts with their logs and errors, inputs from the Plan (upstream outputs,
parameters, mapped elements) or from lineage, previews of the outputs."""

from __future__ import annotations

import pytest

from cadenza.artifacts.preview import preview_value
from cadenza.core.errors import RunNotFound, TaskNotFound
from cadenza.core.logfiles import read_log_range
from cadenza.core.states import RunState, TaskState
from cadenza.engine.inspect import attempts_of, find_attempt, find_task_instance, input_refs
from cadenza.store import RunStore, open_store
from tests.pipelines import inspect_tasks as P


@pytest.fixture
def store(cadenza_env) -> RunStore:  # type: ignore[no-untyped-def]
    return open_store(cadenza_env.database_url)


def test_inputs_outputs_attempts_and_logs_of_a_real_run(store: RunStore, cadenza_env) -> None:  # type: ignore[no-untyped-def]
    result = P.data_pipe.run(executor="inline", n=12, xs=[3, 4, 5])
    assert result.state is RunState.SUCCESS
    rid, logs_dir = result.run_id, str(cadenza_env.logs_dir)
    run = store.get_run(rid)
    plan = P.data_pipe.plan

    frame_ti = find_task_instance(store, rid, "make_frame")
    (attempt,) = attempts_of(store, frame_ti, logs_dir=logs_dir)
    assert attempt.state is TaskState.SUCCESS and not attempt.live and attempt.log_path
    assert "making a frame of 12 rows" in read_log_range(attempt.log_path).text
    frame = preview_value(frame_ti.output)  # type: ignore[arg-type]
    assert frame.kind == "dataframe" and frame.shape == (12, 3)
    assert frame.rows[1] == {"id": 1, "score": 0.1, "name": "n1"}
    array = preview_value(find_task_instance(store, rid, "make_array").output)  # type: ignore[arg-type]
    assert array.kind == "array" and array.shape == (12, 4) and array.dtype == "float64"

    combine = find_task_instance(store, rid, "combine")
    refs = {r.name: r for r in input_refs(store, run, combine, plan)}
    assert (refs["frame"].source, refs["frame"].task_id) == ("task", "make_frame")
    assert refs["frame"].ref == frame_ti.output
    assert refs["arr"].task_id == "make_array" and refs["arr"].ref is not None
    assert preview_value(combine.output).value == {"rows": 12, "cells": 48}  # type: ignore[arg-type]

    second = find_task_instance(store, rid, "square", 1)
    (x,) = input_refs(store, run, second, plan)
    assert (x.name, x.source, x.param, x.element) == ("x", "param", "xs", 1)
    assert x.ref is not None and x.ref.value == 4 and second.output.value == 16  # type: ignore[union-attr]

    summarize = find_task_instance(store, rid, "summarize")
    (pub,) = input_refs(store, run, summarize, plan)
    assert pub.task_id == "publish" and pub.ref is not None and pub.ref.kind == "artifact"
    # Without the Plan (the pipeline did not load): the lineage names the input artifact.
    (from_lineage,) = input_refs(store, run, summarize, None)
    assert from_lineage.task_id == "publish" and from_lineage.ref is not None
    assert from_lineage.ref.sha256 == pub.ref.sha256


def test_a_failed_task_keeps_each_attempt_with_its_error_and_traceback(store: RunStore, cadenza_env) -> None:  # type: ignore[no-untyped-def]
    result = P.failing.run(executor="inline")
    assert result.state is RunState.FAILED
    ti = find_task_instance(store, result.run_id, "explode")
    assert ti.state is TaskState.FAILED and ti.error is not None
    assert "ValueError: bad value 42" in ti.error.traceback
    views = attempts_of(store, ti, logs_dir=str(cadenza_env.logs_dir))
    assert [(v.attempt, v.state) for v in views] == [
        (1, TaskState.UP_FOR_RETRY), (2, TaskState.FAILED)]
    assert all(v.error is not None and v.error.message == "bad value 42" for v in views)
    first = find_attempt(store, ti, 1, logs_dir=str(cadenza_env.logs_dir))
    assert "attempt 1: about to fail" in read_log_range(first.log_path).text
    assert find_attempt(store, ti, None, logs_dir=str(cadenza_env.logs_dir)).attempt == 2
    with pytest.raises(TaskNotFound, match="no attempt 3") as info:
        find_attempt(store, ti, 3, logs_dir=str(cadenza_env.logs_dir))
    assert info.value.hint == "its attempts: 1, 2"


def test_unknown_runs_tasks_and_map_indexes_say_what_exists(store: RunStore) -> None:
    result = P.data_pipe.run(executor="inline", n=3, xs=[1, 2])
    with pytest.raises(RunNotFound):
        find_task_instance(store, "nope", "make_frame")
    with pytest.raises(TaskNotFound, match="no task 'make_fram'.*Did you mean 'make_frame'"):
        find_task_instance(store, result.run_id, "make_fram")
    with pytest.raises(TaskNotFound, match="not mapped"):
        find_task_instance(store, result.run_id, "make_frame", 0)
    with pytest.raises(TaskNotFound, match="no map index 7") as info:
        find_task_instance(store, result.run_id, "square", 7)
    assert "0 to 1" in (info.value.hint or "")
    summary = find_task_instance(store, result.run_id, "square")
    with pytest.raises(TaskNotFound, match="is mapped: each of its 2 instances") as info:
        find_attempt(store, summary, None, logs_dir="/nonexistent")
    assert info.value.hint == "pick one with map index 0 to 1"


class _Counting:
    """The store, counting what input_refs reads."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        self.calls.append(name)
        return getattr(self.store, name)


def test_inputs_of_one_mapped_instance_read_only_the_rows_they_need(store: RunStore) -> None:
    result = P.data_pipe.run(executor="inline", n=3, xs=list(range(40)))
    run = store.get_run(result.run_id)
    ti = find_task_instance(store, result.run_id, "square", 17)
    counting = _Counting(store)
    (x,) = input_refs(counting, run, ti, P.data_pipe.plan)  # type: ignore[arg-type]
    assert x.element == 17 and x.ref is not None and x.ref.value == 17
    assert "get_task_instances" not in counting.calls  # not the whole run's 40+ rows
    assert len(counting.calls) <= 2


def test_lineage_trees_are_bounded_by_max_nodes(store: RunStore) -> None:
    from cadenza.artifacts.lineage import walk_lineage

    result = P.fan_out.run(executor="inline")
    arr = find_task_instance(store, result.run_id, "make_array").output
    assert arr is not None and arr.sha256
    whole = walk_lineage(store, arr.sha256, direction="downstream")
    assert len(whole.downstream) == 8 and not whole.truncated
    assert {n.artifact.task_id for n in whole.downstream if n.artifact} == {"scale"}
    read: list[int] = []

    class Recording:  # the real store, noting how many consumers each read returned
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(store, name)

        def consumers_of(self, sha: str, *, limit: int | None = None) -> list:  # type: ignore[type-arg]
            found = store.consumers_of(sha, limit=limit)
            read.append(len(found))
            return found

    cut = walk_lineage(Recording(), arr.sha256, direction="downstream", max_nodes=5)  # type: ignore[arg-type]
    assert len(cut.downstream) == 5 and cut.truncated
    assert len(cut.walk()) == 6  # the root and five
    assert read and max(read) <= 6  # never all 8 consumers read for a budget of 5
    assert walk_lineage(store, arr.sha256, max_nodes=0).downstream == ()
