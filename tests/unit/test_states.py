"""core/states.py: the table of legal moves, transition(), clear() and run_state_of()."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadenza.core import clock
from cadenza.core.errors import CadenzaError, IllegalTransition
from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.states import (
    ACTIVE_TASK_STATES,
    FINAL_TASK_STATES,
    RunState,
    TaskState,
    clear,
    is_legal,
    is_legal_run_move,
    move_run,
    move_task,
    reopen_run,
    run_state_of,
    transition,
)

S = TaskState
FINAL = sorted(FINAL_TASK_STATES)
UNFINISHED = sorted(set(TaskState) - FINAL_TASK_STATES)


def test_final_states() -> None:
    assert FINAL_TASK_STATES == {S.SUCCESS, S.CACHED, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED,
                                 S.CANCELLED}
    for state in TaskState:
        assert state.is_final is (state in FINAL_TASK_STATES)
    assert ACTIVE_TASK_STATES.isdisjoint(FINAL_TASK_STATES)
    assert S.PENDING not in ACTIVE_TASK_STATES


def test_only_success_and_cached_are_ok() -> None:
    assert {s for s in TaskState if s.is_ok} == {S.SUCCESS, S.CACHED}


@pytest.mark.parametrize("old", FINAL)
def test_final_states_have_no_exit(old: TaskState) -> None:
    for new in TaskState:
        assert not is_legal(old, new), (old, new)
        with pytest.raises(IllegalTransition):
            transition("t", -1, old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.PENDING, S.SCHEDULED),
        (S.PENDING, S.CACHED),
        (S.PENDING, S.SKIPPED),
        (S.PENDING, S.UPSTREAM_FAILED),
        (S.PENDING, S.CANCELLED),
        (S.SCHEDULED, S.QUEUED),
        (S.QUEUED, S.RUNNING),
        (S.QUEUED, S.PENDING),  # worker lost before it started
        (S.RUNNING, S.SUCCESS),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.UP_FOR_RETRY),
        (S.RUNNING, S.CANCELLED),
        (S.RUNNING, S.PENDING),  # worker lost
        (S.UP_FOR_RETRY, S.SCHEDULED),
        (S.UP_FOR_RETRY, S.CANCELLED),
    ],
)
def test_legal_moves_pass(old: TaskState, new: TaskState) -> None:
    assert is_legal(old, new)
    t = transition("train", 2, old, new, reason="why")
    assert (t.task_id, t.map_index, t.old, t.new, t.reason) == ("train", 2, old, new, "why")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.SUCCESS, S.RUNNING),
        (S.SUCCESS, S.PENDING),
        (S.FAILED, S.UP_FOR_RETRY),
        (S.FAILED, S.RUNNING),
        (S.CACHED, S.SUCCESS),
        (S.SKIPPED, S.PENDING),
        (S.CANCELLED, S.QUEUED),
        (S.PENDING, S.PENDING),
        (S.RUNNING, S.RUNNING),
        (S.RUNNING, S.QUEUED),
        (S.RUNNING, S.CACHED),
        (S.UP_FOR_RETRY, S.SUCCESS),
        (S.UP_FOR_RETRY, S.RUNNING),
        (S.UP_FOR_RETRY, S.FAILED),
        (S.SCHEDULED, S.SUCCESS),
        (S.SCHEDULED, S.RUNNING),
    ],
)
def test_illegal_moves_raise(old: TaskState, new: TaskState) -> None:
    assert not is_legal(old, new)
    with pytest.raises(IllegalTransition):
        transition("train", -1, old, new)


def test_every_state_has_a_row_and_no_state_moves_to_itself() -> None:
    for state in TaskState:
        assert not is_legal(state, state)  # also proves every state has a row


def test_every_unfinished_state_can_be_cancelled_and_reach_a_final_state() -> None:
    for state in UNFINISHED:
        assert is_legal(state, S.CANCELLED), state


def test_illegal_transition_names_the_instance_and_says_it_is_a_bug() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition("train", 3, S.SUCCESS, S.RUNNING)
    err = info.value
    assert isinstance(err, CadenzaError)
    assert err.task == "train[3]"
    assert "illegal state change success -> running" in str(err)
    assert "bug in Cadenza" in (err.hint or "")


def test_illegal_transition_of_an_unmapped_task_has_no_index() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition("train", -1, S.FAILED, S.RUNNING)
    assert info.value.task == "train"


def test_transition_is_stamped_by_the_injected_clock() -> None:
    fake = clock.FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    with clock.use_clock(fake):
        fake.advance(5)
        t = transition("a", -1, S.PENDING, S.SCHEDULED)
    assert t.at == datetime(2026, 3, 1, 0, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize("old", FINAL)
def test_clear_is_the_way_out_of_a_final_state(old: TaskState) -> None:
    t = clear("a", 0, old, reason="resume")
    assert (t.old, t.new, t.reason, t.map_index) == (old, S.PENDING, "resume", 0)


# -- run_state_of -----------------------------------------------------------------------------
@pytest.mark.parametrize("unfinished", UNFINISHED)
def test_run_is_running_while_any_task_is_unfinished(unfinished: TaskState) -> None:
    assert run_state_of([S.SUCCESS, S.FAILED, unfinished]) is RunState.RUNNING


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], RunState.SUCCESS),
        ([S.SUCCESS], RunState.SUCCESS),
        ([S.SUCCESS, S.CACHED, S.SKIPPED], RunState.SUCCESS),
        ([S.SKIPPED, S.SKIPPED], RunState.SUCCESS),
        ([S.SUCCESS, S.FAILED], RunState.FAILED),
        ([S.SUCCESS, S.UPSTREAM_FAILED], RunState.FAILED),
        ([S.SUCCESS, S.CANCELLED], RunState.FAILED),  # a task cancelled, not the run
    ],
)
def test_run_state_of_final_task_states(states: list[TaskState], expected: RunState) -> None:
    assert run_state_of(states) is expected


def test_run_state_of_accepts_any_iterable() -> None:
    assert run_state_of(iter([S.SUCCESS, S.FAILED])) is RunState.FAILED


def test_final_run_states() -> None:
    assert {s for s in RunState if s.is_final} == {RunState.SUCCESS, RunState.FAILED,
                                                   RunState.CANCELLED}


# -- the run's table ---------------------------------------------------------------------------
def _run(state: RunState) -> RunRecord:
    return RunRecord(run_id="r1", pipeline="p", state=state, created_at=datetime(2026, 3, 1,
                                                                                 tzinfo=UTC))


@pytest.mark.parametrize(
    ("old", "new"),
    [(RunState.QUEUED, RunState.RUNNING), (RunState.QUEUED, RunState.CANCELLED),
     (RunState.QUEUED, RunState.FAILED), (RunState.RUNNING, RunState.SUCCESS),
     (RunState.RUNNING, RunState.FAILED), (RunState.RUNNING, RunState.CANCELLED)],
)
def test_move_run_makes_legal_moves_and_sets_other_fields(old: RunState, new: RunState) -> None:
    moved = move_run(_run(old), new, error="why")
    assert (moved.state, moved.error, moved.run_id) == (new, "why", "r1")
    assert is_legal_run_move(old, new)


@pytest.mark.parametrize("old", [s for s in RunState if s.is_final])
@pytest.mark.parametrize("new", list(RunState))
def test_a_final_run_state_moves_only_through_reopen(old: RunState, new: RunState) -> None:
    with pytest.raises(IllegalTransition):
        move_run(_run(old), new)
    reopened = reopen_run(_run(old), error=None)
    assert reopened.state is RunState.RUNNING


@pytest.mark.parametrize("new", [RunState.QUEUED, RunState.RUNNING])
def test_a_running_run_does_not_go_back(new: RunState) -> None:
    with pytest.raises(IllegalTransition):
        move_run(_run(RunState.RUNNING), new)


def test_move_task_checks_the_table_and_keeps_the_reason() -> None:
    ti = TaskInstanceRecord(run_id="r1", task_id="a", map_index=2, state=S.RUNNING)
    moved = move_task(ti, S.CANCELLED, reason="stop", attempt=3)
    assert (moved.state, moved.reason, moved.attempt, moved.map_index) == (
        S.CANCELLED, "stop", 3, 2)
    with pytest.raises(IllegalTransition):
        move_task(moved, S.PENDING)
