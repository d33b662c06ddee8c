"""SLA (SPEC §4): a run not finished within `sla` of its creation fires on_sla_miss once
(whichever scheduler notices), increments a metric and is recorded."""

from __future__ import annotations

from datetime import UTC, datetime

from cadenza.core.clock import FakeClock, use_clock
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.loop import Scheduler
from cadenza.triggers.metrics import sample
from tests.pipelines import sched_sla


def misses(settings):
    return scheduling_store(open_store(settings.database_url)).list_sla_misses()


def test_an_unfinished_run_past_its_sla_fires_on_sla_miss_once(cadenza_env):
    sched_sla.MISSES.clear()
    before = sample("cadenza_sla_misses_total", {"pipeline": "hourly_with_sla"})
    clock = FakeClock(datetime(2026, 1, 1, 1, 0, 1, tzinfo=UTC))
    with use_clock(clock):
        a = Scheduler([sched_sla.hourly_with_sla], max_runs=0)  # runs stay queued
        b = Scheduler([sched_sla.hourly_with_sla], max_runs=0)
        (run_id,) = a.tick().created
        clock.advance(9 * 60)
        assert a.tick().sla_missed == []
        clock.advance(2 * 60)
        assert a.tick().sla_missed == [run_id]
        assert b.tick().sla_missed == []  # already recorded: b does not fire again
        clock.advance(10 * 60)
        assert a.tick().sla_missed == [] and b.tick().sla_missed == []
    assert sched_sla.MISSES == [("hourly_with_sla", run_id)]
    assert sample("cadenza_sla_misses_total", {"pipeline": "hourly_with_sla"}) == before + 1
    (miss,) = misses(cadenza_env)
    assert miss.run_id == run_id and miss.sla_s == 600
    assert miss.deadline_at == datetime(2026, 1, 1, 1, 10, 1, tzinfo=UTC)


def test_a_run_that_finished_late_is_a_miss_and_one_in_time_is_not(cadenza_env):
    sched_sla.MISSES.clear()
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with use_clock(clock):
        sched = Scheduler([sched_sla.slow_with_sla, sched_sla.quick_with_sla], max_runs=0)
        sched.tick()
        quick = sched_sla.quick_with_sla.run(executor="inline")
        slow = sched_sla.slow_with_sla.run(executor="inline")  # ends 15 minutes later
        clock.advance(60)
        assert sched.tick().sla_missed == [slow.run_id]
        clock.advance(3600)
        assert sched.tick().sla_missed == []
    assert sched_sla.MISSES == [("slow_with_sla", slow.run_id)]
    assert [m.run_id for m in misses(cadenza_env)] == [slow.run_id]
    assert quick.run_id not in [m.run_id for m in misses(cadenza_env)]
