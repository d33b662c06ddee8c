"""The experiment-tracking hook (MLflow and the like), as the engine and worker see it.

A pipeline's `tracking=` object implements `Tracker`. The driver calls `start_run` once per
pipeline run and `end_run` when it ends; each task attempt runs inside `task_scope`, in the
worker (so the object must be picklable), which yields a sink that receives the task's
`log_metric` / `log_param` calls. A tracker that fails must never fail the run unless it
says so (`fail_on_error`): the driver records the error once as a warning on the run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol


class MetricSink(Protocol):
    def log_metric(self, name: str, value: float) -> None: ...

    def log_param(self, name: str, value: Any) -> None: ...


class Tracker(Protocol):
    fail_on_error: bool

    def start_run(
        self, *, pipeline: str, run_id: str, params: dict[str, Any], tags: tuple[str, ...]
    ) -> dict[str, Any]:
        """Open the tracking run; returns what to keep on the Cadenza run (e.g. its id)."""

    def end_run(self, *, run_id: str, state: str, info: dict[str, Any]) -> None:
        """Close the tracking run opened by start_run."""

    def task_scope(self, ctx: Any, info: dict[str, Any]) -> AbstractContextManager[MetricSink | None]:
        """Around one task attempt, in the worker: open a nested run, yield its sink."""
