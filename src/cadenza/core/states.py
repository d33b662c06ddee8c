"""The one state machine of Cadenza.

Holds the task and run states, their two tables of legal moves, and the functions that move
them: `transition()` / `clear()` for a task instance, `move_task()` for a stored task
instance row, `move_run()` / `reopen_run()` for a run. No other code assigns a state
(tests/unit/test_state_owner.py checks it). Only the engine moves states; the store persists
what the engine hands it; surfaces (CLI, API) ask the engine to act and never write a state
themselves. Decisions (retry or fail, which trigger
rule is met) live in `engine/rules.py`; this table only says whether a move is legal.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cadenza.core import clock
from cadenza.core.errors import IllegalTransition

if TYPE_CHECKING:  # records.py imports this module: the types only, for the checker
    from cadenza.core.records import RunRecord, TaskInstanceRecord


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


def move_task(
    ti: TaskInstanceRecord, new: TaskState, *, reason: str = "", **changes: Any
) -> TaskInstanceRecord:
    """A stored task instance row moved to `new` (checked by the table), with `changes`.

    For code that acts on a run no driver holds (cancel, fail before start): it moves rows,
    not a driver's live instances."""
    transition(ti.task_id, ti.map_index, ti.state, new, reason=reason)
    return replace(ti, state=new, reason=reason or ti.reason, **changes)


_R = RunState
_RUN_LEGAL: Final[Mapping[RunState, frozenset[RunState]]] = {
    # QUEUED -> FAILED: a claimed queued run that cannot start (its executor or pipeline).
    _R.QUEUED: frozenset({_R.RUNNING, _R.CANCELLED, _R.FAILED}),
    _R.RUNNING: frozenset({_R.SUCCESS, _R.FAILED, _R.CANCELLED}),
    # Final states leave only through reopen_run() (resume).
    _R.SUCCESS: frozenset(),
    _R.FAILED: frozenset(),
    _R.CANCELLED: frozenset(),
}


def is_legal_run_move(old: RunState, new: RunState) -> bool:
    return new in _RUN_LEGAL[old]


def move_run(run: RunRecord, new: RunState, **changes: Any) -> RunRecord:
    """`run` moved to `new`, with `changes` to its other fields; IllegalTransition when the
    table forbids it (always a Cadenza bug)."""
    if new not in _RUN_LEGAL[run.state]:
        raise IllegalTransition(f"run {run.run_id}", -1, run.state, new)
    return replace(run, state=new, **changes)


def reopen_run(run: RunRecord, **changes: Any) -> RunRecord:
    """The one way back to RUNNING for a run that ended or whose driver died: resume."""
    return replace(run, state=RunState.RUNNING, **changes)


def requeue_run(run: RunRecord, **changes: Any) -> RunRecord:
    """The one way back to QUEUED for a run that ended: a retry or resume asked from another
    process (the API). A scheduler claims it like any queued run and drives it again,
    rerunning what `run.extra[RERUN]` names (`engine/rerun.py`)."""
    if not run.state.is_final:
        raise IllegalTransition(f"run {run.run_id}", -1, run.state, RunState.QUEUED)
    return replace(run, state=RunState.QUEUED, **changes)


def run_state_of(states: Iterable[TaskState]) -> RunState:
    """A run's state, computed from its task states by this one function.

    1. Anything still unfinished -> RUNNING.
    2. Any FAILED / UPSTREAM_FAILED / CANCELLED task instance -> FAILED.
    3. Otherwise (success, cached, skipped) -> SUCCESS.

    A run that was cancelled ends CANCELLED whatever its task states: that is the engine's
    decision (`engine/active.py`), not something the task states can tell.
    """
    seen = set(states)
    if any(not s.is_final for s in seen):
        return RunState.RUNNING
    if seen & {TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED}:
        return RunState.FAILED
    return RunState.SUCCESS


# One colour per state, defined here once: the CLI styles states with it (cli/console.py) and
# the web UI's graph, grid, Gantt and badges use it through frontend/src/states.gen.ts, which
# frontend/scripts/states.py generates from this table (tests/unit/test_ui_static.py checks
# the committed file matches). Run states share task state names. Mid-tone colours that read
# on both the light and the dark theme. "crashed" is shown, never stored: a run nobody drives.
STATE_COLOURS: Final[Mapping[str, str]] = {
    TaskState.PENDING: "#9ca3af",
    TaskState.SCHEDULED: "#a5b4fc",
    TaskState.QUEUED: "#60a5fa",
    TaskState.RUNNING: "#2563eb",
    TaskState.UP_FOR_RETRY: "#eab308",
    TaskState.SUCCESS: "#16a34a",
    TaskState.CACHED: "#0891b2",
    TaskState.FAILED: "#dc2626",
    TaskState.SKIPPED: "#f472b6",
    TaskState.UPSTREAM_FAILED: "#f97316",
    TaskState.CANCELLED: "#b45309",
    "crashed": "#a21caf",
}
