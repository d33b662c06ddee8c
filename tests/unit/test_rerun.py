"""Which tasks a retry reruns (engine/rerun.py, cases 1-3), and the scheduler's next-run
time the server hands the API (triggers/cron.next_run_at). Pure: no store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadenza import pipeline, task
from cadenza.core.errors import StateConflict, TaskNotFound
from cadenza.core.scheduling import ScheduleState
from cadenza.core.states import TaskState as S
from cadenza.engine.rerun import downstream_closure, tasks_to_rerun
from cadenza.triggers.cron import next_run_at

#   a -> b -> c        (b failed, c upstream_failed)
#   a -> d             (d success)
#   e                  (e failed, independent)
DOWN = {"a": ["b", "d"], "b": ["c"], "c": [], "d": [], "e": []}
STATES = {"a": S.SUCCESS, "b": S.FAILED, "c": S.UPSTREAM_FAILED, "d": S.SUCCESS,
          "e": S.FAILED}


def rerun(task_id: str | None, downstream_too: bool = False) -> list[str]:
    return tasks_to_rerun(STATES, DOWN, task_id=task_id, downstream_too=downstream_too,
                          run_id="r1")


def test_every_failed_task_when_no_task_is_named() -> None:
    assert rerun(None) == ["b", "c", "e"]


def test_one_task_brings_its_blocked_downstream_but_not_other_failures() -> None:
    assert rerun("b") == ["b", "c"]
    assert rerun("e") == ["e"]


def test_a_task_with_downstream_reruns_successful_downstream_too() -> None:
    assert rerun("a", downstream_too=True) == ["a", "b", "c", "d"]
    assert downstream_closure(DOWN, "a") == {"b", "c", "d"}


def test_refusals_say_why() -> None:
    with pytest.raises(StateConflict, match="task 'a' of run r1 ended success"):
        rerun("a")
    with pytest.raises(TaskNotFound, match="Did you mean 'e'"):
        rerun("ee")
    ok = {t: S.SUCCESS for t in STATES}
    with pytest.raises(StateConflict, match="nothing to retry"):
        tasks_to_rerun(ok, DOWN, task_id=None, downstream_too=False, run_id="r1")


@task
def tick() -> int:
    return 1


@pipeline(schedule="@daily", start_date="2026-01-01")
def daily_job():
    tick()


@pipeline(schedule="@daily", start_date="2026-01-01", catchup=True)
def catching_up():
    tick()


@pipeline
def unscheduled_job():
    tick()


def test_next_run_is_the_end_of_the_interval_after_the_newest_created_one() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    state = ScheduleState(pipeline="daily_job",
                          last_logical_date=datetime(2026, 12, 5, tzinfo=UTC))
    assert next_run_at(daily_job, state, now) == datetime(2026, 12, 7, tzinfo=UTC)
    assert next_run_at(unscheduled_job, None, now) is None
    # Nothing created yet and no catchup: the latest interval is due (since midnight).
    assert next_run_at(daily_job, None, now) == datetime(2026, 12, 6, tzinfo=UTC)
    # With catchup, the oldest missing one: the first interval from start_date.
    assert next_run_at(catching_up, None, now) == datetime(2026, 1, 2, tzinfo=UTC)
    # An old newest interval without catchup: the latest again, not the one after it.
    stale = ScheduleState(pipeline="daily_job",
                          last_logical_date=datetime(2026, 11, 1, tzinfo=UTC))
    assert next_run_at(daily_job, stale, now) == datetime(2026, 12, 6, tzinfo=UTC)
