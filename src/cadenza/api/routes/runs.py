"""`/api/v1/runs` and `/api/v1/pipelines/{name}/runs`: list runs (filters, keyset pages),
a run with its task instances; trigger, cancel, resume and retry.

The API writes no state itself (STYLE §4): a trigger creates a *queued* run with the
engine's `new_run` (a scheduler claims and drives it); cancel is `engine.cancel.cancel_run`
(a run nobody drives is cancelled at once, a driven one at its driver's next heartbeat);
resume and retry requeue an ended run through `engine/rerun.py` for a scheduler to drive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import BaseModel

from cadenza.api.auth import RequireOperator, RequireViewer
from cadenza.api.deps import CatalogDep, SettingsDep, StoreDep
from cadenza.api.errors import FieldError, json_response
from cadenza.api.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    utc_query,
)
from cadenza.api.schemas import (
    CancelOut,
    MapSummaryOut,
    Page,
    RerunOut,
    RetryIn,
    RunDetailOut,
    RunOut,
    TaskErrorOut,
    TaskInstanceOut,
    TriggerIn,
)
from cadenza.core.errors import StateConflict
from cadenza.core.records import TASK_ORDER, ErrorKind, RunRecord, TaskInstanceRecord
from cadenza.core.states import RunState, TaskState
from cadenza.engine.api import new_run
from cadenza.engine.cancel import cancel_run
from cadenza.engine.rerun import request_resume, request_retry
from cadenza.graph.plan import Plan
from cadenza.store import RunStore
from cadenza.store.run_views import (
    RUN_LIST_FIELDS,
    RunDetailRows,
    RunFilter,
    RunTasks,
    run_detail_rows,
    runs_list_rows,
)

router = APIRouter(tags=["runs"])

RunId = Annotated[str, Path(description="The run's id.", max_length=200)]


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def run_out(run: RunRecord) -> RunOut:
    return RunOut(**_run_fields(run))


def _run_fields(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "pipeline": run.pipeline, "state": run.state,
        "trigger": run.trigger, "params": run.params, "tags": list(run.tags),
        "created_at": run.created_at, "started_at": run.started_at, "ended_at": run.ended_at,
        "duration_s": _duration(run.started_at, run.ended_at),
        "logical_date": run.logical_date, "data_interval_start": run.data_interval_start,
        "data_interval_end": run.data_interval_end, "executor": run.executor,
        "error": run.error, "cancel_requested_at": run.cancel_requested_at,
    }


def ti_out(ti: TaskInstanceRecord, map_states: dict[TaskState, int] | None = None
           ) -> TaskInstanceOut:
    summary = None
    if ti.map_count is not None:
        summary = MapSummaryOut(count=ti.map_count,
                                states={str(s): n for s, n in (map_states or {}).items()})
    error = None
    if ti.error is not None:
        error = TaskErrorOut(kind=str(ti.error.kind), type=ti.error.type,
                             message=ti.error.message)
    return TaskInstanceOut(
        task_id=ti.task_id, map_index=ti.map_index, state=ti.state, attempts=ti.attempt,
        pool=ti.pool, queued_at=ti.queued_at, started_at=ti.started_at, ended_at=ti.ended_at,
        duration_s=_duration(ti.started_at, ti.ended_at), next_retry_at=ti.next_retry_at,
        cache_origin=ti.cache_origin, error=error, reason=ti.reason, worker=ti.worker,
        map_summary=summary)


def run_detail(run: RunRecord, tasks: RunTasks) -> RunDetailOut:
    order = {task_id: i for i, task_id in enumerate(run.task_order)}
    instances = sorted(tasks.instances, key=lambda t: (order.get(t.task_id, len(order)),
                                                       t.task_id))
    return RunDetailOut(**_run_fields(run), task_instances=[
        ti_out(ti, tasks.map_states.get(ti.task_id)) for ti in instances])


def _page(store: RunStore, where: RunFilter, cursor: str | None, limit: int) -> Response:
    after = None
    if cursor:
        at, run_id = decode_cursor(cursor, (datetime, str))
        if at is None:
            raise FieldError([("query", "cursor")], "not a cursor of this list")
        after = (at, run_id)
    rows = runs_list_rows(store, where, after=after, limit=limit + 1)
    page = rows[:limit]
    nxt = (encode_cursor(page[-1][_CREATED], page[-1][_RUN_ID])
           if len(rows) > limit and page else None)
    return _page_response(page, nxt)


_RUN_ID, _CREATED = RUN_LIST_FIELDS.index("run_id"), RUN_LIST_FIELDS.index("created_at")


def _run_item(row: tuple[Any, ...]) -> dict[str, Any]:
    """A run's RunOut fields from a row of RUN_LIST_FIELDS, in RunOut's order."""
    (run_id, pipeline, state, trigger, params, tags, created_at, started_at, ended_at,
     logical_date, data_interval_start, data_interval_end, executor, error,
     cancel_requested_at) = row
    return {
        "run_id": run_id, "pipeline": pipeline, "state": state, "trigger": trigger,
        "params": params, "tags": tags, "created_at": created_at,
        "started_at": started_at, "ended_at": ended_at,
        "duration_s": _duration(started_at, ended_at), "logical_date": logical_date,
        "data_interval_start": data_interval_start,
        "data_interval_end": data_interval_end, "executor": executor, "error": error,
        "cancel_requested_at": cancel_requested_at}


def _orjson_response(content: dict[str, Any], model: type[BaseModel]) -> Response:
    """`content` (what `model` would write) serialised by orjson; anything orjson cannot
    write (an integer beyond 64 bits in params) goes through pydantic's `model` instead."""
    try:
        body = orjson.dumps(content, option=orjson.OPT_UTC_Z)
    except TypeError:
        return json_response(model.model_validate(content))
    return Response(body, media_type="application/json")


