"""The runs lists are serialised by orjson straight from the store's rows
(`routes/runs._page_response`): on SQLite and PostgreSQL the bytes are exactly what pydantic
writes for the same page of `RunOut`s built from the full run records, for runs with and
without end times, logical dates, errors, tags, nested params, microseconds; params
orjson cannot write (an integer beyond 64 bits) go through pydantic."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cadenza.api.routes.runs import _page_response, run_out
from cadenza.api.schemas import Page, RunOut
from cadenza.core.states import RunState
from cadenza.engine.api import new_run
from cadenza.engine.loading import load_file
from cadenza.graph.plan import Plan
from cadenza.store import open_store
from cadenza.store.run_views import RunFilter, runs_list_rows
from tests.fixtures.server import PIPELINES


def _plan() -> Plan:
    plan = load_file(PIPELINES / "api_project.py").plans.get("etl")
    assert plan is not None
    return plan


def test_list_bytes_equal_pydantics(db_url: str) -> None:
    store = open_store(db_url)
    plan = _plan()
    base = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    made = []
    for i, (state, extra) in enumerate([
        (RunState.QUEUED, {}),
        (RunState.SUCCESS, {"started_at": base + timedelta(seconds=1),
                            "ended_at": base + timedelta(seconds=31, microseconds=5)}),
        (RunState.FAILED, {"started_at": base, "ended_at": base + timedelta(minutes=2),
                           "error": "task 'load' failed: ValueError: bad \u00e9 \"row\"",
                           "logical_date": datetime(2026, 3, 4, tzinfo=UTC),
                           "data_interval_start": datetime(2026, 3, 3, tzinfo=UTC),
                           "data_interval_end": datetime(2026, 3, 4, tzinfo=UTC),
                           "tags": ("nightly", "x/y")}),
        (RunState.RUNNING, {"started_at": base, "cancel_requested_at": base + timedelta(1),
                            "params": {"n": 3, "nested": {"a": [1, 2.5, None, "s"]}}}),
    ]):
        run, tis = new_run(plan, {"n": i}, trigger="manual")
        run = replace(run, state=state, created_at=base + timedelta(minutes=i), **extra)
        store.create_run(run, tis)
        made.append(run.run_id)
    rows = runs_list_rows(store, RunFilter(), after=None, limit=50)
    assert [r[0] for r in rows] == made[::-1]
    expected = Page[RunOut](items=[run_out(store.get_run(r[0])) for r in rows],
                            next_cursor="abc").model_dump_json().encode()
    assert bytes(_page_response(rows, "abc").body) == expected

    huge = [(*rows[0][:4], {"n": 2**70}, *rows[0][5:])]
    body = bytes(_page_response(huge, None).body)
    assert b'"n":1180591620717411303424' in body
    store.dispose()
