"""engine/active.py: the run's state owner, driven by feeding it outcomes and stored rows.

No executor, store or thread: a small harness takes the owner's ready work, starts attempts
and hands back outcomes in the order a test (or hypothesis) chooses, the way the driver does
(STYLE §8: test the state machine by feeding it outcomes). Every move goes through
`core.states.transition`, so an illegal one raises IllegalTransition and fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza import pipeline, task
from cadenza.core.records import ErrorInfo, TaskInstanceRecord, ValueRef
from cadenza.core.states import RunState, TaskState
from cadenza.engine.active import ActiveRun, Instance, cancel_rows
from cadenza.executors.base import TaskOutcome
from cadenza.graph.model import PipelineGraph

S = TaskState


# -- pipelines ---------------------------------------------------------------------------------
@task
def source(n: int) -> list[int]:
    return list(range(n))


@task
def step(x: Any) -> Any:
    return x


@task(retries=1, retry_delay=0)
def flaky(x: Any) -> Any:
    return x


@task
def total(xs: list[Any]) -> int:
    return len(xs)


@task.branch
def gate(x: Any) -> str:
    return "left"


@task
def left(x: Any) -> str:
    return "l"


@task
def right(x: Any) -> str:
    return "r"


@task(trigger_rule="all_done")
def cleanup() -> str:
    return "c"


@task(trigger_rule="all_failed")
def on_all_failed(x: Any) -> str:
    return "handled"


@pipeline
def chain(n: int = 3):
    step(step(source(n)))


@pipeline
def mapped(n: int = 3):
    total(step.expand(x=source(n)))


@pipeline
def branching(n: int = 1):
    s = source(n)
    g = gate(s)
    g >> [left(s), right(s)]
    [left, right] >> cleanup()


@pipeline
def retrying(n: int = 1):
    on_all_failed(flaky(source(n)))


@pipeline
def everything(n: int = 2):
    s = source(n)
    m = step.expand(x=s)
    t = total(m)
    f = flaky(t)
    g = gate(f)
    g >> [left(s), right(t)]
    [left, right] >> cleanup()
    on_all_failed(f)


# -- harness -----------------------------------------------------------------------------------
Oracle = Callable[[Instance], tuple[bool, Any]]  # (ok, json output) for an attempt


class Harness:
    """Plays the driver: dispatches ready work, folds outcomes in, as the owner asks."""

    def __init__(self, graph: PipelineGraph, oracle: Oracle, *, params: dict[str, Any],
                 rows: list[TaskInstanceRecord] | None = None) -> None:
        self.active = ActiveRun(graph, params=params, load_output=lambda ref: ref.value)
        self.oracle = oracle
        self.in_flight: list[Instance] = []
        self.failed_hooks: list[str] = []
        self.active.on_failed = lambda inst: self.failed_hooks.append(inst.label)
        if rows is None:
            self.active.start("r1")
        else:
            self.active.replay(rows)
            self.active.settle_kept()
        self.active.begin()
        self.dispatch()

    def dispatch(self) -> None:
        ready = self.active.ready
        while ready:
            inst = ready.popleft()
            if inst.state is S.SCHEDULED:
                self.active.start_attempt(inst)
                self.in_flight.append(inst)

    def finish(self, index: int = 0, *, cancel: bool = False, kind: str = "exception"
               ) -> TaskState:
        """The attempt of in-flight instance number `index` ends (as the oracle says; a
        failure of `kind`)."""
        inst = self.in_flight.pop(index)
        ok, value = (False, None) if cancel else self.oracle(inst)
        error = None if ok else ErrorInfo(
            kind="cancelled" if cancel else kind, type="builtins.ValueError",
            message="cancelled" if cancel else "boom")
        out = TaskOutcome(run_id="r1", task_id=inst.node.id, map_index=inst.map_index,
                          attempt=inst.attempt, ok=ok, error=error,
                          output=ValueRef(kind="json", value=value) if ok else None)
        state = self.active.judge(inst, out)
        if state is S.SUCCESS or state is S.FAILED:
            self.active.conclude(inst)
        elif state is S.UP_FOR_RETRY:
            self.active.retry_due(inst)  # the test's clock: the delay has passed
        self.dispatch()
        return state

    def cancel(self) -> None:
        """What the driver does on a cancel: stop what runs, then everything else."""
        self.active.cancel_reason = "run cancelled"
        while self.in_flight:
            assert self.finish(cancel=True) is S.CANCELLED
        self.active.stop("run cancelled")

    def run_to_end(self) -> RunState:
        while self.in_flight:
            self.finish()
        if self.active.unfinished:
            self.active.fail_stuck()
        assert self.active.unfinished == 0
        return self.active.run_state()

    def rows(self) -> list[TaskInstanceRecord]:
        """What the store holds after the driver's next commit."""
        return [inst.record("r1") for inst in self.active.instances()]

    def states(self) -> dict[str, TaskState]:
        return {inst.label: inst.state for inst in self.active.instances()}


