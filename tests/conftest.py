"""Shared fixtures: a fresh store per test (SQLite and PostgreSQL), settings pointing at a
temporary CADENZA_HOME, and the executors by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.core import settings as settings_mod

pytest_plugins = ["tests.fixtures.store", "tests.fixtures.server", "tests.fixtures.browser"]

EXECUTORS = ["inline", "threads", "processes"]


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


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
