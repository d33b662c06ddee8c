"""Errors raised by the integrations. They read where -> what -> fix, like every CadenzaError,
and keep the third-party exception as `__cause__`."""

from __future__ import annotations

from typing import Any

from cadenza.core.errors import CadenzaError


class IntegrationError(CadenzaError):
    """Base of the errors raised by cadenza.integrations."""


class TrackingUnavailable(IntegrationError):
    """The experiment tracker (an MLflow store or server) could not be reached or written."""


class ModelRegistrationError(IntegrationError):
    """A model could not be logged to or registered in the MLflow model registry."""


class DataValidationError(IntegrationError):
    """A data frame failed its schema. The message is the readable report; the details are
    kept as attributes for code that wants them."""

    def __init__(
        self,
        message: str,
        *,
        pipeline: str | None = None,
        task: str | None = None,
        hint: str | None = None,
        schema: str | None = None,
        failing_rows: int = 0,
        failure_cases: Any = None,
    ) -> None:
        self.schema = schema
        self.failing_rows = failing_rows
        self.failure_cases = failure_cases
        super().__init__(message, pipeline=pipeline, task=task, hint=hint)


def task_location() -> tuple[str | None, str | None]:
    """(pipeline, task label) of the task running in this thread, or (None, None)."""
    from cadenza.core.context import _current

    ctx = _current.get()
    if ctx is None:
        return None, None
    label = ctx.task_id if ctx.map_index < 0 else f"{ctx.task_id}[{ctx.map_index}]"
    return ctx.pipeline, label