def _page_response(rows: list[tuple[Any, ...]], next_cursor: str | None) -> Response:
    """A `Page[RunOut]` of list rows, serialised by orjson straight from the rows: no
    RunRecord or RunOut per row (a 50-run page, read and serialised: 5,247 Python calls ->
    3,722, bench/api_counts.py's whole request 9,300 -> 7,800). The bytes are what pydantic
    writes for the same page (tests/integration/test_api_serialise.py)."""
    return _orjson_response({"items": [_run_item(row) for row in rows],
                             "next_cursor": next_cursor}, Page[RunOut])


def _error_item(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"kind": str(ErrorKind.parse(error.get("kind", ErrorKind.EXCEPTION))),
            "type": error.get("type", ""), "message": error.get("message", "")}


def _detail_response(d: RunDetailRows) -> Response:
    """A `RunDetailOut` from `run_detail_rows`, serialised by orjson straight from the rows
    (as `run_detail` writes it, byte for byte: tests/integration/test_api_serialise.py): a
    run detail with 10 tasks on PostgreSQL, read and serialised, ~1,180 -> ~600 Python
    calls (cProfile)."""
    order = {task_id: i for i, task_id in enumerate(d.extra.get(TASK_ORDER, ()))}
    last = len(order)
    items = []
    for (task_id, map_index, state, attempt, pool, queued_at, started_at, ended_at,
         next_retry_at, error, cache_origin, worker, map_count, reason) in sorted(
            d.instances, key=lambda t: (order.get(t[0], last), t[0])):
        summary = None
        if map_count is not None:
            summary = {"count": map_count, "states": d.map_states.get(task_id, {})}
        items.append({
            "task_id": task_id, "map_index": map_index, "state": state, "attempts": attempt,
            "pool": pool, "queued_at": queued_at, "started_at": started_at,
            "ended_at": ended_at, "duration_s": _duration(started_at, ended_at),
            "next_retry_at": next_retry_at, "cache_origin": cache_origin,
            "error": _error_item(error), "reason": reason, "worker": worker,
            "map_summary": summary})
    detail = _run_item(d.run)
    detail["task_instances"] = items
    return _orjson_response(detail, RunDetailOut)


def _check_range(lo: datetime | None, hi: datetime | None, names: tuple[str, str]
                 ) -> tuple[datetime | None, datetime | None]:
    """Both ends in UTC (422 on the field without a time zone or out of range, e.g. year 1
    at +05:00), and in order."""
    lo, hi = utc_query(names[0], lo), utc_query(names[1], hi)
    if lo is not None and hi is not None and lo > hi:
        raise FieldError([("query", names[0])], f"{names[0]} is after {names[1]}")
    return lo, hi


Since = Annotated[datetime | None, Query(description="Created at or after (ISO 8601 with a "
                                         "time zone).")]
