"""Shared fixtures: a fresh store per test (SQLite and PostgreSQL), settings pointing at a
temporary CADENZA_HOME, and the executors by name."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.core import settings as settings_mod

# Each fixture module once, here: a session fixture imported into two test modules is two
# fixtures, so each module would get its own (tests/fixtures/s3.py: two S3 servers in one
# process, and fsspec's cached filesystem of the first one answering for the second).
pytest_plugins = ["tests.fixtures.store", "tests.fixtures.server", "tests.fixtures.browser",
                  "tests.fixtures.sqldbs", "tests.fixtures.brokers",
                  "tests.fixtures.kinds", "tests.fixtures.ray",
                  "tests.fixtures.pgrelay", "tests.fixtures.s3"]

# `ray` runs on a real two-node local cluster (tests/fixtures/ray.py), marked so that
# `-m "not ray"` leaves it out and xdist spreads it.
EXECUTORS = ["inline", "threads", "processes",
             pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])]


# Longest first. CI runs the suite on 2 xdist workers with `--dist loadgroup` (Makefile),
# which hands the tests out one at a time in collection order to whichever worker is free:
# the suites whose tests take minutes (a JVM, a Ray cluster, cold `cadenza` processes, a
# browser) start first and run beside the rest, and the many short tests at the end fill in,
# so the two workers finish together instead of one waiting for a Spark or KFP test that
# started last. A stable sort: within a rank, files and tests keep their order.
LONGEST_FIRST = ("spark", "kfp_steps", "chaos", "ray", "browser", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        for i, name in enumerate(LONGEST_FIRST):
            if item.get_closest_marker(name) is not None:
                return i
        return len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _dispose_test_stores() -> Iterator[None]:
    """Dispose the stores a test opened (open_store caches one per URL for the process's
    life): each test's database URL is new, so without this every SQLite test left its
    engine, pooled connection and the Writer's kept connection open (db and WAL files),
    and an xdist worker went past 1024 descriptors late in the suite."""
    from cadenza.store.db import store_cache

    before = set(store_cache.urls())
    yield
    for key in set(store_cache.urls()) - before:
        store = store_cache.peek(key)
        if store is not None:
            store.dispose()
    # Idle env workers (executors/envs.py) wait IDLE_TIMEOUT_S for the next task of their env;
    # each test's envs are new, so stop them now (their pipes would add up the same way).
    envs = sys.modules.get("cadenza.executors.envs")
    if envs is not None:
        envs.stop_idle_workers()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "cadenza-home"
    h.mkdir()
    return h


@pytest.fixture
def cadenza_env(db_url: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[settings_mod.Settings]:
    """Settings for one test: its own store (SQLite or PostgreSQL) and artifact folder."""
    monkeypatch.setenv("CADENZA_HOME", str(home))
    monkeypatch.setenv("CADENZA_DATABASE_URL", db_url)
    monkeypatch.delenv("CADENZA_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("CADENZA_EXECUTOR", raising=False)
    s = settings_mod.load_settings(tmp_path)
    settings_mod.set_settings(s)
    yield s
    settings_mod.set_settings(None)


@pytest.fixture
def sqlite_env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[settings_mod.Settings]:
    """Settings on SQLite only, for tests whose subject is not the store."""
    monkeypatch.setenv("CADENZA_HOME", str(home))
    monkeypatch.delenv("CADENZA_DATABASE_URL", raising=False)
    monkeypatch.delenv("CADENZA_ARTIFACT_ROOT", raising=False)
    s = settings_mod.load_settings(tmp_path)
    settings_mod.set_settings(s)
    yield s
    settings_mod.set_settings(None)


RAY = EXECUTORS[-1]  # for a test's own parametrize: ["processes", RAY]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _ray_cluster_for_ray_params(request: pytest.FixtureRequest) -> None:
    """A test parametrised with executor "ray" (by the fixture above or its own
    parametrize) gets the two-node cluster and CADENZA_RAY_ADDRESS."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("executor") == "ray":
        request.getfixturevalue("ray_env")


@pytest.fixture
def counter_dir(tmp_path: Path) -> Path:
    """A folder tasks write side-effect files into (works across processes)."""
    d = tmp_path / "counters"
    d.mkdir()
    return d


def count(folder: Path, name: str) -> int:
    """How many times tests.pipelines.common.bump(folder, name) ran."""
    path = folder / name
    return len(path.read_text().splitlines()) if path.exists() else 0