def all_ok(inst: Instance) -> tuple[bool, Any]:
    if inst.node.id == "source":
        return True, list(range(3))
    if inst.node.id == "gate":
        return True, "left"
    return True, inst.node.id


def failing(*task_ids: str) -> Oracle:
    def oracle(inst: Instance) -> tuple[bool, Any]:
        if inst.node.id in task_ids:
            return False, None
        return all_ok(inst)
    return oracle


# -- sequences ---------------------------------------------------------------------------------
def test_success_runs_each_task_after_its_upstream() -> None:
    h = Harness(chain.graph, all_ok, params={"n": 3})
    assert [i.node.id for i in h.in_flight] == ["source"]
    assert h.finish() is S.SUCCESS
    assert [i.node.id for i in h.in_flight] == ["step"]
    assert h.run_to_end() is RunState.SUCCESS
    assert set(h.states().values()) == {S.SUCCESS}


def test_a_failure_fails_downstream_and_the_run() -> None:
    h = Harness(chain.graph, failing("source"), params={"n": 3})
    assert h.finish() is S.FAILED
    assert h.in_flight == []
    assert h.run_to_end() is RunState.FAILED
    assert h.states() == {"source": S.FAILED, "step": S.UPSTREAM_FAILED,
                          "step__1": S.UPSTREAM_FAILED}
    assert h.failed_hooks == ["source"]


def test_a_retry_runs_the_task_again_and_then_its_downstream() -> None:
    attempts: list[int] = []

    def flaky_once(inst: Instance) -> tuple[bool, Any]:
        if inst.node.id == "flaky":
            attempts.append(inst.attempt)
            return inst.attempt > 1, 1
        return all_ok(inst)

    h = Harness(retrying.graph, flaky_once, params={"n": 1})
    h.finish()  # source
    assert h.finish() is S.UP_FOR_RETRY
    assert [i.label for i in h.in_flight] == ["flaky"]
    assert h.finish() is S.SUCCESS
    assert attempts == [1, 2]
    # all_failed downstream of a success is skipped by its trigger rule.
    assert h.run_to_end() is RunState.SUCCESS
    assert h.states()["on_all_failed"] is S.SKIPPED


def test_retries_run_out_then_the_task_fails_and_all_failed_runs() -> None:
    h = Harness(retrying.graph, failing("flaky"), params={"n": 1})
    h.finish()
    assert h.finish() is S.UP_FOR_RETRY
    assert h.finish() is S.FAILED
    assert [i.node.id for i in h.in_flight] == ["on_all_failed"]
    assert h.run_to_end() is RunState.FAILED
    assert h.states()["on_all_failed"] is S.SUCCESS


def test_a_lost_worker_costs_no_retry_once_then_counts() -> None:
    # `source` has retries=0: its first attempt lost with the worker is tried again free;
    # the second loss fails it as any failure would.
    h = Harness(chain.graph, failing("source"), params={"n": 3})
    assert h.finish(kind="worker_lost") is S.UP_FOR_RETRY
    assert [(i.label, i.attempt) for i in h.in_flight] == [("source", 2)]
    assert h.finish(kind="worker_lost") is S.FAILED
    assert h.run_to_end() is RunState.FAILED


def test_the_free_attempt_after_a_lost_worker_leaves_the_retries_whole() -> None:
    # `flaky` has retries=1: lost (free), failed (its one retry), failed -> FAILED at 3.
    h = Harness(retrying.graph, failing("flaky"), params={"n": 1})
    h.finish()  # source
    assert h.finish(kind="worker_lost") is S.UP_FOR_RETRY
    assert h.finish() is S.UP_FOR_RETRY
    assert h.in_flight[0].attempt == 3
    assert h.finish() is S.FAILED


def test_a_branch_skips_what_it_did_not_choose_and_all_done_still_runs() -> None:
    h = Harness(branching.graph, all_ok, params={"n": 1})
    h.finish()  # source
    assert h.finish() is S.SUCCESS  # gate -> "left"
    assert [i.node.id for i in h.in_flight] == ["left"]
    assert h.states()["right"] is S.SKIPPED
    assert h.run_to_end() is RunState.SUCCESS
    assert h.states()["cleanup"] is S.SUCCESS


