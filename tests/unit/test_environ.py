"""executors/environ.py: the driver's environment as its worker processes see it."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from cadenza.executors.environ import (
    apply_environment,
    driver_environment,
    environment_change,
    overriding,
)

NAME = "CADENZA_TEST_ENVIRON"


def test_a_variable_a_task_set_for_itself_is_not_the_drivers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU task on threads sets CUDA_VISIBLE_DEVICES in the driver's process for its
    duration: a worker started or caught up meanwhile must not get that task's devices."""
    monkeypatch.setenv(NAME, "driver")
    monkeypatch.delenv(NAME + "_NEW", raising=False)
    with overriding({NAME: "task", NAME + "_NEW": "task"}):
        assert os.environ[NAME] == "task"
        env, _ = driver_environment()
        assert env[NAME] == "driver" and NAME + "_NEW" not in env
    assert os.environ[NAME] == "driver" and NAME + "_NEW" not in os.environ


def test_two_tasks_setting_one_variable_put_it_back_when_the_last_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlapping, not nested (two threads): the first to end leaves the other's value, the
    last puts back the driver's (before, the second to end put back the first one's)."""
    monkeypatch.delenv(NAME, raising=False)
    first, second = ExitStack(), ExitStack()
    first.enter_context(overriding({NAME: "0"}))
    second.enter_context(overriding({NAME: "1"}))
    first.close()
    assert os.environ[NAME] == "1"
    assert NAME not in driver_environment()[0]
    second.close()
    assert NAME not in os.environ


def test_a_deleted_working_directory_gives_the_last_known(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert driver_environment(str(tmp_path))[1] == str(tmp_path)
    assert driver_environment()[1] is None


def test_a_change_applied_keeps_what_the_worker_set_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = {"A": "1", "B": "2", "GONE": "x"}
    new = {"A": "1", "B": "3", "ADDED": "y"}
    changed, removed = environment_change(old, new)
    assert changed == {"B": "3", "ADDED": "y"} and removed == ["GONE"]
    for key in ("B", "ADDED", "GONE", "OWN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GONE", "x")
    monkeypatch.setenv("OWN", "the worker's")
    monkeypatch.chdir(tmp_path)
    apply_environment(changed, removed, None)  # None: the driver's folder is gone, stay
    assert (os.environ["B"], os.environ["ADDED"], os.environ["OWN"]) == ("3", "y", "the worker's")
    assert "GONE" not in os.environ and os.getcwd() == str(tmp_path)
