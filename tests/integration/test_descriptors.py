"""Opening and disposing stores and API apps leaves no file descriptor open: a process that
does it many times (a test worker, a server embedding the app) must not grow its descriptor
table. Counts /proc/self/fd (Linux) before and after N cycles, after one warm-up cycle
(lazy imports, logging handlers); no timing."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from cadenza.core.records import WriteBatch
from cadenza.core.states import TaskState
from cadenza.store import open_store
from cadenza.store.dml import CHECKPOINT_EVERY
from tests.fixtures.server import make_api_project, project_settings_for, serve
from tests.integration.test_store import make_run, ti

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="counts descriptors in /proc/self/fd (Linux)")


def _open_fds() -> list[str]:
    """What this process's descriptors point at (for a readable failure)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return sorted(out)


def _url(db_url: str, folder: Path, i: int) -> str:
    """SQLite: a new database file per cycle (as each test has its own), so a store that is
    not disposed stays cached and open; PostgreSQL: the same schema each time."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{folder / str(i) / 'cadenza.db'}"
    return db_url


def test_opening_writing_and_disposing_a_store_50_times_leaves_no_descriptor_open(
        db_url: str, tmp_path: Path) -> None:
    def cycle(i: int) -> None:
        store = open_store(_url(db_url, tmp_path, i))
        run = make_run()
        store.create_run(run, [ti(run.run_id, "a")])
        store.write(WriteBatch(task_instance_updates=[
            ti(run.run_id, "a", state=TaskState.RUNNING, attempt=1)]))
        assert store.list_runs(limit=5)
        store.dispose()

    cycle(0)
    before = _open_fds()
    for i in range(1, 51):
        cycle(i)
    assert _open_fds() == before


def test_a_sqlite_store_that_checkpointed_closes_the_checkpointers_connection_too(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store' / 'cadenza.db'}"

    def cycle() -> None:
        store = open_store(url)
        run = make_run()
        store.create_run(run, [ti(run.run_id, "a")])
        for i in range(CHECKPOINT_EVERY + 1):  # past CHECKPOINT_EVERY commits: checkpoints
            store.write(WriteBatch(task_instance_updates=[
                ti(run.run_id, "a", state=TaskState.RUNNING, attempt=i + 1)]))
        store.dispose()

    cycle()
    before = _open_fds()
    for _ in range(3):
        cycle()
    assert _open_fds() == before


def test_serving_an_app_and_disposing_its_store_20_times_leaves_no_descriptor_open(
        db_url: str, tmp_path: Path) -> None:
    from cadenza.api import create_app

    root = make_api_project(tmp_path / "proj")
    home = tmp_path / "home"
    home.mkdir()

    def cycle(i: int) -> None:
        app = create_app(project_settings_for(root, _url(db_url, tmp_path, i), home))
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
            assert client.get("/readyz").status_code == 200
            assert client.get("/api/v1/pipelines").status_code == 200
        app.state.store.dispose()

    cycle(0)
    before = _open_fds()
    for i in range(1, 21):
        cycle(i)
    assert _open_fds() == before
