"""`cadenza`'s exit code for an error: 2 when the command asked for something it cannot do
as asked (the API's 4xx), 1 when something failed while doing it (the API's 5xx, a failed
run). A store that does not answer is exercised end to end in tests/e2e/test_cli.py."""

from __future__ import annotations

import pytest

from cadenza.cli.main import _error_exit_code
from cadenza.core import errors as e
from cadenza.executors.envs import EnvBuildError

USAGE = [e.UsageError("x"), e.ParameterError("x"), e.RunNotFound("x"), e.PipelineNotFound("x"),
         e.ConfigError("x"), e.StateConflict("x"), e.RunConflict("x"), e.UserCodeError("x"),
         e.NotAuthenticated("x"), e.DefinitionError.single("bad", pipeline="p", hint="fix it")]
FAILED = [e.StoreError("x"), e.ArtifactError("x"), e.RunTakenOver("x"), e.InternalError("x"),
          e.WorkerLost("x"), e.TaskFailed("x"), e.SensorTimeout("x"), e.CommandFailed("x"),
          EnvBuildError("x")]


@pytest.mark.parametrize("error", USAGE, ids=lambda x: type(x).__name__)
def test_what_the_command_asked_wrong_exits_2(error: e.CadenzaError) -> None:
    assert _error_exit_code(error) == 2


@pytest.mark.parametrize("error", FAILED, ids=lambda x: type(x).__name__)
def test_what_failed_while_doing_it_exits_1(error: e.CadenzaError) -> None:
    assert _error_exit_code(error) == 1
