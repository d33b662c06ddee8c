"""Feast tasks on the local provider: a file offline store (Parquet) and a SQLite online
store, in a copy of tests/pipelines/feast_repo per test.

Feast runs in the tasks' own uv environment (it pins pandas<3; Cadenza's data extra has
pandas 3), built once per pytest run from PyPI (`kind_envs`): slow. What would fail if it
broke: materialisation not loading the online store (read back with sqlite3), historical
features not point-in-time correct or not reaching the next task as a frame of the driver's
pandas, unknown names not reported with what the repository has, retries, resume rerunning
what succeeded, cache keys not following the repository's files.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.store import open_store
from tests.fixtures.kinds import PIPELINES
from tests.pipelines import feast_pipes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def write_stats(repo: Path, *, bonus: int = 0) -> None:
    """Eight readings per driver, every 6 hours from 2026-01-01: trips = 10*driver + hour."""
    import pandas as pd

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"driver_id": d, "event_timestamp": t0 + timedelta(hours=h),
             "trips": d * 10 + h + bonus, "rating": float(d) + h / 10}
            for d in (1, 2, 3) for h in range(0, 48, 6)]
    (repo / "data").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(repo / "data" / "driver_stats.parquet")


@pytest.fixture
def repo(tmp_path: Path, kind_envs: Path) -> Path:
    folder = tmp_path / "feature_repo"
    shutil.copytree(PIPELINES / "feast_repo", folder,
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    return folder


def online_rows(repo: Path) -> int:
    with sqlite3.connect(repo / "data" / "online_store.db") as conn:
        (count,) = conn.execute(
            "SELECT count(DISTINCT entity_key) FROM cadenza_drivers_driver_stats").fetchone()
    return int(count)


def attempts_of(settings: Settings, run_id: str, task_id: str) -> int:
    return sum(a.task_id == task_id
               for a in open_store(settings.database_url).get_attempts(run_id))


def test_materialize_fills_the_online_store_and_training_reads_point_in_time_features(
        sqlite_env: Settings, repo: Path) -> None:
    write_stats(repo)
    result = feast_pipes.features(repo).run(executor="processes")
    assert result.state == "success", result.failed
    assert result.outputs["feast_materialize"] == {
        "feature_views": ["driver_stats"], "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-01-03T00:00:00+00:00"}
    assert online_rows(repo) == 3
    import pandas as pd

    # As of 13:00 the latest reading is 12:00's (never a later one); read with pandas 3.
    assert result.outputs["train"] == {
        "pandas": pd.__version__.split(".")[0], "rows": 3, "trips": [22, 32, 42],
        "columns": ["driver_id", "event_timestamp", "label", "rating", "trips"]}


def test_unknown_names_fail_with_what_the_repository_has(sqlite_env: Settings,
                                                         repo: Path) -> None:
    write_stats(repo)
    result = feast_pipes.features(repo, feature_views=["driver_stat"]).run(executor="threads")
    assert result.state == "failed"
    ti = next(t for t in open_store(sqlite_env.database_url).get_task_instances(result.run_id)
              if t.task_id == "feast_materialize")
    assert ti.error is not None and ti.error.type.endswith("FeastFailed")
    assert ("pipeline 'feast_features', task 'feast_materialize': the repository has no "
            "feature view 'driver_stat'; it has: driver_stats") in ti.error.message
    assert ti.error.traceback == ""
    assert result.task_states["feast_features"] is TaskState.UPSTREAM_FAILED

    bad = feast_pipes.features(repo, wanted=["driver_stats:trip"]).run(executor="threads")
    ti = next(t for t in open_store(sqlite_env.database_url).get_task_instances(bad.run_id)
              if t.task_id == "feast_features")
    assert ti.error is not None
    assert "no feature 'driver_stats:trip'; it has: driver_stats:rating, driver_stats:trips" \
        in ti.error.message


def test_a_missing_source_is_retried_and_resume_reruns_only_what_failed(
        sqlite_env: Settings, repo: Path) -> None:
    # No data yet: the first attempt fails; the retry callback writes the data.
    result = feast_pipes.features(repo, retries=2, retry_delay=1,
                                  on_retry=lambda ctx: write_stats(repo)).run(
        executor="threads")
    assert result.state == "success", result.failed
    assert attempts_of(sqlite_env, result.run_id, "feast_materialize") == 2

    # Resume: the data file vanishes, the run fails at materialize; put it back and resume.
    (repo / "data" / "driver_stats.parquet").unlink()
    failed = feast_pipes.features(repo).run(executor="processes")
    assert failed.state == "failed"
    assert failed.task_states["labels"] is TaskState.SUCCESS
    ran = (repo.parent / "labels-ran").read_text()
    write_stats(repo)
    resumed = failed.resume()
    assert resumed.state == "success", resumed.failed
    assert resumed.outputs["train"]["trips"] == [22, 32, 42]
    assert (repo.parent / "labels-ran").read_text() == ran  # labels kept its output


def test_cache_hits_until_the_repository_data_changes(sqlite_env: Settings,
                                                      repo: Path) -> None:
    write_stats(repo)
    first = feast_pipes.features(repo, cache=True).run(executor="processes")
    assert first.state == "success", first.failed
    hit = feast_pipes.features(repo, cache=True).run(executor="processes")
    assert hit.task_states["feast_materialize"] is TaskState.CACHED
    write_stats(repo, bonus=100)  # the offline store's file is in the repository
    miss = feast_pipes.features(repo, cache=True).run(executor="processes")
    assert miss.task_states["feast_materialize"] is TaskState.SUCCESS
    assert miss.outputs["train"]["trips"] == [122, 132, 142]