def test_a_branch_naming_no_downstream_task_fails() -> None:
    def bad_choice(inst: Instance) -> tuple[bool, Any]:
        return (True, "nowhere") if inst.node.id == "gate" else all_ok(inst)

    h = Harness(branching.graph, bad_choice, params={"n": 1})
    h.finish()
    assert h.finish() is S.FAILED
    gate_inst = next(i for i in h.active.instances() if i.node.id == "gate")
    assert gate_inst.error is not None and gate_inst.error.kind == "branch"
    assert h.run_to_end() is RunState.FAILED


@pytest.mark.parametrize("n", [0, 1, 5])
def test_mapped_expansion_of_0_1_and_n(n: int) -> None:
    def produce(inst: Instance) -> tuple[bool, Any]:
        return (True, list(range(n))) if inst.node.id == "source" else all_ok(inst)

    h = Harness(mapped.graph, produce, params={"n": n})
    h.finish()
    assert sorted(i.map_index for i in h.in_flight if i.node.id == "step") == list(range(n))
    summary = h.active.nodes["step"].summary
    assert summary.map_count == n
    assert summary.state is (S.SUCCESS if n == 0 else S.RUNNING)
    assert h.run_to_end() is RunState.SUCCESS
    assert summary.state is S.SUCCESS
    assert len(h.rows()) == 3 + n


def test_a_failed_mapped_instance_fails_the_summary_and_downstream() -> None:
    def second_fails(inst: Instance) -> tuple[bool, Any]:
        if inst.node.id == "step" and inst.map_index == 1:
            return False, None
        return all_ok(inst)

    h = Harness(mapped.graph, second_fails, params={"n": 3})
    assert h.run_to_end() is RunState.FAILED
    states = h.states()
    assert (states["step"], states["step[1]"], states["total"]) == (
        S.FAILED, S.FAILED, S.UPSTREAM_FAILED)
    assert states["step[0]"] is S.SUCCESS


def test_expanding_over_a_non_list_fails_the_mapped_task() -> None:
    def not_a_list(inst: Instance) -> tuple[bool, Any]:
        return (True, 7) if inst.node.id == "source" else all_ok(inst)

    h = Harness(mapped.graph, not_a_list, params={"n": 3})
    assert h.run_to_end() is RunState.FAILED
    assert h.states()["step"] is S.FAILED
    assert "step" in h.failed_hooks


def test_cancel_ends_every_instance_cancelled_and_the_run_cancelled() -> None:
    h = Harness(mapped.graph, all_ok, params={"n": 3})
    h.finish()  # source: three instances now in flight
    h.finish()
    h.cancel()
    states = h.states()
    assert states["source"] is S.SUCCESS and states["step[0]"] is S.SUCCESS
    assert {states["step[1]"], states["step[2]"], states["total"]} == {S.CANCELLED}
    assert h.active.run_state() is RunState.CANCELLED
    assert not h.active.ready


def test_a_stop_that_is_no_cancel_fails_the_run() -> None:
    h = Harness(chain.graph, all_ok, params={"n": 3})
    h.in_flight.clear()  # e.g. the executor could not start: nothing will come back
    h.active.stop("experiment tracking is unavailable", run_state=RunState.FAILED)
    assert h.active.run_state() is RunState.FAILED
    assert set(h.states().values()) == {S.CANCELLED}


@pytest.mark.parametrize(("graph", "oracle", "n"), [
    (chain.graph, all_ok, 3), (chain.graph, failing("step"), 3),
    (mapped.graph, all_ok, 3), (branching.graph, all_ok, 1),
    (retrying.graph, failing("flaky"), 1), (everything.graph, all_ok, 3),
    (everything.graph, failing("left", "step"), 3),
])
def test_resume_after_each_step_ends_as_an_uninterrupted_run(
    graph: PipelineGraph, oracle: Oracle, n: int
) -> None:
    whole = Harness(graph, oracle, params={"n": n})
    expected_run = whole.run_to_end()
    expected = whole.states()
    steps = 0
    while True:
        h = Harness(graph, oracle, params={"n": n})
        for _ in range(steps):
            h.finish()
        if not h.in_flight:
            break
        resumed = Harness(graph, oracle, params={"n": n}, rows=h.rows())
        assert resumed.run_to_end() is expected_run
        assert resumed.states() == expected, f"resumed after {steps} outcomes"
        steps += 1
    assert steps > 1


