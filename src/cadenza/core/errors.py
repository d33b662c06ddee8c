"""The CadenzaError tree.

User-facing errors carry `pipeline`, `task` and `hint`, and read where -> what -> fix.
Errors of third-party libraries are translated at the layer that catches them
(`raise StoreError(...) from exc`). Cancel and timeout signals derive from BaseException so
that a user's `except Exception` cannot swallow them.

Catch by what went wrong (the surfaces map these to exit codes and HTTP statuses):

    CadenzaError
    ├── DefinitionError      a pipeline, task, schedule or trigger is defined wrong
    ├── ParameterError       run parameters do not match the pipeline's signature
    ├── UsageError           a command or call got something it cannot use (HTTP 400)
    ├── NotFound             RunNotFound, PipelineNotFound, TaskNotFound, ArtifactNotFound,
    │                        UserNotFound, TokenNotFound, SecretNotFound (404)
    ├── AuthError            NotAuthenticated (401), PermissionDenied (403)
    ├── StateConflict        an action the run's current state does not allow (HTTP 409)
    ├── UserCodeError        importing the user's module raised (the cause is __cause__)
    ├── ConfigError          settings or cadenza.toml are wrong
    ├── StoreError, ArtifactError   the metadata or artifact store failed
    ├── TaskFailed, WorkerLost, SensorTimeout, RunConflict (RunTakenOver)   what happened
    │                        to a run
    ├── ExternalError        a task's shell command, SQL query or HTTP request failed:
    │                        CommandFailed, QueryFailed (DatabaseUnavailable),
    │                        HttpFailed (HttpUnavailable); the message says it all, so the
    │                        attempt keeps no traceback of Cadenza's frames
    └── InternalError        a bug in Cadenza (IllegalTransition)

Never raise CadenzaError itself (a unit test checks): pick the class a caller would catch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class CadenzaError(Exception):
    """Base of every error Cadenza raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        pipeline: str | None = None,
        task: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.pipeline = pipeline
        self.task = task
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.pipeline:
            where.append(f"pipeline '{self.pipeline}'")
        if self.task:
            where.append(f"task '{self.task}'")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  Fix: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "message": self.message,
            "pipeline": self.pipeline,
            "task": self.task,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One problem found while validating a definition."""

    message: str
    task: str | None = None
    hint: str | None = None

    def render(self) -> str:
        head = f"task '{self.task}': {self.message}" if self.task else self.message
        return head + (f"\n    Fix: {self.hint}" if self.hint else "")


class DefinitionError(CadenzaError):
    """A pipeline, task, schedule or trigger is defined wrong.

    `DefinitionError(pipeline, problems)` lists every problem a validation found at once.
    `DefinitionError.single(message, ...)` is one problem found on its own (a schedule, a
    sensor or a trigger checked when it is built) and reads like any other CadenzaError.
    """

    def __init__(self, pipeline: str | None, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        noun = "problem" if len(problems) == 1 else "problems"
        where = f" in pipeline '{pipeline}'" if pipeline else ""
        body = "\n".join("  " + p.render() for p in problems)
        self._text: str | None = f"{len(problems)} {noun}{where}:\n{body}"
        super().__init__(first.message, pipeline=pipeline, task=first.task, hint=first.hint)

    @classmethod
    def single(
        cls,
        message: str,
        *,
        pipeline: str | None = None,
        task: str | None = None,
        hint: str | None = None,
    ) -> DefinitionError:
        err = cls.__new__(cls)
        err.problems = [Problem(message=message, task=task, hint=hint)]
        err._text = None
        CadenzaError.__init__(err, message, pipeline=pipeline, task=task, hint=hint)
        return err

    @property
    def is_listing(self) -> bool:
        """True for the "N problems in pipeline ..." form, False for a single() one."""
        return self._text is not None

    def _render(self) -> str:
        return self._text if self._text is not None else super()._render()


CadenzaDefinitionError = DefinitionError


# While `collecting_definition_errors()` is active (`cadenza pipelines check`), a @pipeline
# with problems hands its DefinitionError to the collector instead of raising it, so that the
# rest of its file goes on importing and every pipeline's problems are reported, not only the
# first's. (Here, not in authoring: the CLI turns it on, and reads pipelines only as Plans.)
_collected: list[DefinitionError] | None = None


@contextlib.contextmanager
def collecting_definition_errors() -> Iterator[list[DefinitionError]]:
    """Collect the DefinitionErrors of the pipelines defined inside the block (a check)."""
    global _collected
    previous, _collected = _collected, []
    try:
        yield _collected
    finally:
        _collected = previous


def definition_error_collector() -> list[DefinitionError] | None:
    """The list a @pipeline with problems appends its DefinitionError to, or None: raise."""
    return _collected


class ParameterError(CadenzaError):
    """Run parameters do not match the pipeline's signature."""


class UsageError(CadenzaError):
    """A command or call was given something it cannot use: a malformed value, options that
    exclude each other, an ambiguous id prefix, a request that does not fit the run or
    pipeline it names. The caller's mistake, fixed by changing the call (HTTP 400)."""


