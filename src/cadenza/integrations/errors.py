"""Errors raised by the integrations. They read where -> what -> fix, like every CadenzaError,
and keep the third-party exception as `__cause__`."""

from __future__ import annotations

from typing import Any

from cadenza.core.errors import CadenzaError, ExternalError


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


# The errors of the task kinds below are ExternalErrors: their message names what failed and
# the fix, so the worker records no traceback of Cadenza's frames (CADENZA_VERBOSE keeps it).


class DbtFailed(IntegrationError, ExternalError):
    """A dbt task's invocation failed: a model did not build, a dbt test failed, the project
    did not compile. The message names the failing nodes (and how many rows each failing
    test returned)."""


class DbtUnavailable(DbtFailed):
    """dbt could not connect to the warehouse named by its profile. Retried by default
    (`retry_on`) when the task has retries, unlike a DbtFailed."""


class SparkUnavailable(IntegrationError, ExternalError):
    """A Spark task cannot start a SparkSession here: pyspark or Java is missing, or the
    master named cannot be reached."""


class SparkJobFailed(IntegrationError):
    """Spark raised in a Spark task's function (a failed job, an analysis error). Spark's own
    message, read while its JVM was up (the JVM stops with the task, and pyspark's errors
    ask it for their text); the traceback is the user's function's."""


class FeastFailed(IntegrationError, ExternalError):
    """A Feast task failed: the feature repository does not load or apply, materialisation
    failed, or the features asked for do not exist."""


class IntegrationMissing(IntegrationError, ExternalError):
    """A task kind's library is not installed in the environment the task runs in."""