Until = Annotated[datetime | None, Query(description="Created at or before.")]
LogicalFrom = Annotated[datetime | None, Query(description="Logical date at or after.")]
LogicalTo = Annotated[datetime | None, Query(description="Logical date at or before.")]
States = Annotated[list[RunState] | None, Query(description="Only runs in these states "
                                                "(repeat the parameter for several).")]


def _filter(pipeline: str | None, state: list[RunState] | None, created_from: datetime | None,
            created_to: datetime | None, logical_from: datetime | None,
            logical_to: datetime | None) -> RunFilter:
    created_from, created_to = _check_range(created_from, created_to,
                                            ("created_from", "created_to"))
    logical_from, logical_to = _check_range(logical_from, logical_to,
                                            ("logical_from", "logical_to"))
    return RunFilter(pipeline=pipeline, states=tuple(state or ()), created_from=created_from,
                     created_to=created_to, logical_from=logical_from, logical_to=logical_to)


@router.get("/runs", dependencies=[RequireViewer], response_model=Page[RunOut])
def list_runs(
    store: StoreDep,
    pipeline: Annotated[str | None, Query(description="Only this pipeline's runs.")] = None,
    state: States = None,
    created_from: Since = None,
    created_to: Until = None,
    logical_from: LogicalFrom = None,
    logical_to: LogicalTo = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Runs, newest first, filtered by pipeline, state, creation time and logical date."""
    where = _filter(pipeline, state, created_from, created_to, logical_from, logical_to)
    return _page(store, where, cursor, limit)


@router.get("/runs/{run_id}", dependencies=[RequireViewer], response_model=RunDetailOut)
def get_run(run_id: RunId, store: StoreDep) -> Response:
    """A run with its task instances (state, attempts, durations, cache origin; mapped
    tasks by their summary with counts per state)."""
    return _detail_response(run_detail_rows(store, run_id))


PipelineName = Annotated[str, Path(description="The pipeline's name.", max_length=200)]


@router.get("/pipelines/{name}/runs", dependencies=[RequireViewer],
            response_model=Page[RunOut])
def list_pipeline_runs(
    name: PipelineName,
    store: StoreDep,
    catalog: CatalogDep,
    state: States = None,
    created_from: Since = None,
    created_to: Until = None,
    logical_from: LogicalFrom = None,
    logical_to: LogicalTo = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The pipeline's runs, newest first (as `GET /runs?pipeline=NAME`; 404 for a pipeline
    the project does not have)."""
    catalog.get(name)
    where = _filter(name, state, created_from, created_to, logical_from, logical_to)
    return _page(store, where, cursor, limit)


def _check_params(plan: Plan, params: dict[str, object]) -> None:
    """422 naming each parameter that is unknown or does not validate (FastAPI's shape)."""
    from pydantic import ValidationError

    from cadenza.core.suggest import did_you_mean

    known = plan.parameters.names
    errors: list[dict[str, object]] = [
        {"loc": ["body", "params", k], "type": "extra_forbidden",
         "msg": f"unknown parameter '{k}' of pipeline '{plan.name}'."
                + did_you_mean(k, sorted(known)) + f" Parameters: {', '.join(known) or '(none)'}"}
        for k in params if k not in known]
    if errors:
        raise FieldError.many(errors)
    try:
        plan.parameters.model.model_validate(params)
    except ValidationError as exc:
        raise FieldError.many([
            {"loc": ["body", "params", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()]) from None


@router.post("/pipelines/{name}/runs", status_code=201, dependencies=[RequireOperator])
def trigger_run(name: PipelineName, store: StoreDep, catalog: CatalogDep,
                body: Annotated[TriggerIn | None, Body()] = None) -> RunOut:
    """Create a run of the pipeline with these parameters, queued: a scheduler (`cadenza
    scheduler`, or `cadenza server --scheduler`) starts it. 422 names each bad parameter."""
    body = body or TriggerIn()
    plan = catalog.get(name)
    _check_params(plan, body.params)
    if body.logical_date is not None and body.logical_date.tzinfo is None:
        raise FieldError([("body", "logical_date")], "give a time zone (e.g. 2026-01-01T00:00Z)")
    run, tis = new_run(plan, body.params, trigger="manual", logical_date=body.logical_date)
    if body.tags:
        run = replace(run, tags=tuple(dict.fromkeys([*run.tags, *body.tags])))
    store.create_run(run, tis)
    return run_out(run)


@router.post("/runs/{run_id}/cancel", dependencies=[RequireOperator])
def cancel(run_id: RunId, store: StoreDep, settings: SettingsDep) -> CancelOut:
    """Cancel the run. A run nobody drives (queued) is cancelled at once; a running one is
    stopped by its driver at its next heartbeat (`outcome: requested`). 409 if it has
    ended. The run stays resumable."""
    run = store.get_run(run_id)  # exact id: 404 otherwise (cancel_run accepts prefixes)
    report = cancel_run(run.run_id, settings=settings, wait_s=0)
    if report.outcome == "finished":
        raise StateConflict(
            f"run {run_id} has already ended {report.state}: nothing to cancel",
            pipeline=run.pipeline, hint="resume or retry it to run its failed tasks again")
    return CancelOut(run=run_out(store.get_run(run_id)), outcome=report.outcome)


@router.post("/runs/{run_id}/resume", dependencies=[RequireOperator])
def resume(run_id: RunId, store: StoreDep) -> RerunOut:
    """Queue the ended run again to go on from its point of failure: a scheduler reruns its
    failed, upstream_failed and cancelled task instances; finished ones keep their outputs.
    409 if it succeeded or has not ended."""
    req = request_resume(store, run_id)
    return RerunOut(run=run_out(req.run), tasks=list(req.tasks))


@router.post("/runs/{run_id}/retry", dependencies=[RequireOperator])
def retry(run_id: RunId, store: StoreDep, catalog: CatalogDep,
          body: Annotated[RetryIn | None, Body()] = None) -> RerunOut:
    """Retry (clear) task instances of an ended run: one task (with its downstream tasks
    that could not run), a task and everything downstream of it (`downstream: true`,
    successful ones too), or, without `task_id`, every failed one. The run is queued again
    for a scheduler. 409 says why when the run or task's state does not allow it."""
    body = body or RetryIn()
    run = store.get_run(run_id)
    req = request_retry(store, run_id, catalog.get(run.pipeline), task_id=body.task_id,
                        downstream=body.downstream)
    return RerunOut(run=run_out(req.run), tasks=list(req.tasks))


# ---------------------------------------------------------------------------------------------
# The polled reads without FastAPI's routing, dependencies and parameter validation
# (api/cache.py calls these on a response-cache miss when the caller is known without a
# store read): ~1,450 Python calls a request saved, about half of a run detail's cost
# (bench/api_counts.py). Same functions, same bytes as the routes above
# (tests/integration/test_api_fast_reads.py); anything unusual -> None: the app answers.

PolledRead = Callable[[], bytes]
_LIST_KEYS = frozenset({"pipeline", "state", "limit", "cursor"})
_RUN_STATES = frozenset(s.value for s in RunState)


def polled_read(store: RunStore) -> Callable[[str, bytes], PolledRead | None]:
    """For a GET of `path` (below the API prefix) with `query`: a function that reads and
    serialises what `get_run` or `list_runs` would answer (raising what they raise), or
    None when the request is not one of their plain shapes (then the app answers it)."""

    def route(path: str, query: bytes) -> PolledRead | None:
        if path.startswith("/runs/"):
            run_id = path[6:]
            if query or not run_id or "/" in run_id or len(run_id) > 200:
                return None
            return lambda: bytes(_detail_response(run_detail_rows(store, run_id)).body)
        if path == "/runs":
            args = _plain_list_query(query)
            if args is None:
                return None
            pipeline, states, limit, cursor = args
            return lambda: bytes(_page(store, _filter(pipeline, states, None, None, None, None),
                                       cursor, limit).body)
        return None

    return route


def _plain_list_query(query: bytes
                      ) -> tuple[str | None, list[RunState] | None, int, str | None] | None:
    """`list_runs`' parameters from a query of only pipeline, state (repeatable), limit and
    cursor with plainly valid values; None for anything else (the app validates it)."""
    values: dict[str, str] = {}
    states: list[RunState] = []
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key not in _LIST_KEYS or not value:
            return None
        if key == "state":
            if value not in _RUN_STATES:
                return None
            states.append(RunState(value))
        elif key in values:
            return None
        else:
            values[key] = value
    limit = DEFAULT_LIMIT
    if "limit" in values:
        raw = values["limit"]
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            return None
        limit = int(raw)
    cursor = values.get("cursor")
    if cursor is not None and len(cursor) > 1000:
        return None
    return values.get("pipeline"), states or None, limit, cursor
