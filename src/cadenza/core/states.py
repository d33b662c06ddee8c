"""The one state machine of Cadenza.

Holds the task and run states, the table of legal moves and `transition()`. Only the engine
calls `transition()`; the store persists what the engine hands it; surfaces (CLI, API) ask
the engine to act and never write a state themselves. Decisions (retry or fail, which trigger
rule is met) live in `engine/rules.py`; this table only says whether a move is legal.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cadenza.core import clock
from cadenza.core.errors import IllegalTransition


class TaskState(enum.StrEnum):
    PENDING = "pending"  # waiting for upstream task instances
    SCHEDULED = "scheduled"  # upstreams allow it; waiting for a pool slot or resources
    QUEUED = "queued"  # handed to the executor
    RUNNING = "running"  # an attempt is executing
    UP_FOR_RETRY = "up_for_retry"  # an attempt failed; the next waits for its delay
    SUCCESS = "success"
    CACHED = "cached"  # output reused from an earlier successful instance
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_TASK_STATES

    @property
    def is_ok(self) -> bool:
        """Finished with an output downstream tasks may consume."""
        return self in (TaskState.SUCCESS, TaskState.CACHED)


FINAL_TASK_STATES: Final = frozenset(
    {
        TaskState.SUCCESS,
        TaskState.CACHED,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.UPSTREAM_FAILED,
        TaskState.CANCELLED,
    }
)

# Unfinished states that a crash may leave behind; resume puts them back to PENDING.
ACTIVE_TASK_STATES: Final = frozenset(
    {TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.UP_FOR_RETRY}
)


class RunState(enum.StrEnum):
    QUEUED = "queued"  # created, not yet claimed by a driver
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED)


_T = TaskState
_LEGAL: Final[Mapping[TaskState, frozenset[TaskState]]] = {
    # A mapped task's summary row (map index -1) never runs itself: it goes PENDING ->
    # RUNNING when it expands, then to the state that summarises its instances; an
    # expansion over an empty list goes straight to SUCCESS.
    _T.PENDING: frozenset(
        {
            _T.SCHEDULED,
            _T.CACHED,
            _T.SKIPPED,
            _T.UPSTREAM_FAILED,
            _T.CANCELLED,
            _T.SUCCESS,
            _T.RUNNING,
        }
    ),
    _T.SCHEDULED: frozenset({_T.QUEUED, _T.CACHED, _T.CANCELLED, _T.PENDING, _T.FAILED}),
    # QUEUED/RUNNING -> PENDING: the worker or driver was lost; the attempt is retried.
    _T.QUEUED: frozenset(
        {_T.RUNNING, _T.SUCCESS, _T.FAILED, _T.UP_FOR_RETRY, _T.CANCELLED, _T.PENDING}
    ),
    # RUNNING -> SKIPPED / UPSTREAM_FAILED: only a mapped summary row, whose instances were.
    _T.RUNNING: frozenset(
        {
            _T.SUCCESS,
            _T.FAILED,
            _T.UP_FOR_RETRY,
            _T.CANCELLED,
            _T.PENDING,
            _T.SKIPPED,
            _T.UPSTREAM_FAILED,
        }
    ),
    _T.UP_FOR_RETRY: frozenset({_T.SCHEDULED, _T.CANCELLED, _T.PENDING}),
    # Terminal states leave only through clear() (resume, retry from the UI).
    _T.SUCCESS: frozenset(),
    _T.CACHED: frozenset(),
    _T.FAILED: frozenset(),
    _T.SKIPPED: frozenset(),
    _T.UPSTREAM_FAILED: frozenset(),
    _T.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One legal move of one task instance, as the engine hands it to the store."""

    task_id: str
    map_index: int
    old: TaskState
    new: TaskState
    at: datetime
    reason: str = ""


def is_legal(old: TaskState, new: TaskState) -> bool:
    return new in _LEGAL[old]


def transition(
    task_id: str, map_index: int, old: TaskState, new: TaskState, *, reason: str = ""
) -> Transition:
    """Return the move `old -> new` or raise `IllegalTransition` (always a Cadenza bug)."""
    if new not in _LEGAL[old]:
        raise IllegalTransition(task_id, map_index, old, new)
    return Transition(
        task_id=task_id, map_index=map_index, old=old, new=new, at=clock.now(), reason=reason
    )


def clear(task_id: str, map_index: int, old: TaskState, *, reason: str) -> Transition:
    """The one way out of a terminal state: back to PENDING, for resume or a manual retry."""
    return Transition(
        task_id=task_id,
        map_index=map_index,
        old=old,
        new=TaskState.PENDING,
        at=clock.now(),
        reason=reason,
    )


def run_state_of(states: Iterable[TaskState], *, cancelled: bool = False) -> RunState:
    """A run's state, computed from its task states by this one function.

    1. Anything still unfinished -> RUNNING.
    2. The run was cancelled -> CANCELLED.
    3. Any FAILED / UPSTREAM_FAILED / CANCELLED task instance -> FAILED.
    4. Otherwise (success, cached, skipped) -> SUCCESS.
    """
    seen = set(states)
    if any(not s.is_final for s in seen):
        return RunState.RUNNING
    if cancelled or TaskState.CANCELLED in seen:
        return RunState.CANCELLED if cancelled else RunState.FAILED
    if seen & {TaskState.FAILED, TaskState.UPSTREAM_FAILED}:
        return RunState.FAILED
    return RunState.SUCCESS
