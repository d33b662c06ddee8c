"""The cache key covers the values a task reads, not only its code (issue 11, item 1): a
module constant, a module dict read through a helper, a closure variable. Real runs on the
store fixtures, with the pipeline file edited and re-imported as a user would; `plan_pipeline`
says which value changed. A value that cannot be hashed stably makes the task run every time,
with one warning line."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cadenza import RunState, TaskState
from cadenza.core import settings as settings_mod
from cadenza.engine.preview import CACHED, WILL_RUN, plan_pipeline
from cadenza.store import open_store

S = TaskState

MODULE = """
import threading

from cadenza import pipeline, task

SCALE = {scale}
CONFIG = {{"factor": {factor}, "tags": {{"a", "b"}}}}
LOCK = threading.Lock()


def factor():
    return CONFIG["factor"]


def make_offset(k):
    @task(cache=True, name="offset")
    def offset(x: int) -> int:
        return x + k
    return offset


offset = make_offset({closure})


@task(cache=True)
def scaled(x: int) -> int:
    return x * SCALE


@task(cache=True)
def configured(x: int) -> int:
    return x * factor()


@task(cache=True)
def locked(x: int) -> int:
    with LOCK:
        return x


@pipeline
def values_demo(x: int = 3):
    scaled(x)
    configured(x)
    offset(x)


@pipeline
def lock_demo(x: int = 3):  # inline only: a lock cannot travel to a worker process either
    scaled(x)
    locked(x)
"""

_counter = itertools.count()


class Project:
    """The pipeline module in tmp_path, rewritten and imported under a fresh name each time."""

    def __init__(self, folder: Path, settings: settings_mod.Settings) -> None:
        self.settings = settings
        self.path = folder / "values_user.py"
        self.fmt: dict[str, Any] = {"scale": 2, "factor": 10, "closure": 1}

    def load(self, pipeline: str = "values_demo", **changes: Any) -> Any:
        self.fmt.update(changes)
        self.path.write_text(textwrap.dedent(MODULE.format(**self.fmt)))
        spec = importlib.util.spec_from_file_location(f"values_user_{next(_counter)}", self.path)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, pipeline)


@pytest.fixture
def project(cadenza_env: settings_mod.Settings, tmp_path: Path) -> Project:
    return Project(tmp_path, cadenza_env)


def plan_of(pipeline: Any) -> dict[str, tuple[str, str]]:
    return {e.label: (e.decision, e.reason) for e in plan_pipeline(pipeline, {})}


def test_a_changed_module_constant_misses_the_cache_and_the_plan_says_why(
        project: Project, executor: str) -> None:
    first = project.load().run(executor=executor)
    assert first.state is RunState.SUCCESS and first.outputs["scaled"] == 6

    assert plan_of(project.load())["scaled"][0] == CACHED
    same = project.load().run(executor=executor)
    assert same.task_states["scaled"] is S.CACHED and same.outputs["scaled"] == 6

    changed = project.load(scale=100)
    assert plan_of(changed)["scaled"] == (WILL_RUN, "global SCALE changed")
    assert plan_of(changed)["configured"][0] == CACHED
    again = changed.run(executor=executor)
    assert again.task_states["scaled"] is S.SUCCESS  # ran again: not the stale 6
    assert again.outputs["scaled"] == 300
    assert again.task_states["configured"] is S.CACHED


def test_a_dict_read_through_a_helper_misses_the_cache_when_it_changes(project: Project) -> None:
    assert project.load().run(executor="inline").outputs["configured"] == 30
    changed = project.load(factor=20)
    assert plan_of(changed)["configured"] == (WILL_RUN, "global CONFIG changed")
    again = changed.run(executor="inline")
    assert again.task_states["configured"] is S.SUCCESS and again.outputs["configured"] == 60


def test_a_changed_closure_variable_misses_the_cache(project: Project) -> None:
    assert project.load().run(executor="inline").outputs["offset"] == 4
    changed = project.load(closure=5)
    assert plan_of(changed)["offset"] == (WILL_RUN, "closure k changed")
    again = changed.run(executor="inline")
    assert again.task_states["offset"] is S.SUCCESS and again.outputs["offset"] == 8


def test_a_global_that_cannot_be_hashed_runs_the_task_every_time_with_one_warning(
        project: Project, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = project.load("lock_demo")
    with caplog.at_level(logging.WARNING, logger="cadenza"):
        first = pipeline.run(executor="inline")
    warned = [r.getMessage() for r in caplog.records if "LOCK" in r.getMessage()]
    assert len(warned) == 1, warned
    line = warned[0]
    assert "\n" not in line
    for word in ("pipeline 'lock_demo'", "task 'locked'", "global LOCK", "not cached", "Fix:"):
        assert word in line, line
    assert first.task_states["locked"] is S.SUCCESS
    stored = open_store(project.settings.database_url).get_run(first.run_id).extra["warnings"]
    assert [w for w in stored if "LOCK" in w] == [line.split(": ", 1)[1]]  # without "run ID: "

    entries = {e.label: e for e in plan_pipeline(project.load("lock_demo"), {})}
    assert entries["locked"].decision == WILL_RUN
    assert entries["locked"].reason == "not cacheable (global LOCK)"
    assert entries["locked"].warning is not None and "global LOCK" in entries["locked"].warning
    assert entries["scaled"].decision == CACHED  # the other tasks are unaffected

    again = project.load("lock_demo").run(executor="inline")
    assert again.task_states["locked"] is S.SUCCESS  # never a silent hit
    assert again.task_states["scaled"] is S.CACHED
