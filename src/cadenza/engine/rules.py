"""Pure decisions of the engine: trigger rules, retry or fail, backoff delays.

Functions here take plain values and return a decision; they touch no store, clock or
executor, so every case is unit-tested by feeding values in.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.core.states import TaskState
from cadenza.graph.model import TaskOptions, TriggerRule


class Decision(enum.StrEnum):
    WAIT = "wait"
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


@dataclass(slots=True)
class UpstreamCounts:
    """Final states of a task's upstreams seen so far, and how many are still unfinished."""

    total: int
    remaining: int
    ok: int = 0
    failed: int = 0  # failed or cancelled
    upstream_failed: int = 0
    skipped: int = 0

    def add(self, state: TaskState) -> None:
        self.remaining -= 1
        if state.is_ok:
            self.ok += 1
        elif state is TaskState.SKIPPED:
            self.skipped += 1
        elif state is TaskState.UPSTREAM_FAILED:
            self.upstream_failed += 1
        else:
            self.failed += 1


def evaluate(rule: TriggerRule, c: UpstreamCounts) -> Decision:
    """What the trigger rule says now. May decide before every upstream has finished
    (e.g. `all_success` with a failed upstream); the caller still waits for data inputs."""
    R = TriggerRule
    bad = c.failed + c.upstream_failed
    done = c.remaining == 0
    if c.total == 0:
        return Decision.RUN
    if rule is R.ALL_SUCCESS:
        if bad:
            return Decision.UPSTREAM_FAILED
        if done:
            return Decision.SKIP if c.skipped else Decision.RUN
    elif rule is R.ALL_FAILED:
        if c.ok or c.skipped:
            return Decision.SKIP
        if done:
            return Decision.RUN
    elif rule is R.ALL_DONE or rule is R.ALWAYS:
        if done:
            return Decision.RUN
    elif rule is R.ONE_SUCCESS:
        if c.ok:
            return Decision.RUN
        if done:
            return Decision.SKIP if c.skipped == c.total else Decision.UPSTREAM_FAILED
    elif rule is R.ONE_FAILED:
        if bad:
            return Decision.RUN
        if done:
            return Decision.SKIP
    elif rule is R.NONE_FAILED:
        if bad:
            return Decision.UPSTREAM_FAILED
        if done:
            return Decision.RUN
    elif rule is R.NONE_FAILED_MIN_ONE_SUCCESS:
        if bad:
            return Decision.UPSTREAM_FAILED
        if done:
            return Decision.RUN if c.ok else Decision.SKIP
    elif rule is R.NONE_SKIPPED:
        if c.skipped:
            return Decision.SKIP
        if done:
            return Decision.RUN
    return Decision.WAIT


NOT_RETRIED = frozenset({ErrorKind.SERIALIZATION, ErrorKind.INPUT, ErrorKind.CANCELLED,
                         ErrorKind.RESOURCES, ErrorKind.BRANCH})


FREE_LOST_WORKER_RETRIES = 1
"""Attempts per task instance whose worker was lost (killed from outside: the OOM killer, a
node gone, `kill -9`) that do not count against the task's `retries`: the task did nothing
wrong, so even a task with `retries=0` gets one more attempt. A second loss counts as usual
(a task that kills its worker every time, e.g. by running out of memory, then fails naming
the signal). Ray's split of system failures from application errors is the same idea."""


def lost_worker_is_free(error: ErrorInfo, free_used: int) -> bool:
    """Does this failed attempt not count against `retries` (see FREE_LOST_WORKER_RETRIES)?"""
    return error.kind == ErrorKind.WORKER_LOST and free_used < FREE_LOST_WORKER_RETRIES


def should_retry(options: TaskOptions, attempt: int, error: ErrorInfo) -> bool:
    """Retry after failed attempt number `attempt` (1-based, counting only the attempts that
    count against `retries`: not a free one after a lost worker, `lost_worker_is_free`)?

    1. No retries left (attempt > retries) -> no.
    2. The failure cannot change by retrying (bad output type, missing input, cancel) -> no.
    3. `retry_on` given and the exception is none of those classes (by name, MRO) -> no.
       Timeouts and lost workers are retried whatever retry_on says.
    4. Otherwise -> yes.
    """
    if attempt > options.retries:
        return False
    if error.kind in NOT_RETRIED:
        return False
    if options.retry_on and error.kind == ErrorKind.EXCEPTION:
        wanted = options.retry_on_names
        return any(name in wanted for name in error.type_mro)
    return True


def retry_delay_s(options: TaskOptions, attempt: int, *, rng: random.Random | None = None) -> float:
    """Delay before the attempt after failed attempt `attempt` (1-based).

    delay = retry_delay * retry_backoff ** (attempt - 1), capped at max_retry_delay, then
    up to `retry_jitter` x delay added at random (so many retrying tasks do not align).
    """
    delay = options.retry_delay_s * (options.retry_backoff ** max(attempt - 1, 0))
    if options.max_retry_delay_s is not None:
        delay = min(delay, options.max_retry_delay_s)
    if options.retry_jitter > 0 and delay > 0:
        r = (rng or random).random()
        delay += delay * options.retry_jitter * r
    return max(delay, 0.0)


def summarize_mapped(states: list[TaskState]) -> TaskState:
    """The summary state of a mapped task from its instances' final states."""
    if not states:
        return TaskState.SUCCESS
    seen = set(states)
    if TaskState.FAILED in seen or TaskState.CANCELLED in seen:
        return TaskState.FAILED
    if TaskState.UPSTREAM_FAILED in seen:
        return TaskState.UPSTREAM_FAILED
    if seen == {TaskState.SKIPPED}:
        return TaskState.SKIPPED
    return TaskState.SUCCESS


def branch_choice(value: object, direct: list[str]) -> tuple[list[str] | None, str]:
    """Validate what a branch task returned: (chosen ids, "") or (None, error message)."""
    if isinstance(value, str):
        chosen = [value]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        chosen = list(value)
    elif value is None:
        chosen = []
    else:
        return None, (
            f"a branch task must return a task id or a list of task ids, got "
            f"{type(value).__name__}"
        )
    unknown = [c for c in chosen if c not in direct]
    if unknown:
        return None, (
            f"branch returned '{unknown[0]}', which is not one of its direct downstream tasks "
            f"({', '.join(direct)})"
        )
    return chosen, ""
