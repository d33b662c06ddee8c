"""Cancel requests in the store (SQLite and PostgreSQL): any process records one, the run's
driver finds it with one cheap query, and the driver's own run updates never erase it."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.errors import RunNotFound
from cadenza.core.records import RunRecord, WriteBatch
from cadenza.core.states import RunState
from cadenza.store import RunStore

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def make_run(**kw: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": f"run-{secrets.token_hex(5)}",
        "pipeline": "p",
        "state": RunState.RUNNING,
        "created_at": T0,
    }
    fields.update(kw)
    return RunRecord(**fields)


def test_a_cancel_request_is_recorded_on_an_unfinished_run(store: RunStore) -> None:
    run = make_run(driver_id="d1", heartbeat_at=T0)
    store.create_run(run, [])
    with use_clock(FakeClock(T0)):
        assert store.request_cancel(run.run_id)
    got = store.get_run(run.run_id)
    assert got.cancel_requested_at == T0
    assert got.state is RunState.RUNNING  # the request is not a state: the engine moves it
    assert store.cancel_requests([run.run_id, "other"]) == {run.run_id}


def test_a_second_request_keeps_the_first_time(store: RunStore) -> None:
    run = make_run(state=RunState.QUEUED)
    store.create_run(run, [])
    clock = FakeClock(T0)
    with use_clock(clock):
        assert store.request_cancel(run.run_id)
        clock.advance(60)
        assert store.request_cancel(run.run_id)
    assert store.get_run(run.run_id).cancel_requested_at == T0


@pytest.mark.parametrize("state", [RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED])
def test_a_finished_run_takes_no_cancel_request(store: RunStore, state: RunState) -> None:
    run = make_run(state=state, ended_at=T0)
    store.create_run(run, [])
    assert not store.request_cancel(run.run_id)
    assert store.get_run(run.run_id).cancel_requested_at is None
    assert store.cancel_requests([run.run_id]) == set()


def test_cancel_of_an_unknown_run_raises_run_not_found(store: RunStore) -> None:
    with pytest.raises(RunNotFound):
        store.request_cancel("no-such-run")
    assert store.cancel_requests([]) == set()


def test_the_drivers_run_updates_do_not_erase_a_request(store: RunStore) -> None:
    run = make_run(driver_id="d1", heartbeat_at=T0)
    store.create_run(run, [])
    with use_clock(FakeClock(T0)):
        store.request_cancel(run.run_id)
    # The driver's in-memory record never saw the request; writing it back keeps it.
    store.write(WriteBatch(run_updates=[replace(run, extra={"warnings": ["x"]})]))
    got = store.get_run(run.run_id)
    assert got.cancel_requested_at == T0 and got.extra == {"warnings": ["x"]}


def test_claiming_for_a_resume_clears_the_request(store: RunStore) -> None:
    run = make_run(state=RunState.CANCELLED, ended_at=T0)
    store.create_run(run, [])
    with store._engine.begin() as conn:  # a request that raced the run's end
        from sqlalchemy import update

        from cadenza.store.tables import runs_table

        conn.execute(update(runs_table).values(cancel_requested_at=T0))
    assert store.claim_run(run.run_id, "resumer", lease_s=30, clear_cancel=True)
    got = store.get_run(run.run_id)
    assert got.cancel_requested_at is None and got.driver_id == "resumer"


def test_a_plain_claim_keeps_the_request(store: RunStore) -> None:
    run = make_run(state=RunState.QUEUED)
    store.create_run(run, [])
    with use_clock(FakeClock(T0)):
        store.request_cancel(run.run_id)
        assert store.claim_run(run.run_id, "scheduler", lease_s=30)
    assert store.get_run(run.run_id).cancel_requested_at == T0
