"""Driver leases: claim_run / renew_lease / release_run on SQLite and PostgreSQL, including
claimers racing from several threads and several processes."""

from __future__ import annotations

import multiprocessing
import secrets
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.errors import RunNotFound
from cadenza.core.records import RunRecord
from cadenza.core.states import RunState
from cadenza.store import RunStore, open_store

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def make_run(**kw: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": f"run-{secrets.token_hex(5)}",
        "pipeline": "p",
        "state": RunState.QUEUED,
        "created_at": T0,
    }
    fields.update(kw)
    return RunRecord(**fields)


def test_claim_free_run_sets_driver_and_heartbeat(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    with use_clock(FakeClock(T0)):
        assert store.claim_run(run.run_id, "d1", lease_s=30)
    got = store.get_run(run.run_id)
    assert (got.driver_id, got.heartbeat_at) == ("d1", T0)


def test_a_held_lease_keeps_other_drivers_out_until_it_expires(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    clock = FakeClock(T0)
    with use_clock(clock):
        assert store.claim_run(run.run_id, "d1", lease_s=30)
        assert not store.claim_run(run.run_id, "d2", lease_s=30)
        assert store.claim_run(run.run_id, "d1", lease_s=30)  # re-claiming our own run
        clock.advance(29)
        assert store.renew_lease(run.run_id, "d1")
        clock.advance(29)  # 29 s since the renewal: still held
        assert not store.claim_run(run.run_id, "d2", lease_s=30)
        clock.advance(2)  # 31 s since the renewal: expired
        assert store.claim_run(run.run_id, "d2", lease_s=30)
        assert store.get_run(run.run_id).driver_id == "d2"
        assert store.get_run(run.run_id).heartbeat_at == clock.now()
        # the old driver finds out at its next renewal, and cannot release the new one
        assert not store.renew_lease(run.run_id, "d1")
        store.release_run(run.run_id, "d1")
        assert store.get_run(run.run_id).driver_id == "d2"


def test_release_frees_the_run_for_anyone(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    assert store.claim_run(run.run_id, "d1", lease_s=3600)
    store.release_run(run.run_id, "d1")
    assert store.get_run(run.run_id).driver_id is None
    assert not store.renew_lease(run.run_id, "d1")
    assert store.claim_run(run.run_id, "d2", lease_s=3600)


def test_a_run_created_with_a_driver_is_held_by_it(store: RunStore) -> None:
    run = make_run(driver_id="d1", heartbeat_at=T0)
    store.create_run(run, [])
    with use_clock(FakeClock(T0)):
        assert not store.claim_run(run.run_id, "d2", lease_s=30)
        assert store.renew_lease(run.run_id, "d1")


def test_expected_driver_makes_the_takeover_a_compare_and_swap(store: RunStore) -> None:
    run = make_run(driver_id="dead", heartbeat_at=T0)
    store.create_run(run, [])
    with use_clock(FakeClock(T0)):
        # lease_s=0: the caller knows "dead" is gone; only one resume may take over from it
        assert store.claim_run(run.run_id, "r1", lease_s=0, expected_driver="dead")
        assert not store.claim_run(run.run_id, "r2", lease_s=0, expected_driver="dead")
        assert store.claim_run(run.run_id, "r1", lease_s=0, expected_driver="dead")  # ours
        assert store.get_run(run.run_id).driver_id == "r1"


def test_expected_driver_none_means_the_run_must_be_free(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    assert store.claim_run(run.run_id, "r1", lease_s=0, expected_driver=None)
    assert not store.claim_run(run.run_id, "r2", lease_s=0, expected_driver=None)


def test_claiming_a_missing_run_raises_run_not_found(store: RunStore) -> None:
    with pytest.raises(RunNotFound, match="no-such-run"):
        store.claim_run("no-such-run", "d1", lease_s=30)
    assert not store.renew_lease("no-such-run", "d1")
    store.release_run("no-such-run", "d1")  # nothing to release: no error


def test_two_threads_claiming_at_once_exactly_one_wins(store: RunStore) -> None:
    runs = [make_run() for _ in range(25)]
    for r in runs:
        store.create_run(r, [])
    n_threads = 6
    barrier = threading.Barrier(n_threads)
    wins: list[list[str]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def claimer(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for r in runs:
                if store.claim_run(r.run_id, f"driver-{i}", lease_s=3600):
                    wins[i].append(r.run_id)
        except BaseException as exc:  # noqa: BLE001 - asserted on in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    counts = Counter(rid for w in wins for rid in w)
    assert counts == Counter({r.run_id: 1 for r in runs})
    for i, won in enumerate(wins):
        for rid in won:
            assert store.get_run(rid).driver_id == f"driver-{i}"


def _claim_in_process(url: str, run_ids: list[str], me: str, barrier: Any, results: Any) -> None:
    store = open_store(url)
    try:
        barrier.wait(timeout=120)
        won = [rid for rid in run_ids if store.claim_run(rid, me, lease_s=3600)]
        results.put((me, won, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((me, [], repr(exc)))
    finally:
        store.dispose()


def test_processes_claiming_at_once_exactly_one_wins_each_run(store: RunStore, db_url: str) -> None:
    runs = [make_run() for _ in range(20)]
    for r in runs:
        store.create_run(r, [])
    ids = [r.run_id for r in runs]
    ctx = multiprocessing.get_context("spawn")
    n = 3
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(db_url, ids, f"proc-{i}", barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [err for _, _, err in got if err] == []
    counts = Counter(rid for _, won, _ in got for rid in won)
    assert counts == Counter({rid: 1 for rid in ids})
    for me, won, _ in got:
        for rid in won:
            assert store.get_run(rid).driver_id == me
