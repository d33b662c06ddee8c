"""A run's live events: successive reads of its progress turned into ordered state changes.

What belongs here: the pure part of `GET /api/v1/runs/{id}/events`: diffing two
`RunProgress` reads into events, ordering them, numbering them in a per-feed log, resuming
from a `Last-Event-ID`, and the Server-Sent Events wire format. No I/O, no asyncio: the
polling and the HTTP stream are `api/live.py`. Unit-tested in tests/unit/test_live_events.py.

Where the events come from. The engine commits every transition (write-through store, group
commit); the server polls the run's rows (`store/live.py`: the run row, then its task
instances' state columns, one primary-key range) every `poll_s` and diffs each read against
the previous one. Nothing is added to the engine's commit path (issue 12 counts per-task
overhead), so a watched run costs the engine nothing. What polling cannot see: a state that
was committed and replaced between two reads (a quick task's `running` folded into its
`success`, by group commit or by the poll interval); every event still carries `attempt`,
`started_at` and `ended_at`, so a client can draw the attempt it missed.

Order. Within one read: a run that is not final yet comes first (so `running` precedes its
tasks), then task instances by the time of their new state (queued_at / started_at /
ended_at; instances without one first), then task id and map index; a run's final state comes
last. Reads are taken in commit order, so events are too.

Ids and resume. Each watched run has one log per server (`EventLog`); its events are
numbered 1, 2, ... and carry the id `<epoch>.<n>`, the epoch naming the log. A client that
reconnects with `Last-Event-ID: <epoch>.<n>` gets exactly the events after n: no loss, no
duplicate. An id from another log (the server restarted, or the log was dropped: see
`api/live.py`) cannot be placed, so the client gets the log from its start: the run's state
and every task instance's, then what followed. That replays states the client saw, which is
the honest answer without a durable change log, and a durable log would be a write per
transition on the commit path.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cadenza.core.progress import RunProgress, TaskInstanceProgress
from cadenza.core.states import TaskState

EventKind = Literal["run", "task_instance"]

# How long an EventSource waits before it reconnects after a dropped stream.
RETRY_MS = 1000

_S = TaskState
# The column that says when a task instance entered its state.
_ENDED = frozenset({_S.SUCCESS, _S.FAILED, _S.UP_FOR_RETRY, _S.CACHED, _S.SKIPPED,
                    _S.UPSTREAM_FAILED, _S.CANCELLED})


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveEvent:
    """One state change: `kind` is "run" or "task_instance", `data` its JSON body."""

    seq: int
    kind: EventKind
    data: dict[str, Any]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def run_data(progress: RunProgress) -> dict[str, Any]:
    return {
        "run_id": progress.run_id,
        "pipeline": progress.pipeline,
        "state": progress.state.value,
        "started_at": _iso(progress.started_at),
        "ended_at": _iso(progress.ended_at),
        "error": progress.error,
    }


def task_instance_data(run_id: str, ti: TaskInstanceProgress) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "state": ti.state.value,
        "attempt": ti.attempt,
        "queued_at": _iso(ti.queued_at),
        "started_at": _iso(ti.started_at),
        "ended_at": _iso(ti.ended_at),
        "reason": ti.reason,
    }


def entered_at(ti: TaskInstanceProgress) -> datetime | None:
    """When the task instance entered its current state, as far as its row says."""
    if ti.state in _ENDED:
        return ti.ended_at or ti.started_at or ti.queued_at
    if ti.state is _S.RUNNING:
        return ti.started_at or ti.queued_at
    if ti.state in (_S.QUEUED, _S.SCHEDULED):
        return ti.queued_at
    return None


def _sort_key(ti: TaskInstanceProgress) -> tuple[int, float, str, int]:
    at = entered_at(ti)
    return (0, 0.0, ti.task_id, ti.map_index) if at is None else (
        1, at.timestamp(), ti.task_id, ti.map_index)


def changes(prev: RunProgress | None, cur: RunProgress) -> list[tuple[EventKind, dict[str, Any]]]:
    """The events that take a client from `prev` (None: it knows nothing) to `cur`, in order.

    A task instance changed when its state or attempt did (a retry that is `running` again
    on its next attempt is a change); a new instance (a mapped task expanding) is one. A run
    changed when its state did.
    """
    before = {} if prev is None else {(t.task_id, t.map_index): t for t in prev.task_instances}
    moved = [
        t for t in cur.task_instances
        if (old := before.get((t.task_id, t.map_index))) is None
        or old.state is not t.state or old.attempt != t.attempt
    ]
    moved.sort(key=_sort_key)
    out: list[tuple[EventKind, dict[str, Any]]] = [
        ("task_instance", task_instance_data(cur.run_id, t)) for t in moved
    ]
    if prev is None or prev.state is not cur.state:
        run: tuple[EventKind, dict[str, Any]] = ("run", run_data(cur))
        if cur.state.is_final:
            out.append(run)
        else:
            out.insert(0, run)
    return out


class EventLog:
    """The numbered events of one watched run on this server (see the module docstring).

    Example:
        >>> log = EventLog("r1")
        >>> log.update(progress)          # the first read: the run and every instance
        4
        >>> log.start(f"{log.epoch}.2")   # resume after event 2
        2
    """

    def __init__(self, run_id: str, *, epoch: str | None = None) -> None:
        self.run_id = run_id
        self.epoch = epoch or secrets.token_hex(4)
        self.events: list[LiveEvent] = []
        self.last: RunProgress | None = None

    @property
    def is_final(self) -> bool:
        """The run has ended and its final state is in the log: nothing more will come."""
        return self.last is not None and self.last.state.is_final

    def update(self, progress: RunProgress) -> int:
        """Append the events from the previous read to `progress`; how many were appended."""
        found = changes(self.last, progress)
        self.last = progress
        n = len(self.events)
        self.events.extend(LiveEvent(seq=n + i + 1, kind=kind, data=data)
                           for i, (kind, data) in enumerate(found))
        return len(found)

    def event_id(self, event: LiveEvent) -> str:
        return f"{self.epoch}.{event.seq}"

    def start(self, last_event_id: str | None) -> int:
        """The index in `events` to stream from for a client that last saw `last_event_id`:
        right after it when it is this log's, else 0 (the whole log)."""
        if not last_event_id:
            return 0
        epoch, _, seq = last_event_id.strip().rpartition(".")
        if epoch != self.epoch or not seq.isdigit():
            return 0
        return min(int(seq), len(self.events))

    def is_done_for(self, last_event_id: str | None) -> bool:
        """The client has seen every event of a run that has ended (an EventSource that
        reconnects after the end gets 204 No Content, which stops it reconnecting)."""
        return (self.is_final and bool(last_event_id)
                and self.start(last_event_id) == len(self.events) > 0)


def encode(log: EventLog, events: Sequence[LiveEvent]) -> bytes:
    """Server-Sent Events frames for `events` (one `id:`, `event:` and `data:` each)."""
    parts = [
        f"id: {log.event_id(e)}\nevent: {e.kind}\n"
        f"data: {json.dumps(e.data, separators=(',', ':'))}\n\n"
        for e in events
    ]
    return "".join(parts).encode()


def preamble() -> bytes:
    """The stream's first frame: how long a client should wait before reconnecting."""
    return f"retry: {RETRY_MS}\n\n".encode()


HEARTBEAT = b": keep-alive\n\n"
