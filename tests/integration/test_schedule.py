"""Time schedules through the scheduler's tick (SPEC §4): cron/preset/timedelta in a time
zone, DST days, logical_date and data_interval in the task context, start/end dates,
catchup, max_active_runs, pause, and exactly-once creation. Time is a FakeClock."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.cron import to_utc, zone
from cadenza.triggers.loop import Scheduler, pause, unpause
from tests.fixtures.waiting import wait_for
from tests.pipelines import sched_time


def runs_of(settings, pipeline: str):
    store = open_store(settings.database_url)
    return sorted(store.list_runs(pipeline=pipeline, limit=10_000), key=lambda r: r.logical_date)


def output(settings, run_id: str, task_id: str = "record_interval"):
    ti = open_store(settings.database_url).get_task_instance(run_id, task_id)
    assert ti is not None and ti.output is not None
    return ti.output.value


def local(t: datetime, tz: str) -> str:
    return t.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M%z")


def test_due_intervals_run_once_each_with_logical_date_and_interval_in_context(cadenza_env):
    clock = FakeClock(to_utc("2026-03-31T00:30", "Europe/Paris"))
    with use_clock(clock):
        sched = Scheduler([sched_time.daily_paris], executor="inline")
        report = sched.run_once(timeout_s=60)
        assert len(report.created) == 4
        again = sched.tick()
        assert again.created == [] and again.started == []
    runs = runs_of(cadenza_env, "daily_paris")
    assert [local(r.logical_date, "Europe/Paris") for r in runs] == [
        "2026-03-27 00:00+0100", "2026-03-28 00:00+0100", "2026-03-29 00:00+0100",
        "2026-03-30 00:00+0200"]
    assert all(r.state is RunState.SUCCESS and r.trigger == "schedule" for r in runs)
    for r in runs:
        assert r.data_interval_start == r.logical_date
        got = output(cadenza_env, r.run_id)
        assert got["logical_date"] == r.logical_date.isoformat()
        assert (got["start"], got["end"]) == (r.data_interval_start.isoformat(),
                                              r.data_interval_end.isoformat())
    # The spring-forward day lasts 23 hours; the intervals tile the time line.
    assert runs[2].data_interval_end - runs[2].data_interval_start == timedelta(hours=23)
    assert all(a.data_interval_end == b.data_interval_start for a, b in itertools.pairwise(runs))


def test_hourly_on_the_fall_back_day_makes_25_runs_with_no_duplicate(cadenza_env):
    with use_clock(FakeClock(to_utc("2026-10-26T00:00", "Europe/Paris"))):
        Scheduler([sched_time.hourly_paris], max_runs=0).tick()
    runs = runs_of(cadenza_env, "hourly_paris")
    starts = [r.logical_date for r in runs]
    assert len(starts) == len(set(starts)) == 26  # 23:00 on the 24th, then 25 on the 25th
    on_the_day = [s for s in starts if local(s, "Europe/Paris").startswith("2026-10-25")]
    assert len(on_the_day) == 25
    assert all(r.data_interval_end - r.data_interval_start == timedelta(hours=1) for r in runs)
    labels = [local(s, "Europe/Paris") for s in starts]
    assert "2026-10-25 02:00+0200" in labels and "2026-10-25 02:00+0100" in labels


def test_start_and_end_date_bound_the_runs_and_a_skipped_time_runs_after_the_jump(cadenza_env):
    with use_clock(FakeClock(to_utc("2026-03-20"))):
        Scheduler([sched_time.bounded_new_york], max_runs=0).tick()
    runs = runs_of(cadenza_env, "bounded_new_york")
    assert [local(r.logical_date, "America/New_York") for r in runs] == [
        "2026-03-06 02:30-0500", "2026-03-07 02:30-0500", "2026-03-08 03:30-0400",
        "2026-03-09 02:30-0400"]  # end_date 2026-03-10 is its midnight: 02:30 is after it


def test_without_catchup_only_the_latest_interval_runs_then_each_new_one(cadenza_env):
    clock = FakeClock(datetime(2026, 1, 10, 5, tzinfo=UTC))
    with use_clock(clock):
        sched = Scheduler([sched_time.no_catchup], max_runs=0)
        assert len(sched.tick().created) == 1
        clock.advance(3600)
        assert sched.tick().created == []
        clock.advance(86400)
        assert len(sched.tick().created) == 1
    runs = runs_of(cadenza_env, "no_catchup")
    assert [r.logical_date.date().isoformat() for r in runs] == ["2026-01-09", "2026-01-10"]


def test_timedelta_schedule_is_anchored_at_start_date(cadenza_env):
    with use_clock(FakeClock(datetime(2026, 1, 2, 1, tzinfo=UTC))):
        Scheduler([sched_time.every_six_hours], max_runs=0).tick()
    runs = runs_of(cadenza_env, "every_six_hours")
    assert [r.logical_date.hour for r in runs] == [0, 6, 12, 18]
    assert all(r.data_interval_end - r.data_interval_start == timedelta(hours=6) for r in runs)


def test_a_paused_pipeline_creates_nothing_until_unpaused(cadenza_env):
    clock = FakeClock(datetime(2026, 1, 10, 5, tzinfo=UTC))
    with use_clock(clock):
        pause("no_catchup")
        sched = Scheduler([sched_time.no_catchup], max_runs=0)
        assert sched.tick().created == []
        clock.advance(86400)
        assert sched.tick().created == []
        assert runs_of(cadenza_env, "no_catchup") == []
        unpause("no_catchup")
        assert len(sched.tick().created) == 1


def test_max_active_runs_keeps_further_runs_queued(cadenza_env):
    sched_time.GATE.clear()
    store = open_store(cadenza_env.database_url)
    with use_clock(FakeClock(datetime(2026, 1, 1, 3, 0, 1, tzinfo=UTC))):
        sched = Scheduler([sched_time.gated], executor="inline")
        try:
            report = sched.tick()
            assert len(report.created) == 3 and len(report.started) == 1
            wait_for(lambda: [r.state for r in store.list_runs(pipeline="gated")].count(
                RunState.RUNNING) == 1)
            assert sched.tick().started == []
            states = Counter(r.state for r in store.list_runs(pipeline="gated"))
            assert states == {RunState.RUNNING: 1, RunState.QUEUED: 2}
            assert scheduling_store(store).count_active("gated") == 1
        finally:
            sched_time.GATE.set()
        sched.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "gated")
    assert [r.state for r in runs] == [RunState.SUCCESS] * 3
    # Never two at once: each started after the previous one ended.
    for a, b in itertools.pairwise(runs):
        assert b.started_at >= a.ended_at


def test_two_schedulers_ticking_together_create_each_interval_exactly_once(cadenza_env):
    clock = FakeClock(to_utc("2026-10-26T00:00", "Europe/Paris"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def ticker(s: Scheduler) -> None:
        try:
            for _ in range(5):
                barrier.wait(timeout=30)
                s.tick()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with use_clock(clock):
        a = Scheduler([sched_time.hourly_paris, sched_time.daily_paris], max_runs=0)
        b = Scheduler([sched_time.hourly_paris, sched_time.daily_paris], max_runs=0)
        threads = [threading.Thread(target=ticker, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    hourly = runs_of(cadenza_env, "hourly_paris")
    assert len(hourly) == len({r.logical_date for r in hourly}) == 26
    daily = runs_of(cadenza_env, "daily_paris")
    assert len(daily) == len({r.logical_date for r in daily})


def test_a_pipeline_with_required_parameters_is_not_scheduled(cadenza_env, caplog):
    with use_clock(FakeClock(datetime(2026, 1, 3, tzinfo=UTC))):
        report = Scheduler([sched_time.needs_param], max_runs=0).tick()
    assert report.created == []
    assert "cannot be scheduled" in caplog.text


@pytest.mark.parametrize("executor", ["threads"])
def test_scheduled_runs_are_driven_on_the_schedulers_executor(cadenza_env, executor):
    with use_clock(FakeClock(datetime(2026, 1, 2, 1, tzinfo=UTC))):
        Scheduler([sched_time.every_six_hours], executor=executor).run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "every_six_hours")
    assert len(runs) == 4
    assert all(r.state is RunState.SUCCESS and r.executor == executor for r in runs)
    assert all(r.driver_id is None for r in runs)
