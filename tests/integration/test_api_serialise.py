"""The runs lists are serialised by orjson straight from the store's rows
(`routes/runs._page_response`): on SQLite and PostgreSQL the bytes are exactly what pydantic
writes for the same page of `RunOut`s built from the full run records, for runs with and
without end times, logical dates, errors, tags, nested params, microseconds; params
orjson cannot write (an integer beyond 64 bits) go through pydantic. A run's detail
(`routes/runs._detail_response` from `run_detail_rows`) likewise equals pydantic's
`RunDetailOut` of the full records."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine

from cadenza.api.routes.runs import _detail_response, _page_response, run_detail, run_out
from cadenza.api.schemas import Page, RunOut
from cadenza.core.records import TASK_ORDER, ErrorInfo, ErrorKind, TaskInstanceRecord
from cadenza.core.states import RunState, TaskState
from cadenza.engine.api import new_run
from cadenza.engine.loading import load_file
from cadenza.graph.plan import Plan
from cadenza.store import open_store
from cadenza.store.run_views import (
    RUN_LIST_FIELDS,
    RunFilter,
    run_detail_rows,
    run_with_tasks,
    runs_list_rows,
)
from cadenza.store.tables import task_instances_table
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


def test_detail_bytes_equal_pydantics(db_url: str) -> None:
    """A run's detail from `run_detail_rows` (orjson) is byte for byte what pydantic writes
    for `run_detail(*run_with_tasks(...))`: task order from the run (a task the order lacks
    last), a failed instance with its error (an unknown error kind as `unknown`), a cached
    one with its origin, a retry pending, a mapped task's summary with its children's
    states."""
    store = open_store(db_url)
    plan = _plan()
    base = datetime(2026, 3, 4, 5, 6, 7, 250000, tzinfo=UTC)
    run, tis = new_run(plan, {"n": 2, "label": "\u00e9\"q\""}, trigger="manual")
    order = run.task_order
    assert len(order) >= 3 and len(tis) == len(order)
    run = replace(run, state=RunState.FAILED, created_at=base, started_at=base,
                  ended_at=base + timedelta(seconds=9, microseconds=1), error="task failed",
                  extra={**run.extra, TASK_ORDER: order[1:][::-1]})  # order[0] unknown: last
    first, second, third = (t.task_id for t in tis[:3])
    by_task = {t.task_id: t for t in tis}
    by_task[first] = replace(
        by_task[first], state=TaskState.FAILED, attempt=2, queued_at=base, started_at=base,
        ended_at=base + timedelta(seconds=1), worker="w-1", reason="gave up",
        error=ErrorInfo(kind=ErrorKind.TIMEOUT, type="builtins.TimeoutError",
                        message="slow \u00e9", traceback="Traceback ..."))
    by_task[second] = replace(
        by_task[second], state=TaskState.CACHED, attempt=0,
        cache_origin={"run_id": "r-old", "task_id": second, "map_index": -1})
    by_task[third] = replace(by_task[third], state=TaskState.UP_FOR_RETRY, attempt=1,
                             next_retry_at=base + timedelta(minutes=1), map_count=3)
    children = [TaskInstanceRecord(run_id=run.run_id, task_id=third, map_index=i, state=s,
                                   attempt=1)
                for i, s in enumerate([TaskState.SUCCESS, TaskState.FAILED, TaskState.SUCCESS])]
    store.create_run(run, [*by_task.values(), *children])
    other = create_engine(db_url)
    with other.begin() as conn:  # an error kind this version does not know
        conn.execute(task_instances_table.update()
                     .where(task_instances_table.c.run_id == run.run_id,
                            task_instances_table.c.task_id == first)
                     .values(error={"kind": "from_the_future", "type": "X", "message": "m"}))
    other.dispose()

    expected = run_detail(*run_with_tasks(store, run.run_id)).model_dump_json().encode()
    got = bytes(_detail_response(run_detail_rows(store, run.run_id)).body)
    assert got == expected
    detail = json.loads(got)
    assert [t["task_id"] for t in detail["task_instances"]][-1] == order[0]
    assert detail["task_instances"][-1]["error"]["kind"] == "unknown"
    mapped = next(t for t in detail["task_instances"] if t["task_id"] == third)
    assert mapped["map_summary"] == {"count": 3, "states": {"success": 2, "failed": 1}}
    store.dispose()


def test_json_documents_read_exactly(db_url: str) -> None:
    """JSON columns read back exactly on both backends (on PostgreSQL through orjson, with
    json for a document holding an integer beyond 64 bits, which orjson would make a
    float)."""
    store = open_store(db_url)
    plan = _plan()
    params = {"n": 2**70, "m": -(2**63), "f": 0.1, "s": "12345678901234567890", "u": "\u00e9",
              "deep": {"a": [1, None, True, {"b": 9223372036854775807}]}}
    run, tis = new_run(plan, {"n": 1}, trigger="manual")
    store.create_run(replace(run, params=params, tags=("x",)), tis)
    rows = runs_list_rows(store, RunFilter(), after=None, limit=5)
    got = dict(zip(RUN_LIST_FIELDS, rows[0], strict=True))
    assert got["params"] == params and type(got["params"]["n"]) is int
    assert got["tags"] == ["x"]
    store.dispose()
