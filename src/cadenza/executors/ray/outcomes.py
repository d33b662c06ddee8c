"""The outcome of a Ray call that did not come back with one of its own: stopped (timeout,
cancel, shutdown), lost with its worker or node, refused (the cluster can never place it),
or its environment could not be built. Ray's exception types are translated here, at the
executor layer, into Cadenza's kinds (STYLE §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import ConfigError, TaskCancelled, TaskTimeout, WorkerLost
from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.executors.base import TaskCall, TaskOutcome, describe_exception

LOST_HINT = ("a node left the cluster, or its worker process was killed (out of memory: "
             "declare resources={'memory': ...}); the attempt is retried per the task's "
             "retries=")


def failed(call: TaskCall, error: ErrorInfo, *, started_at: datetime | None,
           worker: str | None = None) -> TaskOutcome:
    return TaskOutcome(run_id=call.run_id, task_id=call.task_id, map_index=call.map_index,
                       attempt=call.attempt, ok=False, error=error, started_at=started_at,
                       ended_at=clock.now(), worker=worker)


def stopped(call: TaskCall, reason: str, *, started_at: datetime | None,
            worker: str | None) -> TaskOutcome:
    """Case timeout / cancelled / shutdown: the driver killed the actor (or never sent it)."""
    if reason == "timeout":
        error = describe_exception(
            TaskTimeout(f"timed out after {call.timeout_s:g} s"), kind=ErrorKind.TIMEOUT)
    else:
        text = "cancelled while running" if worker else "cancelled before it started"
        if reason == "shutdown":
            text += ": the ray executor shut down"
        error = describe_exception(TaskCancelled(text), kind=ErrorKind.CANCELLED)
    return failed(call, error, started_at=started_at, worker=worker)


def refused(call: TaskCall, why: str) -> TaskOutcome:
    """The cluster can never run this call (no node has its resources; another Python)."""
    exc = ConfigError(f"task '{call.label}' of pipeline '{call.pipeline}' can never start "
                       f"on the Ray cluster: {why}",
                       pipeline=call.pipeline, task=call.label,
                       hint="lower its resources=..., or add a node that has them "
                            "(ray start --address HEAD:6379 --resources '{\"NAME\": 1}')")
    return failed(call, describe_exception(exc, kind=ErrorKind.RESOURCES), started_at=None)


def is_lost(exc: BaseException) -> bool:
    """True for Ray's ways of saying the process or node running the call is gone."""
    import ray.exceptions as rex

    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
            rex.LocalRayletDiedError, rex.RaySystemError,
            getattr(rex, "ActorUnavailableError", rex.RayActorError))
    return isinstance(exc, lost)


def of_exception(call: TaskCall, exc: BaseException, *, started_at: datetime | None,
                 worker: str | None, node: str | None) -> TaskOutcome:
    """The outcome a Ray exception from the actor's call stands for.

    1. the actor could not start on its node (a runtime_env given to the cluster failed)
       -> the task fails with Ray's message (not retried: it would fail the same way);
    2. the actor, its worker process or its node died (RayActorError, WorkerCrashedError,
       NodeDiedError, ObjectLostError, ...) -> worker_lost, retried per policy;
    3. the call was cancelled inside Ray -> cancelled;
    4. anything else Ray raised (a Cadenza bug in the actor) -> worker_lost with its text.
    """
    import ray.exceptions as rex

    if isinstance(exc, rex.RuntimeEnvSetupError):  # case 1
        error = ConfigError(f"the Ray worker for task '{call.label}' could not start: its "
                             f"runtime_env failed: {str(exc).strip()[-2000:]}",
                             pipeline=call.pipeline, task=call.label,
                             hint="fix the cluster's runtime_env (ray.init/ray job submit)")
        return failed(call, describe_exception(error), started_at=started_at, worker=worker)
    if isinstance(exc, rex.TaskCancelledError):  # case 3
        return stopped(call, "cancelled", started_at=started_at, worker=worker)
    first = (str(exc).strip().splitlines() or [""])[0][:500]
    where = f" on node {node[:8]}" if node else ""
    if is_lost(exc):  # case 2
        message = (f"the Ray worker {worker or '(starting)'}{where} died while running the "
                   f"task ({type(exc).__name__}: {first})")
    else:  # case 4
        message = f"the Ray call failed{where}: {type(exc).__name__}: {first}"
    lost = WorkerLost(message, pipeline=call.pipeline, task=call.label, hint=LOST_HINT)
    return failed(call, describe_exception(lost, kind=ErrorKind.WORKER_LOST),
                  started_at=started_at, worker=worker)


def from_fail(call: TaskCall, error: Any, *, started_at: datetime | None,
              worker: str | None) -> TaskOutcome:
    """The actor could not even run or return the call (its message says why)."""
    return failed(call, error, started_at=started_at, worker=worker)
