"""Backfill (SPEC §4): creates the missing interval runs of a range, idempotently, shares
its keys with the scheduler, drives at most max_active runs at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadenza import pipeline, task
from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.errors import CadenzaError
from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.triggers.backfill import BackfillProgress, backfill
from cadenza.triggers.cron import to_utc
from cadenza.triggers.loop import Scheduler, pause
from tests.fixtures.waiting import wait_for
from tests.pipelines import sched_time


def runs_of(settings, name: str):
    return sorted(open_store(settings.database_url).list_runs(pipeline=name, limit=10_000),
                  key=lambda r: r.logical_date)


def test_backfill_creates_every_interval_once_and_a_second_call_creates_nothing(cadenza_env):
    progress: list[BackfillProgress] = []
    with use_clock(FakeClock(to_utc("2026-04-15"))):
        first = backfill(sched_time.daily_paris, "2026-03-27", "2026-04-05", max_active=2,
                         executor="inline", on_progress=progress.append)
        second = backfill(sched_time.daily_paris, "2026-03-27", "2026-04-05")
    assert len(first.created) == 10 and first.existing == 0 and first.ok
    assert second.created == [] and second.existing == 10 and second.states == {}
    runs = runs_of(cadenza_env, "daily_paris")
    assert len(runs) == 10
    assert all(r.trigger == "backfill" and r.state is RunState.SUCCESS for r in runs)
    assert progress[0] == BackfillProgress(total=10, done=0)
    assert [p.done for p in progress[1:]] == list(range(1, 11))
    # At most max_active runs overlapped.
    for r in runs:
        overlapping = [o for o in runs if o.started_at < r.ended_at and o.ended_at > r.started_at]
        assert len(overlapping) <= 2


def test_backfill_and_the_scheduler_never_run_an_interval_twice(cadenza_env):
    with use_clock(FakeClock(to_utc("2026-03-31T00:30", "Europe/Paris"))):
        result = backfill(sched_time.daily_paris, "2026-03-28", "2026-03-29", drive=False)
        assert len(result.created) == 2
        created = Scheduler([sched_time.daily_paris], max_runs=0).tick().created
        assert len(created) == 2  # the 27th and the 30th
        assert backfill(sched_time.daily_paris, "2026-03-01", "2026-04-30",
                        drive=False).created == []
    runs = runs_of(cadenza_env, "daily_paris")
    assert len(runs) == len({r.logical_date for r in runs}) == 4
    assert [r.trigger for r in runs] == ["schedule", "backfill", "backfill", "schedule"]
    assert all(r.state is RunState.QUEUED for r in runs)


def test_backfill_creates_only_intervals_that_have_ended_within_the_pipeline_bounds(cadenza_env):
    with use_clock(FakeClock(datetime(2026, 1, 1, 11, 59, tzinfo=UTC))):
        result = backfill(sched_time.every_six_hours, "2025-12-30", "2026-01-05", drive=False)
    assert [i.start.hour for i in result.intervals] == [0]  # starts at start_date; 06:00 not over
    with use_clock(FakeClock(to_utc("2026-04-01"))):
        bounded = backfill(sched_time.bounded_new_york, "2026-01-01", "2026-12-31", drive=False)
    assert len(bounded.created) == 4  # end_date is the last logical date


def test_backfill_of_a_paused_pipeline_still_creates_and_runs(cadenza_env):
    pause("every_six_hours")
    with use_clock(FakeClock(datetime(2026, 1, 2, 1, tzinfo=UTC))):
        result = backfill(sched_time.every_six_hours, "2026-01-01", "2026-01-01T18:00",
                          executor="inline")
    assert len(result.created) == 4 and result.ok


def test_backfill_needs_a_schedule(cadenza_env):
    @task
    def t() -> int:
        return 1

    @pipeline
    def unscheduled():
        t()

    with pytest.raises(CadenzaError, match="needs a pipeline with a schedule"):
        backfill(unscheduled, "2026-01-01", "2026-01-02")


def test_a_second_backfill_drives_the_runs_an_earlier_one_left_queued(cadenza_env):
    with use_clock(FakeClock(to_utc("2026-04-15"))):
        only_created = backfill(sched_time.daily_paris, "2026-04-01", "2026-04-03",
                                drive=False)
        assert len(only_created.created) == 3 and only_created.states == {}
        assert {r.state for r in runs_of(cadenza_env, "daily_paris")} == {RunState.QUEUED}
        again = backfill(sched_time.daily_paris, "2026-03-31", "2026-04-03",
                         executor="inline")
        third = backfill(sched_time.daily_paris, "2026-03-31", "2026-04-03")
    assert len(again.created) == 1 and again.existing == 3
    assert again.queued == only_created.created
    assert set(again.states) == {*only_created.created, *again.created} and again.ok
    assert third.created == [] and third.queued == [] and third.states == {}
    assert {r.state for r in runs_of(cadenza_env, "daily_paris")} == {RunState.SUCCESS}


def test_backfill_waits_for_max_active_runs_held_by_another_driver(cadenza_env, monkeypatch):
    """`gated` has max_active_runs=1: while a scheduler drives one of its runs, a backfill
    starts none of its own; it goes on once that run has ended."""
    import threading
    from collections import Counter

    from cadenza.engine.api import fail_run, new_run
    from cadenza.store.scheduling import SchedulingStore, scheduling_store

    refused: Counter[str] = Counter()  # run id -> claims that came back empty
    real_claim = SchedulingStore.claim_queued

    def counting_claim(self, driver_id, caps, *, limit=16, only=None):
        got = real_claim(self, driver_id, caps, limit=limit, only=only)
        if not got:
            refused.update(only or [])
        return got

    monkeypatch.setattr(SchedulingStore, "claim_queued", counting_claim)
    store = open_store(cadenza_env.database_url)
    sched = scheduling_store(store)
    other, tis = new_run(sched_time.gated, {}, trigger="schedule")
    store.create_run(other, tis)
    (held,) = sched.claim_queued("another-scheduler", {"gated": 1}, only=[other.run_id])
    sched_time.GATE.set()
    result: dict = {}
    with use_clock(FakeClock(to_utc("2026-01-01T03:30"))):
        t = threading.Thread(target=lambda: result.setdefault("r", backfill(
            sched_time.gated, "2026-01-01T00:00", "2026-01-01T01:00", max_active=2,
            executor="inline")))
        t.start()

        def mine() -> list:
            return [r for r in store.list_runs(pipeline="gated") if r.run_id != other.run_id]

        # Each of its two runs has asked for a slot and been refused (the cap is held).
        wait_for(lambda: len(mine()) == 2 and all(refused[r.run_id] >= 2 for r in mine()),
                 what="the backfill to be refused a slot for both runs")
        assert {r.state for r in mine()} == {RunState.QUEUED}
        assert fail_run(held, error="the other scheduler gave up")  # its slot is free
        t.join(60)
    r = result["r"]
    assert r.ok and len(r.states) == 2
    runs = [x for x in store.list_runs(pipeline="gated") if x.run_id != other.run_id]
    a, b = sorted(runs, key=lambda x: x.started_at)
    assert a.ended_at <= b.started_at  # one at a time, as max_active_runs=1 says


def test_backfill_names_failed_intervals_and_rerun_failed_resumes_only_them(cadenza_env):
    sched_time.BAD_DAYS.clear()
    sched_time.BAD_DAYS.update({2, 4})
    try:
        with use_clock(FakeClock(to_utc("2026-03-01"))):
            first = backfill(sched_time.daily_mendable, "2026-02-01", "2026-02-05",
                             executor="inline")
            assert not first.ok
            assert [(f.interval.start.day, str(f.state)) for f in first.failed] == [
                (2, "failed"), (4, "failed")]
            failed_ids = [f.run_id for f in first.failed]
            # A plain second call creates nothing, drives nothing, and still reports them.
            again = backfill(sched_time.daily_mendable, "2026-02-01", "2026-02-05")
            assert again.created == [] and again.states == {} and not again.ok
            assert [f.run_id for f in again.failed] == failed_ids
            sched_time.BAD_DAYS.clear()
            rerun = backfill(sched_time.daily_mendable, "2026-02-01", "2026-02-05",
                             executor="inline", rerun_failed=True)
    finally:
        sched_time.BAD_DAYS.clear()
    assert rerun.created == [] and rerun.rerun == failed_ids
    assert rerun.ok and rerun.failed == []
    assert {rid: str(s) for rid, s in rerun.states.items()} == dict.fromkeys(
        failed_ids, "success")
    runs = runs_of(cadenza_env, "daily_mendable")
    assert len(runs) == 5 and {r.state for r in runs} == {RunState.SUCCESS}
    # Resumed in place: the same runs, not new ones.
    assert {r.run_id for r in runs} >= set(failed_ids)


def test_backfill_reports_the_dates_it_dropped_before_start_date(cadenza_env):
    with use_clock(FakeClock(to_utc("2026-03-01"))):
        result = backfill(sched_time.daily_mendable, "2026-01-29", "2026-02-02", drive=False)
    assert [i.start.date().isoformat() for i in result.dropped] == [
        "2026-01-29", "2026-01-30", "2026-01-31"]
    assert [i.start.day for i in result.intervals] == [1, 2]
