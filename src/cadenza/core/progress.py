"""Records the live views read from the store (`store/live.py`): a run's progress (its state
and the state columns of its task instances, what a live event stream diffs), the store-wide
counts `/metrics` reports, and finished attempts (task duration histograms).

Core records, so the store returns no dataclass of its own (STYLE §1). Small on purpose: a
live view polls them, so they carry the state columns and nothing heavy (no outputs, errors
or cache details).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cadenza.core.states import RunState, TaskState


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInstanceProgress:
    """The state columns of one task instance."""

    task_id: str
    map_index: int = -1
    state: TaskState
    attempt: int = 0
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunProgress:
    """A run's state and its task instances' state columns, read in one transaction."""

    run_id: str
    pipeline: str
    state: RunState
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    task_instances: tuple[TaskInstanceProgress, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreCounts:
    """What `/metrics` gauges: runs by state (all of them), task instances of unfinished runs
    by state, recorded SLA misses by pipeline, processed trigger events by status."""

    runs: dict[RunState, int] = field(default_factory=dict)
    active_task_instances: dict[TaskState, int] = field(default_factory=dict)
    sla_misses: dict[str, int] = field(default_factory=dict)
    trigger_events: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedAttempt:
    """An attempt that ended: what a task duration histogram observes."""

    run_id: str
    pipeline: str
    task_id: str
    map_index: int
    attempt: int
    state: TaskState
    started_at: datetime
    ended_at: datetime

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.ended_at - self.started_at).total_seconds())
