"""`GET /api/v1/runs/{run_id}/events`: a run's live state changes as Server-Sent Events.

What belongs here: HTTP (headers, status codes, the OpenAPI description). The feed itself is
`api/live.py`, the events and their ids `api/events.py`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from cadenza.api.auth import RequireViewer
from cadenza.api.live import RunFeeds

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[RequireViewer])

_DESCRIPTION = """\
Server-Sent Events, one per state change of the run or of one of its task instances, in
commit order: first the run's state and every task instance's, then each change as the
engine commits it. `event:` is `run` or `task_instance`; `data:` is one line of JSON
(`run_id`, `state`, and for a task instance `task_id`, `map_index`, `attempt`, `queued_at`,
`started_at`, `ended_at`, `reason`). Every event has an `id:`: reconnect with
`Last-Event-ID` to get exactly the events after it (an id this server does not know gets the
stream from its start). The stream ends after the run's final state; a client that has seen
it and reconnects gets 204, unless the run was retried or resumed since: then the stream goes
on from there. While nothing changes, a comment line keeps the connection open.
A quick task's `running` may not be seen on its own when its end is committed at once.
"""


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    summary="Stream a run's state changes (Server-Sent Events)",
    description=_DESCRIPTION,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "The event stream."},
        204: {"description": "The run has ended and the client has seen its last event."},
    },
)
async def run_events(
    run_id: str,
    request: Request,
    last_event_id: Annotated[str | None, Header(
        description="The id of the last event the client received.")] = None,
) -> Response:
    feeds: RunFeeds = request.app.state.feeds
    stream = await feeds.open(run_id, last_event_id=last_event_id)
    if stream is None:
        return Response(status_code=204)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
