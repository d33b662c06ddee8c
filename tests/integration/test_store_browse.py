"""Keyset-paginated reads for the API (store/browse.py) on SQLite and PostgreSQL: every page
continues where the last ended, with no repeats and no gaps, rows added meanwhile included
in order; filters; the runs an asset version triggered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cadenza.core.errors import UsageError
from cadenza.core.records import AttemptRecord, RunRecord, Slice, TaskInstanceRecord, WriteBatch
from cadenza.core.scheduling import SlaMissRecord, TriggerEventRecord
from cadenza.core.states import RunState, TaskState
from cadenza.store import RunStore, open_store
from cadenza.store.browse import browse_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.loop import Scheduler
from tests.pipelines import sched_assets as A

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def store(cadenza_env) -> RunStore:  # type: ignore[no-untyped-def]
    return open_store(cadenza_env.database_url)


def all_pages(fetch, limit: int) -> list:  # type: ignore[no-untyped-def]
    out, after, pages = [], None, 0
    while True:
        page: Slice = fetch(after=after, limit=limit)
        out.extend(page.items)
        pages += 1
        assert len(page.items) <= limit
        if page.after is None:
            return out
        assert len(page.items) == limit
        after = page.after
        assert pages < 100


def make_run(store: RunStore, run_id: str, at: datetime) -> None:
    store.create_run(RunRecord(run_id=run_id, pipeline="p", state=RunState.SUCCESS,
                               created_at=at), [TaskInstanceRecord(run_id=run_id, task_id="t")])


def test_pools_page_by_name(store: RunStore) -> None:
    for i in range(7):
        store.set_pool(f"pool{i}", i)
    names = [p.name for p in all_pages(browse_store(store).pools_page, 3)]
    assert names == sorted(set(names))  # in order, none twice
    assert {f"pool{i}" for i in range(7)} <= set(names)


def test_events_newest_first_with_filters_and_ties(store: RunStore) -> None:
    sched = scheduling_store(store)
    for i in range(9):
        # Three messages share each received_at: the id breaks the tie.
        sched.record_event(TriggerEventRecord(
            pipeline="a" if i % 2 else "b", source="redis://x", message_id=f"m{i}",
            status="invalid" if i == 4 else "run", error="bad" if i == 4 else None,
            received_at=T0 + timedelta(minutes=i // 3)))
    browse = browse_store(store)
    got = all_pages(browse.events_page, 2)
    assert [e.message_id for e in got] == ["m8", "m7", "m6", "m5", "m4", "m3", "m2", "m1", "m0"]
    only_a = all_pages(lambda **kw: browse.events_page(pipeline="a", **kw), 2)
    assert [e.message_id for e in only_a] == ["m7", "m5", "m3", "m1"]
    assert [e.message_id for e in browse.events_page(status="invalid").items] == ["m4"]
    window = browse.events_page(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=2))
    assert [e.message_id for e in window.items] == ["m5", "m4", "m3"]
    with pytest.raises(UsageError, match="cursor"):
        browse.events_page(after=("yesterday", 3))


def test_sla_misses_newest_first(store: RunStore) -> None:
    sched = scheduling_store(store)
    for i in range(5):
        make_run(store, f"r{i}", T0)
        sched.record_sla_miss(SlaMissRecord(
            run_id=f"r{i}", pipeline="p" if i < 4 else "q", sla_s=60.0,
            deadline_at=T0 + timedelta(minutes=1), detected_at=T0 + timedelta(minutes=i // 2)))
    browse = browse_store(store)
    got = all_pages(browse.sla_misses_page, 2)
    assert [m.run_id for m in got] == ["r4", "r3", "r2", "r1", "r0"]
    assert [m.run_id for m in browse.sla_misses_page(pipeline="q").items] == ["r4"]
    assert got[0].detected_at == T0 + timedelta(minutes=2) and got[0].sla_s == 60.0


def test_assets_versions_and_the_runs_a_version_triggered(store: RunStore) -> None:
    sched = Scheduler([A.train_on_any], max_runs=0)
    sched.tick()
    A.make_features.run(executor="inline")
    sched.tick()  # train_on_any consumes features v1
    A.make_features.run(executor="inline")
    A.make_labels.run(executor="inline")
    sched.tick()  # ... then features v2 and labels v1 in one run
    browse = browse_store(store)
    assets = all_pages(browse.assets_page, 1)
    assert [(a.name, a.latest_version, a.versions) for a in assets] == [
        ("sched/features", 2, 2), ("sched/labels", 1, 1)]
    assert all(a.updated_at is not None and a.updated_at.tzinfo is not None for a in assets)
    assert [a.name for a in browse.assets_page(prefix="sched/l").items] == ["sched/labels"]
    assert browse.assets_page(prefix="sched%").items == []  # LIKE wildcards are literal
    versions = all_pages(lambda **kw: browse.asset_versions_page("sched/features", **kw), 1)
    assert [v.version for v in versions] == [2, 1]
    assert all(v.task_id == "build_features" for v in versions)
    runs = store.list_runs(pipeline="train_on_any", limit=10)
    by_assets = {tuple(sorted(r.extra["trigger"]["assets"].items())): r.run_id for r in runs}
    v1 = browse.runs_triggered_by("sched/features", 1).items
    assert [r.run_id for r in v1] == [by_assets[(("sched/features", 1),)]]
    v2 = browse.runs_triggered_by("sched/features", 2).items
    both = by_assets[(("sched/features", 2), ("sched/labels", 1))]
    assert [r.run_id for r in v2] == [both]
    assert [r.run_id for r in browse.runs_triggered_by("sched/labels", 1).items] == [both]
    assert browse.runs_triggered_by("sched/features", 3).items == []
    assert browse.runs_triggered_by("sched/feature", 1).items == []  # a name prefix is not it


def test_attempts_page(store: RunStore) -> None:
    make_run(store, "ra", T0)
    store.write(WriteBatch(attempts=[
        AttemptRecord(run_id="ra", task_id="t", map_index=-1, attempt=n,
                      state=TaskState.UP_FOR_RETRY if n < 3 else TaskState.FAILED,
                      started_at=T0, ended_at=T0) for n in (1, 2, 3)]))
    got = all_pages(lambda **kw: browse_store(store).attempts_page("ra", "t", -1, **kw), 2)
    assert [a.attempt for a in got] == [1, 2, 3] and got[-1].state is TaskState.FAILED
