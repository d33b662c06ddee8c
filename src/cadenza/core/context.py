"""The task context: what `get_context()` returns inside a running task.

Lives in core so that the worker (executors) can set it and authoring can re-export
`get_context` without either importing the other.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cadenza.core.errors import UsageError

if TYPE_CHECKING:  # core.security is imported only when a task reads a secret
    import logging

    from cadenza.core.task_secrets import Secrets


def _task_logger() -> logging.Logger:
    # logging is imported by the first task, not here: `import cadenza` imports this module,
    # and logging (with traceback and string) is ~20 M instructions of a cold start before
    # the forkserver starts (bench/cold_start.py).
    import logging

    return logging.getLogger("cadenza.task")


@dataclass(slots=True, kw_only=True)
class TaskContext:
    run_id: str
    pipeline: str
    task_id: str
    map_index: int
    attempt: int
    logical_date: datetime | None = None
    data_interval: tuple[datetime, datetime] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=_task_logger)
    extra: dict[str, Any] = field(default_factory=dict)
    _metrics: list[tuple[str, float | str, str]] = field(default_factory=list)
    sinks: list[Any] = field(default_factory=list)  # experiment trackers (MLflow, ...)
    _secrets: Secrets | None = None
    # The attempt's `timeout` in seconds (None: none), for task kinds that must stop work
    # outside Python at the deadline (a Spark job in the JVM) when the executor cannot kill
    # the worker process (threads, inline).
    timeout_s: float | None = None

    @property
    def secrets(self) -> Secrets:
        """The secrets set with `cadenza secrets set`, by name; their values are masked as
        `***` in this task's log and error.

        Example:
            @task
            def call_api():
                key = get_context().secrets["OPENAI_API_KEY"]
        """
        if self._secrets is None:
            from cadenza.core.task_secrets import NO_SECRETS

            return NO_SECRETS
        return self._secrets

    def log_metric(self, name: str, value: float) -> None:
        """Record a numeric metric for this task instance (kept with the run, and sent to
        the pipeline's tracker, e.g. MLflow)."""
        self._metrics.append((str(name), float(value), "metric"))
        for sink in self.sinks:
            sink.log_metric(str(name), float(value))

    def log_param(self, name: str, value: Any) -> None:
        """Record a parameter for this task instance (kept with the run, as text)."""
        self._metrics.append((str(name), str(value), "param"))
        for sink in self.sinks:
            sink.log_param(str(name), value)

    @property
    def metrics(self) -> tuple[tuple[str, float | str, str], ...]:
        return tuple(self._metrics)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "cadenza_task_context", default=None
)


def get_context() -> TaskContext:
    """The context of the task running in this thread.

    Example:
        @task
        def train(df):
            ctx = get_context()
            ctx.logger.info("training for run %s", ctx.run_id)
            ctx.log_metric("auc", 0.93)
    """
    ctx = _current.get()
    if ctx is None:
        raise UsageError(
            "get_context() was called outside a running task",
            hint="call it inside a function decorated with @task while a pipeline runs",
        )
    return ctx


def current_context() -> TaskContext | None:
    """The running task's context, or None outside a task (no error)."""
    return _current.get()


def task_where() -> dict[str, str | None]:
    """`pipeline=` and `task=` of the running task (None outside one), for the errors a
    task kind raises: `CommandFailed(msg, **task_where(), hint=...)`."""
    ctx = _current.get()
    if ctx is None:
        return {"pipeline": None, "task": None}
    label = ctx.task_id if ctx.map_index < 0 else f"{ctx.task_id}[{ctx.map_index}]"
    return {"pipeline": ctx.pipeline, "task": label}


def set_context(ctx: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _current.set(ctx)


def reset_context(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
