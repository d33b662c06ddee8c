"""Records the scheduling store (`store/scheduling.py`) takes and returns: a pipeline's
schedule state, a run to create with its dedupe key, a processed trigger event, an SLA miss.
Core records, so the store returns no dataclass of its own (STYLE §1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cadenza.core.records import RunRecord, TaskInstanceRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleState:
    pipeline: str
    paused: bool = False
    last_logical_date: datetime | None = None  # newest interval the scheduler created
    asset_versions: dict[str, int] = field(default_factory=dict)  # consumed by the last run
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """A queued run to create: the run, its task instances, and its dedupe key (if any)."""

    run: RunRecord
    task_instances: Sequence[TaskInstanceRecord]
    key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerEventRecord:
    pipeline: str
    source: str
    message_id: str
    status: str  # "run": a run was created; "invalid": no run, see error
    run_id: str | None = None
    error: str | None = None
    payload: dict[str, Any] | None = None
    received_at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventOutcome:
    """What `record_event` did: `created` is False for a redelivered message."""

    created: bool
    event: TriggerEventRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaMissRecord:
    run_id: str
    pipeline: str
    sla_s: float
    deadline_at: datetime
    detected_at: datetime
