"""The pure part of the live event stream (api/events.py): reads of a run's progress diffed
into ordered events, numbered in a log that resumes from a Last-Event-ID, and the SSE frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cadenza.api.events import EventLog, changes, encode, entered_at
from cadenza.core.progress import RunProgress, TaskInstanceProgress
from cadenza.core.states import RunState, TaskState

S = TaskState
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def ti(task_id: str, state: TaskState = S.PENDING, *, map_index: int = -1, attempt: int = 0,
       queued: float | None = None, started: float | None = None,
       ended: float | None = None) -> TaskInstanceProgress:
    return TaskInstanceProgress(
        task_id=task_id, map_index=map_index, state=state, attempt=attempt,
        queued_at=None if queued is None else at(queued),
        started_at=None if started is None else at(started),
        ended_at=None if ended is None else at(ended))


def run(state: RunState, *tis: TaskInstanceProgress) -> RunProgress:
    return RunProgress(run_id="r1", pipeline="p", state=state, task_instances=tis)


def summary(events: list) -> list[tuple[str, ...]]:
    return [("run", d["state"]) if k == "run" else (d["task_id"], d["state"]) for k, d in events]


def test_a_first_read_gives_the_run_then_every_instance_by_time_then_nothing_else():
    cur = run(RunState.RUNNING, ti("c"), ti("b", S.RUNNING, attempt=1, started=2),
              ti("a", S.SUCCESS, attempt=1, started=0, ended=1))

    assert summary(changes(None, cur)) == [
        ("run", "running"), ("c", "pending"), ("a", "success"), ("b", "running")]
    assert changes(cur, cur) == []


def test_changes_are_ordered_by_when_each_instance_entered_its_state_and_a_final_run_comes_last():
    prev = run(RunState.RUNNING, ti("a", S.RUNNING, attempt=1, started=0), ti("b"), ti("c"))
    cur = run(RunState.SUCCESS,
              ti("a", S.SUCCESS, attempt=1, started=0, ended=5),
              ti("b", S.SUCCESS, attempt=1, started=6, ended=9),
              ti("c", S.SKIPPED, ended=3))

    assert summary(changes(prev, cur)) == [
        ("c", "skipped"), ("a", "success"), ("b", "success"), ("run", "success")]


def test_a_retry_running_again_is_a_change_and_a_new_mapped_instance_is_one():
    prev = run(RunState.RUNNING, ti("t", S.RUNNING, attempt=1, started=0), ti("m"))
    cur = run(RunState.RUNNING, ti("t", S.RUNNING, attempt=2, started=4),
              ti("m", S.RUNNING, started=1), ti("m", map_index=0))

    events = changes(prev, cur)

    assert [(d["task_id"], d["map_index"], d["state"], d["attempt"]) for _, d in events] == [
        ("m", 0, "pending", 0), ("m", -1, "running", 0), ("t", -1, "running", 2)]


def test_an_instance_without_a_time_for_its_state_sorts_first():
    assert entered_at(ti("x", S.PENDING, queued=1, started=2)) is None
    assert entered_at(ti("x", S.QUEUED, queued=1)) == at(1)
    assert entered_at(ti("x", S.UP_FOR_RETRY, started=1, ended=2)) == at(2)


def test_the_log_numbers_events_and_resumes_right_after_a_known_id():
    log = EventLog("r1", epoch="e1")
    log.update(run(RunState.RUNNING, ti("a"), ti("b")))
    log.update(run(RunState.RUNNING, ti("a", S.RUNNING, attempt=1, started=1), ti("b")))

    assert [log.event_id(e) for e in log.events] == ["e1.1", "e1.2", "e1.3", "e1.4"]
    assert log.start("e1.2") == 2
    assert log.start("e1.4") == 4
    assert log.start("e1.99") == 4  # never past the end
    # Another log's id (a restarted server), garbage or none: the whole log.
    assert log.start("e0.2") == 0
    assert log.start("e1.x") == 0
    assert log.start("") == log.start(None) == 0


def test_the_log_is_done_for_a_client_that_saw_the_final_state_of_an_ended_run():
    log = EventLog("r1", epoch="e1")
    log.update(run(RunState.RUNNING, ti("a")))
    assert not log.is_final and not log.is_done_for("e1.2")
    log.update(run(RunState.FAILED, ti("a", S.FAILED, attempt=1, started=0, ended=1)))

    assert log.is_final
    assert log.is_done_for("e1.4")
    assert not log.is_done_for("e1.3")  # one event left: the run's end
    assert not log.is_done_for(None)  # a new client gets the whole story


def test_frames_carry_id_event_and_one_line_of_json():
    log = EventLog("r1", epoch="e1")
    log.update(run(RunState.QUEUED, ti("a")))

    text = encode(log, log.events).decode()

    frames = text.split("\n\n")
    assert frames[-1] == ""
    first = frames[0].split("\n")
    assert first[0] == "id: e1.1" and first[1] == "event: run"
    assert json.loads(first[2].removeprefix("data: "))["state"] == "queued"
    second = frames[1].split("\n")
    assert second[:2] == ["id: e1.2", "event: task_instance"]
    assert json.loads(second[2].removeprefix("data: "))["task_id"] == "a"
