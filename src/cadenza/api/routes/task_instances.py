"""`/api/v1/runs/{run_id}/tasks/{task_id}...` and `/api/v1/artifacts/{sha256}...`: a task
instance with its attempts, error and traceback, cache origin, inputs and output; previews of
those values; an attempt's log as byte ranges and as a live stream; artifact lineage.

Reads only. A mapped task's instances are addressed by `map_index` (query, default -1: the
task itself, or a mapped task's summary).

Live log follow is Server-Sent Events rather than chunked text: each `log` event's `id` is
the byte offset after it, so a browser's EventSource that loses the connection reconnects
with `Last-Event-ID` and resumes at exactly that byte (no gap, no repeat), and the stream
ends with an `end` event carrying the attempt's final state, which a plain chunked body
could not tell apart from a dropped connection. It is also how the run events stream works,
so the UI uses one client for both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cadenza.api.auth import RequireViewer
from cadenza.api.deps import CatalogDep, SettingsDep, StoreDep
from cadenza.api.errors import FieldError
from cadenza.api.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    Limit,
    decode_after,
    encode_cursor,
)
from cadenza.api.routes.runs import ti_out
from cadenza.api.schemas import (
    ArtifactOut,
    AttemptOut,
    ColumnOut,
    ErrorDetailOut,
    InputOut,
    LineageNodeOut,
    LogChunkOut,
    Page,
    PreviewOut,
    RunAttemptOut,
    TaskInstanceDetailOut,
    TaskInstanceOut,
    ValueRefOut,
)
from cadenza.artifacts.lineage import Direction, LineageNode, walk_lineage
from cadenza.artifacts.preview import Preview, preview_value
from cadenza.core.errors import ArtifactNotFound, CadenzaError, TaskNotFound
from cadenza.core.logfiles import MAX_READ_BYTES, read_log_range
from cadenza.core.records import ArtifactRecord, ErrorInfo, TaskInstanceRecord, ValueRef
from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.core.task_secrets import Masker
from cadenza.engine.api import secrets_for
from cadenza.engine.inspect import (
    AttemptView,
    InputRef,
    attempt_view,
    attempts_of,
    find_attempt,
    find_task_instance,
    input_refs,
)
from cadenza.graph.plan import Plan
from cadenza.store import RunStore
from cadenza.store.browse import browse_store

router = APIRouter(tags=["task instances"])

RunId = Annotated[str, Path(description="The run's id.", max_length=200)]
TaskId = Annotated[str, Path(description="The task's id.", max_length=200)]
MapIndex = Annotated[int, Query(ge=-1, le=10_000_000, description="A mapped task's instance "
                                "(0, 1, ...); -1 (default) is the task itself, or a mapped "
                                "task's summary.")]
AttemptNo = Annotated[int | None, Query(ge=1, le=100_000, description="The attempt (from 1); "
                                        "default: the newest.")]
Rows = Annotated[int, Query(ge=0, le=500, description="At most this many rows of a table.")]
Depth = Annotated[int | None, Query(ge=0, le=50, description="At most this many steps away "
                                    "(default: all the way).")]
DirectionQ = Annotated[Direction, Query(description="both, upstream (what it was computed "
                                        "from) or downstream (what was computed from it).")]
Sha = Annotated[str, Path(description="An artifact's SHA-256, or a unique prefix of it.",
                          min_length=4, max_length=64, pattern="^[0-9a-fA-F]+$")]

FOLLOW_POLL_S = 0.2  # how often a live follow looks at the log file
STATE_POLL_S = 1.0  # ... and at the attempt's state in the store (2 indexed reads)
KEEPALIVE_S = 15.0
# A lineage tree in a response has at most this many nodes; cut ones mark their parent
# `truncated` (a fan-out to 10,000 mapped consumers would otherwise be one huge response).
MAX_LINEAGE_NODES = 500  # a comment line this often, so proxies keep an idle stream open


# ---------------------------------------------------------------------------------------------
# Conversions


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


# An error's message and traceback in a response are cut to this many characters (a
# message may hold a huge repr); the attempt's log has the whole traceback.
MAX_ERROR_CHARS = 20_000


def _cap(text: str, what: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    rest = len(text) - MAX_ERROR_CHARS
    return (text[:MAX_ERROR_CHARS] + f"\n… ({rest} more characters of this {what}; the "
            "attempt's log has all of it)")


def error_out(error: ErrorInfo | None) -> ErrorDetailOut | None:
    if error is None:
        return None
    return ErrorDetailOut(kind=str(error.kind), type=error.type,
                          message=_cap(error.message, "message"),
                          traceback=_cap(error.traceback, "traceback"))


def ref_out(ref: ValueRef | None, masker: Masker | None = None) -> ValueRefOut | None:
    if ref is None:
        return None
    if ref.kind == "json":  # bounded and JSON-safe through the preview, secrets masked
        return ValueRefOut(kind="json", value=_masked(preview_value(ref).value, masker))
    return ValueRefOut(kind=ref.kind, sha256=ref.sha256, uri=ref.uri, serializer=ref.serializer,
                       size_bytes=ref.size, type_name=ref.type_name)


def attempt_out(a: AttemptView) -> AttemptOut:
    return AttemptOut(attempt=a.attempt, state=a.state, started_at=a.started_at,
                      ended_at=a.ended_at, duration_s=_duration(a.started_at, a.ended_at),
                      worker=a.worker, error=error_out(a.error),
                      has_log=bool(a.log_path) and _is_file(a.log_path), live=a.live)


def _is_file(path: str | None) -> bool:
    import os

    return bool(path) and os.path.isfile(path)  # type: ignore[arg-type]


def preview_out(p: Preview, masker: Masker | None = None) -> PreviewOut:
    return PreviewOut(kind=p.kind, type_name=p.type_name, serializer=p.serializer,
                      size_bytes=p.size_bytes, truncated=p.truncated,
                      value=_masked(p.value, masker), text=_masked(p.text, masker),
                      columns=[ColumnOut(name=c.name, dtype=c.dtype) for c in p.columns],
                      rows=_masked(p.rows, masker),
                      shape=list(p.shape) if p.shape is not None else None,
                      dtype=p.dtype, values=_masked(p.values, masker), note=p.note)


def secret_masker(store: RunStore, settings: Settings) -> Masker | None:
    """What hides the project's secrets in values the API shows (a task may return one):
    None when no secret is stored. Logs and errors were masked when the worker wrote them;
    stored outputs are what the task returned, so previews are masked here, per request
    (one SELECT; the key is read and values decrypted only when secrets exist)."""
    secrets = secrets_for(store, settings)
    if secrets is None:
        return None
    masker = secrets.masker()
    return masker if masker else None


def _masked(value: Any, masker: Masker | None) -> Any:
    if masker is None:
        return value
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, list):
        return [_masked(v, masker) for v in value]
    if isinstance(value, dict):
        return {masker.mask(k): _masked(v, masker) for k, v in value.items()}
    return value


def artifact_out(a: ArtifactRecord) -> ArtifactOut:
    return ArtifactOut(sha256=a.sha256, uri=a.uri, size_bytes=a.size, serializer=a.serializer,
                       type_name=a.type_name, run_id=a.run_id, task_id=a.task_id,
                       map_index=a.map_index, attempt=a.attempt,
                       code_fingerprint=a.code_fingerprint,
                       input_sha256s=list(a.input_sha256s), created_at=a.created_at)


def lineage_out(node: LineageNode) -> LineageNodeOut:
    return LineageNodeOut(
        sha256=node.sha256,
        artifact=artifact_out(node.artifact) if node.artifact is not None else None,
        upstream=[lineage_out(n) for n in node.upstream],
        downstream=[lineage_out(n) for n in node.downstream],
        repeated=node.repeated, truncated=node.truncated)


def _inputs_out(refs: list[InputRef], masker: Masker | None) -> list[InputOut]:
    seen: dict[str, int] = {}
    out = []
    for r in refs:
        index = seen.get(r.name, 0)
        seen[r.name] = index + 1
        out.append(InputOut(name=r.name, index=index, source=r.source, task_id=r.task_id,
                            map_index=r.map_index, param=r.param, element=r.element,
                            ref=ref_out(r.ref, masker)))
    return out


def _plan_for(catalog: Any, pipeline: str) -> Plan | None:
    plan: Plan | None = catalog.plans.get(pipeline)
    return plan


# ---------------------------------------------------------------------------------------------
# Task instances


def _ti(store: RunStore, run_id: str, task_id: str, map_index: int) -> TaskInstanceRecord:
    return find_task_instance(store, run_id, task_id, map_index)


@router.get("/runs/{run_id}/tasks/{task_id}", dependencies=[RequireViewer])
def get_task_instance(run_id: RunId, task_id: TaskId, store: StoreDep, catalog: CatalogDep,
                      settings: SettingsDep, map_index: MapIndex = -1) -> TaskInstanceDetailOut:
    """A task instance: state, timings, every attempt (with its error and traceback),
    cache origin, its output's reference and its inputs' references (preview them with
    `.../output/preview` and `.../inputs/{name}/preview`)."""
    run = store.get_run(run_id)
    ti = _ti(store, run_id, task_id, map_index)
    plan = _plan_for(catalog, run.pipeline)
    if plan is not None and ti.task_id not in plan.tasks:
        plan = None  # the code changed since the run: fall back to the lineage
    refs = input_refs(store, run, ti, plan)
    inputs_from = "plan" if plan is not None else ("lineage" if refs else "none")
    attempts = attempts_of(store, ti, logs_dir=str(settings.logs_dir))
    masker = secret_masker(store, settings)
    return TaskInstanceDetailOut(
        run_id=ti.run_id, pipeline=run.pipeline, task_id=ti.task_id, map_index=ti.map_index,
        state=ti.state, attempt=ti.attempt, pool=ti.pool, queued_at=ti.queued_at,
        started_at=ti.started_at, ended_at=ti.ended_at,
        duration_s=_duration(ti.started_at, ti.ended_at), next_retry_at=ti.next_retry_at,
        reason=ti.reason, worker=ti.worker, map_count=ti.map_count, cache_key=ti.cache_key,
        cache_origin=ti.cache_origin, error=error_out(ti.error),
        output=ref_out(ti.output, masker), inputs=_inputs_out(refs, masker),
        inputs_from=inputs_from,
        attempts=[attempt_out(a) for a in attempts])


@router.get("/runs/{run_id}/attempts", dependencies=[RequireViewer])
def list_run_attempts(run_id: RunId, store: StoreDep, settings: SettingsDep,
                      limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
                      cursor: Cursor = None) -> Page[RunAttemptOut]:
    """Every ended attempt of a run, by task id, map index and attempt (for a Gantt chart:
    retried tasks' earlier attempts included). A running attempt has no row until it ends:
    it is the task instance's `attempts`-th, running since its `started_at`."""
    after = decode_after(cursor, (str, int, int))
    store.get_run(run_id)  # 404 for an unknown run
    logs_dir = str(settings.logs_dir)
    got = browse_store(store).run_attempts_page(run_id, after=after, limit=limit)
    items = [RunAttemptOut(task_id=a.task_id, map_index=a.map_index,
                           **attempt_out(attempt_view(a, logs_dir=logs_dir)).model_dump())
             for a in got.items]
    return Page[RunAttemptOut](items=items,
                               next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("/runs/{run_id}/tasks/{task_id}/instances", dependencies=[RequireViewer])
def list_instances(run_id: RunId, task_id: TaskId, store: StoreDep,
                   state: Annotated[list[TaskState] | None, Query(
                       description="Only instances in these states (repeat for several).")
                   ] = None,
                   limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[TaskInstanceOut]:
    """A mapped task's instances by map index (a task that is not mapped: its one
    instance), optionally only those in some states (e.g. the failed ones of 10,000)."""
    task = find_task_instance(store, run_id, task_id, -1)
    after = decode_after(cursor, (int,))
    got = browse_store(store).task_instances_page(
        run_id, task_id, mapped=task.map_count is not None, after=after, limit=limit,
        states=[TaskState(s).value for s in state or ()])
    return Page[TaskInstanceOut](items=[ti_out(t) for t in got.items],
                                 next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("/runs/{run_id}/tasks/{task_id}/attempts", dependencies=[RequireViewer])
def list_attempts(run_id: RunId, task_id: TaskId, store: StoreDep, settings: SettingsDep,
                  map_index: MapIndex = -1, limit: Limit = DEFAULT_LIMIT,
                  cursor: Cursor = None) -> Page[AttemptOut]:
    """A task instance's attempts in order, the running one last (live=true)."""
    ti = _ti(store, run_id, task_id, map_index)
    after = (decode_after(cursor, (int,)) or (0,))[0]
    views = [a for a in attempts_of(store, ti, logs_dir=str(settings.logs_dir))
             if a.attempt > after]
    page = views[:limit]
    nxt = encode_cursor(page[-1].attempt) if len(views) > limit and page else None
    return Page[AttemptOut](items=[attempt_out(a) for a in page], next_cursor=nxt)


@router.get("/runs/{run_id}/tasks/{task_id}/output/preview", dependencies=[RequireViewer])
def preview_output(run_id: RunId, task_id: TaskId, store: StoreDep, settings: SettingsDep,
                   map_index: MapIndex = -1, rows: Rows = 20) -> PreviewOut:
    """A bounded preview of the task instance's output: first rows of a DataFrame with its
    columns, dtypes and shape; shape, dtype and first values of an array; JSON cut to size;
    type and size of anything else (pickled values are never loaded by the server)."""
    ti = _ti(store, run_id, task_id, map_index)
    if ti.output is None:
        if ti.map_count:
            raise TaskNotFound(
                f"task '{task_id}' of run {run_id} is mapped: each of its {ti.map_count} "
                "instances has its own output", task=task_id,
                hint=f"preview one with ?map_index=0 to {ti.map_count - 1}")
        raise TaskNotFound(
            f"task '{task_id}' of run {run_id} has no output ({ti.state})",
            task=task_id, hint="an output exists once the task instance has succeeded "
            "(or was served from the cache)")
    return preview_out(preview_value(ti.output, max_rows=rows), secret_masker(store, settings))


@router.get("/runs/{run_id}/tasks/{task_id}/inputs/{name}/preview",
            dependencies=[RequireViewer])
def preview_input(run_id: RunId, task_id: TaskId, name: Annotated[str, Path(max_length=200)],
                  store: StoreDep, catalog: CatalogDep, settings: SettingsDep,
                  map_index: MapIndex = -1,
                  index: Annotated[int, Query(ge=0, le=10_000, description="Which input under "
                                              "this name (see `index` in the inputs).")] = 0,
                  rows: Rows = 20) -> PreviewOut:
    """A bounded preview of one input of the task instance (see the output preview)."""
    run = store.get_run(run_id)
    ti = _ti(store, run_id, task_id, map_index)
    plan = _plan_for(catalog, run.pipeline)
    if plan is not None and ti.task_id not in plan.tasks:
        plan = None
    refs = [r for r in input_refs(store, run, ti, plan) if r.name == name]
    if not refs or index >= len(refs):
        names = sorted({r.name for r in input_refs(store, run, ti, plan)})
        what = f"input '{name}'" + (f" number {index}" if refs else "")
        raise TaskNotFound(f"task '{task_id}' of run {run_id} has no {what}", task=task_id,
                           hint=f"its inputs: {', '.join(names) or '(none known)'}")
    ref = refs[index].ref
    if ref is None:
        raise TaskNotFound(f"input '{name}' of task '{task_id}' has no value: its upstream "
                           "has no output", task=task_id,
                           hint="see the upstream task instance's state and error")
    return preview_out(preview_value(ref, max_rows=rows), secret_masker(store, settings))


# ---------------------------------------------------------------------------------------------
# Logs


Offset = Annotated[int, Query(ge=-(2**53), le=2**53, description="Byte offset to read from; "
                              "negative counts from the end (-65536: the last 64 KiB).")]
LogLimit = Annotated[int, Query(ge=0, le=MAX_READ_BYTES, description="At most this many bytes.")]


@router.get("/runs/{run_id}/tasks/{task_id}/logs", dependencies=[RequireViewer])
def read_logs(run_id: RunId, task_id: TaskId, store: StoreDep, settings: SettingsDep,
              map_index: MapIndex = -1, attempt: AttemptNo = None, offset: Offset = 0,
              limit: LogLimit = 65536) -> LogChunkOut:
    """A byte range of an attempt's log (stdout, stderr, the task logger, the traceback of a
    failure). Read on from `next_offset`; `complete` once the attempt ended and all is read.
    A running attempt's log can be read while it grows (or followed: `.../logs/follow`)."""
    ti = _ti(store, run_id, task_id, map_index)
    view = find_attempt(store, ti, attempt, logs_dir=str(settings.logs_dir))
    chunk = read_log_range(view.log_path, offset, limit)
    return LogChunkOut(run_id=run_id, task_id=task_id, map_index=map_index,
                       attempt=view.attempt, offset=chunk.offset, next_offset=chunk.next_offset,
                       size=chunk.size, text=chunk.text, live=view.live,
                       complete=not view.live and chunk.at_end)


def _sse(event: str, data: dict[str, Any], *, id_: int | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {id_}\n" if id_ is not None else "")
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


@router.get("/runs/{run_id}/tasks/{task_id}/logs/follow", dependencies=[RequireViewer],
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `log` events (data: JSON "
                             "{attempt, offset, next_offset, text}; id: next_offset) while the "
                             "attempt writes, then one `end` event (data: {attempt, state, "
                             "next_offset})."}})
async def follow_logs(request: Request, run_id: RunId, task_id: TaskId, store: StoreDep,
                      settings: SettingsDep, map_index: MapIndex = -1,
                      attempt: AttemptNo = None, offset: Annotated[int, Query(
                          ge=0, le=2**53, description="Byte offset to start at.")] = 0,
                      last_event_id: Annotated[str | None, Header(
                          max_length=40, description="Resume after this event (a byte "
                          "offset), as EventSource sends on reconnecting.")] = None,
                      ) -> StreamingResponse:
    """Stream an attempt's log as it is written, as Server-Sent Events, until the attempt
    ends (then an `end` event with its state). Without `attempt`: the newest one, or, when
    none has started yet, the first one once it starts (the stream ends with the task
    instance's state if it ends without running, e.g. served from the cache or skipped).
    Reconnecting with `Last-Event-ID` resumes at that byte."""
    start = offset
    if last_event_id:
        if not (last_event_id.isascii() and last_event_id.isdigit()):
            raise FieldError([("header", "last-event-id")], "not an event id of this stream "
                             "(a byte offset)")
        start = int(last_event_id)
    logs_dir = str(settings.logs_dir)
    ti = await run_in_threadpool(_ti, store, run_id, task_id, map_index)
    if attempt is not None:  # 404 now, before the stream starts, for an attempt never made
        await run_in_threadpool(_check_attempt, store, ti, attempt, logs_dir)
    return StreamingResponse(
        _follow(request, store, ti, attempt, start, logs_dir),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _check_attempt(store: RunStore, ti: TaskInstanceRecord, attempt: int, logs_dir: str) -> None:
    if attempt <= ti.attempt:
        return  # made (ended, or running now)
    find_attempt(store, ti, attempt, logs_dir=logs_dir)  # raises TaskNotFound with the list


def _current(store: RunStore, ti: TaskInstanceRecord, attempt: int | None,
             logs_dir: str) -> tuple[TaskInstanceRecord, AttemptView | None]:
    """The task instance now, and the attempt to follow (None: not started yet)."""
    now = find_task_instance(store, ti.run_id, ti.task_id, ti.map_index)
    views = attempts_of(store, now, logs_dir=logs_dir)
    if attempt is None:
        return now, views[-1] if views else None
    return now, next((v for v in views if v.attempt == attempt), None)


async def _follow(request: Request, store: RunStore, ti: TaskInstanceRecord,
                  attempt: int | None, offset: int, logs_dir: str) -> AsyncIterator[bytes]:
    """Cases, each poll (the store is read every STATE_POLL_S, the file every FOLLOW_POLL_S):
      1. the attempt has not started: wait (or end with the task instance's state, if it
         ended without it: cached, skipped, upstream failed, cancelled);
      2. it runs: send the whole lines added since `offset`;
      3. it ended (its row exists): send the rest, then `end` with its state.
    """
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    next_check = 0.0
    view: AttemptView | None = None
    while True:
        if await request.is_disconnected():
            return
        if loop.time() >= next_check:  # the store, less often than the file
            try:
                now, view = await run_in_threadpool(_current, store, ti, attempt, logs_dir)
            except CadenzaError as exc:  # the run was deleted meanwhile
                yield _sse("end", {"attempt": attempt, "state": None, "next_offset": offset,
                                   "error": exc.message})
                return
            next_check = loop.time() + STATE_POLL_S
            if view is None and now.state.is_final:  # case 1, ended without the attempt
                yield _sse("end", {"attempt": None, "state": str(now.state),
                                   "next_offset": offset})
                return
        if view is not None:
            attempt = view.attempt
            ended = not view.live
            while True:  # cases 2 and 3: read what is there, in chunks
                chunk = await run_in_threadpool(read_log_range, view.log_path, offset,
                                                MAX_READ_BYTES // 4, whole_lines=not ended)
                if not chunk.text:
                    break
                yield _sse("log", {"attempt": attempt, "offset": chunk.offset,
                                   "next_offset": chunk.next_offset, "text": chunk.text},
                           id_=chunk.next_offset)
                offset = chunk.next_offset
                quiet_since = loop.time()
                if chunk.at_end:
                    break
            if ended:  # case 3
                yield _sse("end", {"attempt": attempt, "state": str(view.state),
                                   "next_offset": offset})
                return
        if loop.time() - quiet_since >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = loop.time()
        await asyncio.sleep(FOLLOW_POLL_S)


# ---------------------------------------------------------------------------------------------
# Lineage and artifacts


@router.get("/runs/{run_id}/tasks/{task_id}/lineage", dependencies=[RequireViewer])
def task_output_lineage(run_id: RunId, task_id: TaskId, store: StoreDep,
                        map_index: MapIndex = -1, direction: DirectionQ = "both",
                        depth: Depth = None) -> LineageNodeOut:
    """The lineage of the task instance's output artifact: what it was computed from and
    what was computed from it."""
    ti = _ti(store, run_id, task_id, map_index)
    out = ti.output
    if out is None or out.kind != "artifact" or not out.sha256:
        why = ("it has no output" if out is None else
               "its output is small JSON kept in the metadata store, which has no lineage record")
        raise ArtifactNotFound(f"task '{task_id}' of run {run_id}: {why}", task=task_id,
                               hint="lineage is recorded for outputs stored in the artifact "
                               "store (DataFrames, arrays, large or non-JSON values)")
    return lineage_out(walk_lineage(store, out.sha256, direction=direction, depth=depth,
                                    max_nodes=MAX_LINEAGE_NODES))


@router.get("/artifacts/{sha256}", dependencies=[RequireViewer])
def get_artifact(sha256: Sha, store: StoreDep) -> ArtifactOut:
    """An artifact (by SHA-256 or a unique prefix) and the task instance that produced it."""
    return artifact_out(store.get_artifact(sha256))


@router.get("/artifacts/{sha256}/preview", dependencies=[RequireViewer])
def preview_artifact(sha256: Sha, store: StoreDep, settings: SettingsDep,
                     rows: Rows = 20) -> PreviewOut:
    """A bounded preview of an artifact (see the task output preview)."""
    a = store.get_artifact(sha256)
    ref = ValueRef(kind="artifact", uri=a.uri, sha256=a.sha256, serializer=a.serializer,
                   size=a.size, type_name=a.type_name)
    return preview_out(preview_value(ref, max_rows=rows), secret_masker(store, settings))


@router.get("/artifacts/{sha256}/lineage", dependencies=[RequireViewer])
def artifact_lineage(sha256: Sha, store: StoreDep, direction: DirectionQ = "both",
                     depth: Depth = None) -> LineageNodeOut:
    """What an artifact was computed from (upstream) and what was computed from it
    (downstream), as a tree."""
    return lineage_out(walk_lineage(store, sha256, direction=direction, depth=depth,
                                    max_nodes=MAX_LINEAGE_NODES))

