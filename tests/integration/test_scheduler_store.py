"""The scheduling store (store/scheduling.py) on SQLite and PostgreSQL: the unique keys
behind "exactly one run", claims under max_active_runs, stale leases, pause state."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.scheduling import NewRun, TriggerEventRecord
from cadenza.core.states import RunState
from cadenza.store.scheduling import scheduling_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new(run_id: str, pipeline: str = "p", key: str | None = None, at: datetime = T0) -> NewRun:
    run = RunRecord(run_id=run_id, pipeline=pipeline, state=RunState.QUEUED, created_at=at)
    return NewRun(run=run, key=key,
                  task_instances=[TaskInstanceRecord(run_id=run_id, task_id="t")])


def test_a_key_makes_at_most_one_run_even_without_the_lock(store):
    sched = scheduling_store(store)
    assert sched.create_runs("p", [new("r1", key="interval:a")]) == ["r1"]
    assert sched.create_runs("p", [new("r2", key="interval:a"), new("r3", key="interval:b")]) == ["r3"]
    # Bypassing the existence check, the primary key still refuses the duplicate (1).
    with pytest.raises(IntegrityError), sched._engine.begin() as conn:
        sched._insert_runs(conn, [new("r4", key="interval:a")])
    assert sorted(r.run_id for r in store.list_runs()) == ["r1", "r3"]
    assert sched.runs_for_keys("p", ["interval:a", "interval:b", "x"]) == {
        "interval:a": "r1", "interval:b": "r3"}


def test_high_water_only_moves_forward_and_pause_blocks_scheduled_creation(store):
    sched = scheduling_store(store)
    sched.create_runs("p", [new("r1", key="k1")], high_water=T0 + timedelta(days=2))
    sched.create_runs("p", [new("r2", key="k2")], high_water=T0 + timedelta(days=1))
    assert sched.get_state("p").last_logical_date == T0 + timedelta(days=2)
    assert sched.set_paused("p", True).paused
    assert sched.create_runs("p", [new("r3", key="k3")], unless_paused=True) == []
    assert sched.create_runs("p", [new("r3", key="k3")]) == ["r3"]  # backfill ignores pause
    assert not sched.set_paused("p", False).paused


def test_a_message_is_recorded_once_with_its_run(store):
    sched = scheduling_store(store)
    event = TriggerEventRecord(pipeline="p", source="redis://h:1/0?stream=s", message_id="1-0",
                               status="run", payload={"n": 1})
    first = sched.record_event(event, new("r1"))
    again = sched.record_event(event, new("r2"))
    assert first.created and not again.created
    assert again.event.run_id == "r1"
    assert [r.run_id for r in store.list_runs()] == ["r1"]
    assert sched.count_events("p") == 1


def test_claims_respect_max_active_runs_across_concurrent_claimers(store):
    sched = scheduling_store(store)
    sched.create_runs("capped", [new(f"c{i}", "capped", at=T0 + timedelta(seconds=i))
                                 for i in range(4)])
    sched.create_runs("free", [new(f"f{i}", "free") for i in range(3)])
    claimed: list[list[RunRecord]] = []
    barrier = threading.Barrier(3)

    def claim(i: int) -> None:
        barrier.wait(timeout=30)
        claimed.append(sched.claim_queued(f"d{i}", {"capped": 2, "free": None}, limit=10))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    got = [r for batch in claimed for r in batch]
    assert len({r.run_id for r in got}) == len(got)  # never claimed twice
    capped = sorted(r.run_id for r in got if r.pipeline == "capped")
    assert len(capped) <= 2
    assert sorted(r.run_id for r in got if r.pipeline == "free") == ["f0", "f1", "f2"]
    assert sched.count_active("capped") == len(capped)
    more = sched.claim_queued("d9", {"capped": 2}, limit=10)
    assert len(capped) + len(more) == 2
    assert sorted(capped + [r.run_id for r in more]) == ["c0", "c1"]  # oldest first


def test_stale_runs_are_those_whose_lease_expired(store):
    sched = scheduling_store(store)
    clock = FakeClock(T0)
    with use_clock(clock):
        sched.create_runs("p", [new("r1"), new("r2")])
        (r1,) = [r for r in sched.claim_queued("dead", {"p": None}, limit=1)]
        assert sched.stale_runs(["p"], lease_s=30) == []
        clock.advance(31)
        assert [r.run_id for r in sched.stale_runs(["p"], lease_s=30)] == [r1.run_id]
        assert sched.stale_runs(["other"], lease_s=30) == []
