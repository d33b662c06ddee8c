"""`/api/v1/events` and `/api/v1/sla-misses`: the messages event triggers processed (the
run each created, or why none), and runs that missed their pipeline's SLA. Reads only,
newest first, filtered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cadenza.api.auth import RequireViewer
from cadenza.api.deps import StoreDep
from cadenza.api.errors import FieldError
from cadenza.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    decode_after,
    encode_cursor,
    utc_query,
)
from cadenza.api.schemas import Page, SlaMissOut, TriggerEventOut
from cadenza.core.scheduling import SlaMissRecord, TriggerEventRecord
from cadenza.store.browse import browse_store

router = APIRouter(tags=["events"])

Pipeline = Annotated[str | None, Query(max_length=200, description="Only this pipeline's.")]
Since = Annotated[datetime | None, Query(description="At or after (ISO 8601 with a time "
                                         "zone).")]
Until = Annotated[datetime | None, Query(description="Before (ISO 8601 with a time zone).")]


def _check_range(since: datetime | None, until: datetime | None
                 ) -> tuple[datetime | None, datetime | None]:
    since, until = utc_query("since", since), utc_query("until", until)
    if since is not None and until is not None and since > until:
        raise FieldError([("query", "since")], "since is after until")
    return since, until


def event_out(e: TriggerEventRecord) -> TriggerEventOut:
    assert e.id is not None  # read from the store
    return TriggerEventOut(id=e.id, pipeline=e.pipeline, source=e.source,
                           message_id=e.message_id, status=e.status, run_id=e.run_id,
                           error=e.error, payload=e.payload, received_at=e.received_at)


def sla_out(m: SlaMissRecord) -> SlaMissOut:
    return SlaMissOut(run_id=m.run_id, pipeline=m.pipeline, sla_s=m.sla_s,
                      deadline_at=m.deadline_at, detected_at=m.detected_at)


@router.get("/events", dependencies=[RequireViewer])
def list_events(
    store: StoreDep,
    pipeline: Pipeline = None,
    status: Annotated[Literal["run", "invalid"] | None, Query(
        description="run: a run was created; invalid: none was (see error).")] = None,
    source: Annotated[str | None, Query(max_length=2000, description="Only messages from "
                                        "this trigger URL.")] = None,
    run_id: Annotated[str | None, Query(max_length=200, description="The message that "
                                        "created this run.")] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[TriggerEventOut]:
    """Messages event triggers processed, newest first."""
    since, until = _check_range(since, until)
    after = decode_after(cursor, (datetime, int))
    got = browse_store(store).events_page(after=after, limit=limit, pipeline=pipeline,
                                          status=status, source=source, run_id=run_id,
                                          since=since, until=until)
    return Page[TriggerEventOut](items=[event_out(e) for e in got.items],
                                 next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("/sla-misses", dependencies=[RequireViewer])
def list_sla_misses(store: StoreDep, pipeline: Pipeline = None, since: Since = None,
                    until: Until = None, limit: Limit = DEFAULT_LIMIT,
                    cursor: Cursor = None) -> Page[SlaMissOut]:
    """Runs that did not finish within their pipeline's `sla`, newest detection first."""
    since, until = _check_range(since, until)
    after = decode_after(cursor, (datetime, str))
    got = browse_store(store).sla_misses_page(after=after, limit=limit, pipeline=pipeline,
                                              since=since, until=until)
    return Page[SlaMissOut](items=[sla_out(m) for m in got.items],
                            next_cursor=encode_cursor(*got.after) if got.after else None)
