"""The resolved lock of a task's environment is part of its cache key (issue 15): the same
requirement set resolving to other versions is a cache miss, the same lock a hit.

Real uv, real builds from the package index. The index's date is pinned with uv's own
UV_EXCLUDE_NEWER, so that the unpinned requirement `six` resolves to a known version: six
1.15.0 was the newest before 2021, 1.16.0 before 2022. Clearing the env cache and building
again is what a new machine, or a cleared cache, does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.engine.preview import LOCK_CHANGED, plan_pipeline
from cadenza.store import open_store
from tests.conftest import RAY
from tests.pipelines import env_lock as pipes

pytestmark = pytest.mark.slow

BEFORE_2021 = "2021-01-01T00:00:00Z"  # six 1.15.0
BEFORE_2022 = "2022-01-01T00:00:00Z"  # six 1.16.0


def builds(home: Path) -> int:
    path = home / "envs" / "builds.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def clear_env_cache(home: Path) -> None:
    for entry in (home / "envs").iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)


def key_of(settings: Settings, run_id: str) -> str | None:
    ti = open_store(settings.database_url).get_task_instance(run_id, "six_unpinned")
    assert ti is not None
    return ti.cache_key


@pytest.mark.parametrize("executor", ["processes", RAY])
def test_the_same_lock_is_a_hit_and_another_lock_a_miss(
        sqlite_env: Settings, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    monkeypatch.setenv("UV_EXCLUDE_NEWER", BEFORE_2021)
    first = pipes.unpinned.run(executor=executor)
    assert first.state == "success", first.error
    assert first.outputs["six_unpinned"] == "1.15.0"
    assert builds(sqlite_env.home) == 1

    # The env cache is cleared; building again resolves the same lock: a hit.
    clear_env_cache(sqlite_env.home)
    again = pipes.unpinned.run(executor=executor)
    assert again.task_states["six_unpinned"] is TaskState.CACHED
    assert again.outputs["six_unpinned"] == "1.15.0"
    assert builds(sqlite_env.home) == 2  # built again (to learn its lock), not run

    # The index moved on: the same requirement set now resolves to six 1.16.0: a miss.
    clear_env_cache(sqlite_env.home)
    monkeypatch.setenv("UV_EXCLUDE_NEWER", BEFORE_2022)
    newer = pipes.unpinned.run(executor=executor)
    assert newer.task_states["six_unpinned"] is TaskState.SUCCESS  # ran, not served
    assert newer.outputs["six_unpinned"] == "1.16.0"
    assert key_of(sqlite_env, newer.run_id) != key_of(sqlite_env, first.run_id)

    # And that new lock's entry serves the next run.
    last = pipes.unpinned.run(executor=executor)
    assert last.task_states["six_unpinned"] is TaskState.CACHED
    assert last.outputs["six_unpinned"] == "1.16.0"
    ti = open_store(sqlite_env.database_url).get_task_instance(last.run_id, "six_unpinned")
    assert ti is not None and ti.cache_origin is not None
    assert ti.cache_origin["run_id"] == newer.run_id


def test_plan_says_the_resolved_lock_changed_naming_the_packages(
        sqlite_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.executors.envs import ensure_env

    monkeypatch.setenv("UV_EXCLUDE_NEWER", BEFORE_2021)
    (entry,) = plan_pipeline(pipes.unpinned, {})
    assert entry.decision == "will run" and "environment not built" in entry.reason
    first = pipes.unpinned.run(executor="processes")
    assert first.state == "success", first.error
    (entry,) = plan_pipeline(pipes.unpinned, {})
    assert entry.is_cached, entry

    clear_env_cache(sqlite_env.home)
    monkeypatch.setenv("UV_EXCLUDE_NEWER", BEFORE_2022)
    ensure_env(("six",), None)  # built (as a run would build it), not yet run
    (entry,) = plan_pipeline(pipes.unpinned, {})
    assert entry.decision == "will run"
    assert entry.reason == f"{LOCK_CHANGED} (six 1.15.0 -> 1.16.0)", entry

    # The recorded detail of the entry holds the lock's digest next to the requirements.
    ti = open_store(sqlite_env.database_url).get_task_instance(first.run_id, "six_unpinned")
    assert ti is not None and ti.cache_detail is not None
    assert ti.cache_detail["env"]["requirements"] == ["six"]
    assert len(ti.cache_detail["env"]["lock"]) == 24
    json.dumps(ti.cache_detail)  # stored as JSON
