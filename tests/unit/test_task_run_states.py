"""What a cluster step (`cadenza task-run`) reads of a run: task states inferred from the
instances the steps recorded, and the JSON form of those records (issue 16)."""

from __future__ import annotations

from datetime import UTC, datetime

from cadenza.core.records import (
    AttemptRecord,
    ErrorInfo,
    ErrorKind,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
)
from cadenza.core.states import RunState, TaskState
from cadenza.engine.step_records import StepRecord, dump_run, dump_step, load_run, load_step
from cadenza.engine.task_run import infer_states
from tests.pipelines import shapes

S = TaskState


def _row(task: str, state: TaskState, *, index: int = -1, value: object = None,
         ) -> TaskInstanceRecord:
    out = ValueRef(kind="json", value=value) if value is not None else None
    return TaskInstanceRecord(run_id="r", task_id=task, map_index=index, state=state,
                              output=out)


def test_targets_a_branch_did_not_choose_are_skipped_and_the_join_should_run() -> None:
    rows = [_row("choose_many", S.SUCCESS, value=["middle"]), _row("middle", S.SUCCESS)]
    states = infer_states(shapes.multi_branch.plan, rows)
    assert states == {"choose_many": S.SUCCESS, "left": S.SKIPPED, "middle": S.SUCCESS,
                      "right": S.SKIPPED, "join": None}


def test_a_failure_leaves_its_dependents_upstream_failed_but_not_tolerant_ones() -> None:
    states = infer_states(shapes.failing.plan, [_row("boom", S.FAILED)])
    assert states["after"] is S.UPSTREAM_FAILED
    assert states["none_failed_task"] is S.UPSTREAM_FAILED
    # one_failed and all_done should run: nobody recorded them yet.
    assert states["on_any_failure"] is None and states["always_cleanup"] is None


def test_a_mapped_task_without_its_summary_is_summarised_from_its_instances() -> None:
    rows = [_row("build", S.SUCCESS, value=[1, 2]),
            *[_row("train", S.SUCCESS, index=i, value={"i": i}) for i in range(3)]]
    states = infer_states(shapes.fraud_training.plan, rows)
    assert states["train"] is S.SUCCESS and states["select_best"] is None
    rows[2] = _row("train", S.FAILED, index=1)
    states = infer_states(shapes.fraud_training.plan, rows)
    assert states["train"] is S.FAILED
    assert states["select_best"] is S.UPSTREAM_FAILED
    assert states["cleanup"] is None  # all_done still runs


def test_records_survive_their_json_form() -> None:
    at = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
    error = ErrorInfo(kind=ErrorKind.EXCEPTION, type="builtins.ValueError", message="bad",
                      traceback="tb", type_mro=("builtins.ValueError", "builtins.Exception"))
    ti = TaskInstanceRecord(run_id="r", task_id="t", map_index=2, state=S.FAILED, attempt=2,
                            started_at=at, ended_at=at, error=error,
                            output=ValueRef(kind="artifact", uri="s3://b/x.npy", sha256="ab",
                                            serializer="npy", size=8, type_name="ndarray"))
    record = StepRecord(
        instance=ti,
        attempts=[AttemptRecord(run_id="r", task_id="t", map_index=2, attempt=2,
                                state=S.FAILED, started_at=at, ended_at=at, error=error)],
        metrics=[MetricRecord(run_id="r", task_id="t", map_index=2, attempt=2, name="auc",
                              value=0.9, at=at)])
    assert load_step(dump_step(record)) == record
    run = RunRecord(run_id="r", pipeline="p", state=RunState.RUNNING, params={"n": [1, 2]},
                    created_at=at, tags=("a",), extra={"task_order": ["t"]})
    assert load_run(dump_run(run)) == run
