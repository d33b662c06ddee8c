"""A tick where many pipelines fall due at once (issue 7): their runs are created in one
store transaction (`SchedulingStore.create_runs_many`), on SQLite and PostgreSQL, and every
interval still yields exactly one run: with two schedulers ticking together, with keys
created earlier by backfill, and when a pipeline is paused while the tick runs."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza import pipeline, task
from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.errors import StoreError
from cadenza.core.scheduling import NewRun
from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.cron import interval_key
from cadenza.triggers.loop import Scheduler, pause, unpause

T0 = datetime(2026, 3, 2, 0, 0, 30, tzinfo=UTC)  # a Monday, 30 s past midnight UTC
HOUR = timedelta(hours=1)


@task
def tick_work() -> int:
    return 1


def hourly_pipelines(prefix: str, n: int) -> list[Any]:
    """`n` pipelines due at the top of every UTC hour, in four flavours: "@hourly" in UTC
    and in Europe/Paris, "0 */1 * * *" in New York, and timedelta(hours=1)."""
    kinds: list[tuple[Any, str]] = [("@hourly", "UTC"), ("@hourly", "Europe/Paris"),
                                    ("0 */1 * * *", "America/New_York"),
                                    (timedelta(hours=1), "UTC")]
    out = []
    for i in range(n):
        def body() -> None:
            tick_work()

        schedule, tz = kinds[i % len(kinds)]
        body.__name__ = f"{prefix}_{i:02d}"
        out.append(pipeline(name=body.__name__, schedule=schedule, timezone=tz,
                            start_date="2026-01-01", catchup=False)(body))
    return out


def runs_by_pipeline(settings: Any, prefix: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for run in open_store(settings.database_url).list_runs(limit=100_000):
        if run.pipeline.startswith(prefix):
            out.setdefault(run.pipeline, []).append(run)
    return {p: sorted(rs, key=lambda r: r.logical_date) for p, rs in out.items()}


def backfill_hour(settings: Any, pipes: list[Any], hour: datetime) -> dict[str, str]:
    """Runs for `hour` created as backfill does (key, no high-water mark): pipeline -> run id."""
    from cadenza.engine.api import new_run

    sched = scheduling_store(open_store(settings.database_url))
    out = {}
    for p in pipes:
        run, tis = new_run(p, {}, trigger="backfill", logical_date=hour,
                           data_interval=(hour, hour + HOUR), stored_params={})
        new = NewRun(run=run, task_instances=tis, key=interval_key(hour))
        assert sched.create_runs(p.name, [new]) == [run.run_id]
        out[p.name] = run.run_id
    return out


def test_two_schedulers_ticking_50_due_pipelines_together_create_50_runs_per_hour(
        cadenza_env):
    pipes = hourly_pipelines("batch", 50)
    clock = FakeClock(T0)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    created: list[list[str]] = [[], []]

    def ticker(i: int, s: Scheduler) -> None:
        try:
            for _ in range(3):
                barrier.wait(timeout=60)
                created[i].extend(s.tick().created)
                barrier.wait(timeout=60)
                if i == 0:
                    clock.advance(3600)  # both are between ticks here
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with use_clock(clock):
        a = Scheduler(pipes, max_runs=0)
        b = Scheduler(pipes, max_runs=0)
        threads = [threading.Thread(target=ticker, args=(i, s)) for i, s in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert errors == []
    runs = runs_by_pipeline(cadenza_env, "batch_")
    assert len(runs) == 50
    for name, rs in runs.items():
        # The hours ending at 00:00, 01:00 and 02:00: one run each, whichever scheduler won.
        assert [r.logical_date for r in rs] == [datetime(2026, 3, 1, 23, tzinfo=UTC),
                                                datetime(2026, 3, 2, 0, tzinfo=UTC),
                                                datetime(2026, 3, 2, 1, tzinfo=UTC)], name
        assert all(r.data_interval_end - r.data_interval_start == HOUR for r in rs)
        assert all(r.state is RunState.QUEUED and r.trigger == "schedule" for r in rs)
    every = created[0] + created[1]
    assert len(every) == len(set(every)) == 150  # each run reported by its creator only
    # Every run came with its task instance, in the same transaction.
    store = open_store(cadenza_env.database_url)
    assert all(len(store.get_task_instances(run_id)) == 1 for run_id in every[:10])


def test_a_second_scheduler_ticking_after_the_first_creates_nothing(cadenza_env):
    pipes = hourly_pipelines("again", 50)
    with use_clock(FakeClock(T0)):
        first = Scheduler(pipes, max_runs=0).tick()
        second = Scheduler(pipes, max_runs=0).tick()
    assert len(first.created) == 50
    assert second.created == []
    states = scheduling_store(open_store(cadenza_env.database_url)).list_states()
    assert {states[p.name].last_logical_date for p in pipes} == {
        datetime(2026, 3, 1, 23, tzinfo=UTC)}


def test_intervals_backfilled_earlier_are_skipped_and_the_rest_created_in_one_tick(
        cadenza_env):
    pipes = hourly_pipelines("mixed", 20)
    sched = scheduling_store(open_store(cadenza_env.database_url))
    hour = datetime(2026, 3, 1, 23, tzinfo=UTC)
    key = interval_key(hour)
    # Every other pipeline already has a run for the due hour.
    taken = backfill_hour(cadenza_env, pipes[::2], hour)
    with use_clock(FakeClock(T0)):
        report = Scheduler(pipes, max_runs=0).tick()
    assert len(report.created) == 10
    runs = runs_by_pipeline(cadenza_env, "mixed_")
    assert all(len(rs) == 1 for rs in runs.values()) and len(runs) == 20
    assert {p: rs[0].run_id for p, rs in runs.items() if p in taken} == taken
    assert sched.runs_for_keys(pipes[1].name, [key]) == {key: runs[pipes[1].name][0].run_id}


def test_a_duplicate_key_that_slips_through_aborts_the_schedulers_whole_batch(
        cadenza_env, monkeypatch):
    pipes = hourly_pipelines("dup", 10)
    store = open_store(cadenza_env.database_url)
    backfill_hour(cadenza_env, pipes[:1], datetime(2026, 3, 1, 23, tzinfo=UTC))
    with use_clock(FakeClock(T0)):
        sched = Scheduler(pipes, max_runs=0)
        # Bypassing the existence check, the primary key of run_keys refuses the duplicate
        # (guarantee 1), and nothing of the batch is written.
        monkeypatch.setattr(sched.sched, "_existing_pairs", lambda conn, wanted: set())
        with pytest.raises(StoreError):
            sched.tick()
    counts = Counter(r.pipeline for r in store.list_runs(limit=1000))
    assert counts == {"dup_00": 1}


def test_a_pipeline_paused_during_the_scheduler_tick_stays_due_until_unpaused(
        cadenza_env, monkeypatch):
    pipes = hourly_pipelines("race", 4)
    with use_clock(FakeClock(T0)):
        sched = Scheduler(pipes, max_runs=0)
        real = sched.sched.create_runs_many

        def paused_meanwhile(*args: Any, **kwargs: Any) -> list[str]:
            pause("race_01")  # after the scheduler read the states, before its transaction
            return real(*args, **kwargs)

        monkeypatch.setattr(sched.sched, "create_runs_many", paused_meanwhile)
        assert len(sched.tick().created) == 3
        monkeypatch.setattr(sched.sched, "create_runs_many", real)
        assert sched.tick().created == []  # still paused
        unpause("race_01")
        (run_id,) = sched.tick().created  # same instant: it was kept due
    runs = runs_by_pipeline(cadenza_env, "race_")
    assert runs["race_01"][0].run_id == run_id
    assert runs["race_01"][0].logical_date == datetime(2026, 3, 1, 23, tzinfo=UTC)


def queued(run_id: str, pipeline: str, key: str) -> NewRun:
    from cadenza.core.records import RunRecord, TaskInstanceRecord

    run = RunRecord(run_id=run_id, pipeline=pipeline, state=RunState.QUEUED, created_at=T0)
    return NewRun(run=run, key=key, task_instances=[TaskInstanceRecord(run_id=run_id,
                                                                       task_id="t")])


def test_scheduling_many_pipelines_in_one_transaction_moves_marks_forward_skips_paused(store):
    sched = scheduling_store(store)
    day = timedelta(days=1)
    assert sched.create_runs_many([("a", [queued("a1", "a", "k1")], T0 + 2 * day),
                                   ("b", [queued("b1", "b", "k1")], T0)]) == ["a1", "b1"]
    # An older mark does not lower a's; a key already there creates nothing.
    assert sched.create_runs_many([("a", [queued("a2", "a", "k2")], T0 + day),
                                   ("b", [queued("b2", "b", "k1")], T0 + day)]) == ["a2"]
    marks = {p: (s.paused, s.last_logical_date)
             for p, s in sched.list_states(["a", "b", "c"]).items()}
    assert marks == {"a": (False, T0 + 2 * day), "b": (False, T0 + day)}
    sched.set_paused("c", True)
    paused: set[str] = set()
    assert sched.create_runs_many([("c", [queued("c1", "c", "k1")], T0),
                                   ("a", [queued("a3", "a", "k3")], T0 + 3 * day)],
                                  paused=paused) == ["a3"]
    assert paused == {"c"}
    assert sched.get_state("c").paused and sched.get_state("c").last_logical_date is None
    assert sched.create_runs_many([("c", [queued("c1", "c", "k1")], T0)],
                                  unless_paused=False) == ["c1"]
    assert sorted(r.run_id for r in store.list_runs()) == ["a1", "a2", "a3", "b1", "c1"]