def test_resume_reruns_what_did_not_succeed_and_keeps_what_did() -> None:
    h = Harness(chain.graph, failing("step"), params={"n": 3})
    assert h.run_to_end() is RunState.FAILED
    rows = h.rows()
    resumed = Harness(chain.graph, all_ok, params={"n": 3}, rows=rows)
    # source is kept (no new attempt); step runs again and then step_2.
    assert [i.node.id for i in resumed.in_flight] == ["step"]
    assert resumed.run_to_end() is RunState.SUCCESS
    attempts = {i.label: i.attempt for i in resumed.active.instances()}
    assert attempts == {"source": 1, "step": 2, "step__1": 1}


def test_replay_reports_attempts_a_dead_driver_left_running() -> None:
    h = Harness(chain.graph, all_ok, params={"n": 3})
    rows = h.rows()  # source is running
    active = ActiveRun(chain.graph, params={"n": 3}, load_output=lambda ref: ref.value)
    interrupted = active.replay(rows)
    assert [(r.task_id, r.attempt) for r in interrupted] == [("source", 1)]
    assert active.nodes["source"].summary.state is S.PENDING
    assert active.nodes["source"].summary.reason == "resumed"


def test_cancel_rows_moves_only_unfinished_rows() -> None:
    rows = [TaskInstanceRecord(run_id="r1", task_id=t, map_index=-1, state=s)
            for t, s in (("a", S.SUCCESS), ("b", S.RUNNING), ("c", S.PENDING))]
    moved = cancel_rows(rows, reason="gone")
    assert [(r.task_id, r.state, r.reason) for r in moved] == [
        ("b", S.CANCELLED, "gone"), ("c", S.CANCELLED, "gone")]
    assert all(r.ended_at is not None for r in moved)


# -- properties --------------------------------------------------------------------------------
GRAPHS = [chain.graph, mapped.graph, branching.graph, retrying.graph, everything.graph]
TASK_IDS = sorted({node.id for g in GRAPHS for node in g})


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "graph": draw(st.sampled_from(GRAPHS)),
        "n": draw(st.sampled_from([0, 1, 3])),
        "fails": draw(st.frozensets(st.sampled_from(TASK_IDS), max_size=3)),
        "fail_index": draw(st.sampled_from([None, 0, 2])),  # a mapped instance that fails
        "choice": draw(st.sampled_from(["left", "right", ["left", "right"], []])),
        "order": draw(st.lists(st.integers(min_value=0, max_value=50), max_size=60)),
        "cancel_at": draw(st.one_of(st.none(), st.integers(min_value=0, max_value=20))),
        "resume_at": draw(st.integers(min_value=0, max_value=40)),
    }


def oracle_of(sc: dict[str, Any]) -> Oracle:
    """Outcomes that depend only on the task instance, so a resumed run meets the same."""
    def oracle(inst: Instance) -> tuple[bool, Any]:
        if inst.node.id in sc["fails"] and (inst.map_index < 0 or
                                           inst.map_index == sc["fail_index"]):
            return False, None
        if inst.node.id == "source":
            return True, list(range(sc["n"]))
        if inst.node.id == "gate":
            return True, sc["choice"]
        return True, inst.map_index
    return oracle


def play(h: Harness, order: list[int], *, until: int | None = None,
         cancel_at: int | None = None) -> int:
    """Fold outcomes in, taking in-flight instances in `order`; returns the steps taken."""
    done = 0
    for pick in order:
        if until is not None and done >= until:
            return done
        if cancel_at is not None and done == cancel_at:
            h.cancel()
            return done
        if not h.in_flight:
            return done
        h.finish(pick % len(h.in_flight))
        done += 1
    return done


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_outcomes_move_legally_and_end_in_a_final_run_state(sc: dict[str, Any]) -> None:
    h = Harness(sc["graph"], oracle_of(sc), params={"n": sc["n"]})
    play(h, sc["order"], cancel_at=sc["cancel_at"])
    final = h.run_to_end()
    assert final.is_final
    assert all(state.is_final for state in h.states().values())
    if sc["cancel_at"] is None or h.active.stopped_as is None:
        assert final is (RunState.SUCCESS if all(
            s in (S.SUCCESS, S.CACHED, S.SKIPPED) for s in h.states().values())
            else RunState.FAILED)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_replaying_stored_rows_at_any_point_ends_as_not_stopping(sc: dict[str, Any]) -> None:
    oracle = oracle_of(sc)
    whole = Harness(sc["graph"], oracle, params={"n": sc["n"]})
    play(whole, sc["order"])
    expected_run, expected = whole.run_to_end(), whole.states()

    stopped = Harness(sc["graph"], oracle, params={"n": sc["n"]})
    play(stopped, sc["order"], until=sc["resume_at"])
    resumed = Harness(sc["graph"], oracle, params={"n": sc["n"]}, rows=stopped.rows())
    assert resumed.run_to_end() is expected_run
    assert resumed.states() == expected