class NotFound(CadenzaError):
    """Something the caller named does not exist (HTTP 404). The subclasses say what."""


class RunNotFound(NotFound):
    """No run has this id (or id prefix)."""


class PipelineNotFound(NotFound):
    """No pipeline of this name in the file, module or project searched."""


class TaskNotFound(NotFound):
    """The pipeline or run has no task (or map index, or attempt) of this name."""


class ArtifactNotFound(NotFound):
    """No artifact in the lineage records has this SHA-256 (or prefix), or no asset has this
    version."""


class StateConflict(CadenzaError):
    """An action the current state does not allow: cancelling a run that has ended, retrying
    a task that has not failed, resuming a run that is still running. The message says why
    (the state it is in); the caller may try again once the state has changed (HTTP 409)."""


class UserCodeError(CadenzaError):
    """The user's own module raised while Cadenza imported it to find its pipelines; the
    user's exception is `__cause__`. (A task's code failing is TaskFailed.)"""


class InternalError(CadenzaError):
    """Cadenza broke one of its own rules: always a bug in Cadenza, never a user error."""


class IllegalTransition(InternalError):
    """A move the state table forbids. Always a Cadenza bug, never a user error."""

    def __init__(self, task_id: str, map_index: int, old: object, new: object) -> None:
        key = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        super().__init__(
            f"illegal state change {old} -> {new}",
            task=key,
            hint="this is a bug in Cadenza; please report it with the run's log",
        )


class TaskFailed(CadenzaError):
    """A task instance ended failed; the user's exception is `__cause__` where there is one."""


class WorkerLost(CadenzaError):
    """The process running a task died (killed, out of memory, segfault)."""


class StoreError(CadenzaError):
    """The metadata store could not be reached or written."""


class ArtifactError(CadenzaError):
    """An artifact could not be written or read back intact."""


class ConfigError(CadenzaError):
    """Settings or cadenza.toml are wrong."""


class RunConflict(CadenzaError):
    """Another driver holds the run (a concurrent resume, a live scheduler)."""


class RunTakenOver(RunConflict):
    """Another driver took the run over while this one was stopped past its lease: this
    driver's writes are refused (`WriteBatch.fence`) and it must stop."""


class SensorNotReady(Exception):
    """A sensor's poke found its condition false; the engine pokes again after its
    poke_interval (the wait holds no worker and no pool slot)."""


class SensorTimeout(CadenzaError):
    """A sensor's condition did not hold within its timeout."""


class ExternalError(CadenzaError):
    """What a shell, SQL or HTTP task ran failed (SPEC §9). Raised inside the task by
    Cadenza with the pipeline, the task, what failed and the fix; the worker records its
    message without a traceback (the frames would be Cadenza's, not the user's)."""


class CommandFailed(ExternalError):
    """A shell task's command exited with a non-zero code (or could not start)."""


class QueryFailed(ExternalError):
    """A SQL task's query failed (bad SQL, a constraint, a missing table...)."""


class DatabaseUnavailable(QueryFailed):
    """A SQL task could not reach its database, or lost the connection. Retried by
    default (`retry_on`), unlike a QueryFailed."""


class HttpFailed(ExternalError):
    """An HTTP task's request failed for good: a 4xx answer or an unusable body."""


class HttpUnavailable(HttpFailed):
    """An HTTP task's server answered 5xx (or 408/429) or could not be reached. Retried by
    default (`retry_on`), unlike an HttpFailed."""


# How an outcome names them (ErrorInfo.type): the engine and the worker compare against these.
SENSOR_NOT_READY = f"{__name__}.{SensorNotReady.__qualname__}"
SENSOR_TIMEOUT = f"{__name__}.{SensorTimeout.__qualname__}"


class TaskInterrupt(BaseException):
    """Raised inside a running task to stop it. BaseException: `except Exception` won't eat it."""


class TaskTimeout(TaskInterrupt):
    """The attempt ran past its `timeout`."""


class TaskCancelled(TaskInterrupt):
    """The run was cancelled while the attempt ran."""


# --- auth and secrets (the server's users, API tokens and the secrets tasks read) -------------


class AuthError(CadenzaError):
    """A caller of the API could not be let through. The subclasses say why."""


class NotAuthenticated(AuthError):
    """No credentials, or credentials that do not identify anyone now: a missing, unknown,
    expired or revoked API token, or a disabled user (HTTP 401)."""


class PermissionDenied(AuthError):
    """The caller is known but their role does not allow this (HTTP 403)."""


class UserNotFound(NotFound):
    """No user has this name."""


class TokenNotFound(NotFound):
    """No API token has this id."""


class SecretNotFound(NotFound, KeyError):
    """No secret has this name (or it cannot be decrypted with this key). A KeyError too, so
    `get_context().secrets.get(name)` and `name in secrets` behave like a dict's."""

    __str__ = Exception.__str__  # KeyError's would show the message quoted
