"""What the driver says when it cannot go on: an error Cadenza raises on purpose (the
metadata store gone, with its fix) is logged as one line and shown once by the CLI, without
a Python traceback; an internal error (a Cadenza bug) keeps its traceback in the log.

The end-to-end case drops the run's PostgreSQL database while `cadenza run` drives it: the
run's next write fails, and so does the write of the run's end after it."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.errors import InternalError, StoreError
from cadenza.core.settings import Settings
from tests.fixtures.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "cadenza"
CADENZA = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cadenza"]

PIPELINE = '''
import os, time
from cadenza import pipeline, task

@task
def hold(release: str) -> int:
    open(release + ".started", "w").close()
    while not os.path.exists(release):
        time.sleep(0.01)
    return 1

@task
def after(x: int) -> int:
    return x + 1

@pipeline(name="store_gone")
def store_gone(release: str):
    after(hold(release))
'''


class FailingWrites:
    """A driver's store whose writes raise `error` from the second one on (the first one
    records the run's start)."""

    def __init__(self, store: Any, error: Exception) -> None:
        self._store, self._error, self.writes = store, error, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write(self, batch: Any, **kw: Any) -> Any:
        self.writes += 1
        if self.writes > 1:
            raise self._error
        return self._store.write(batch, **kw)


def _run_failing(error: Exception, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    from cadenza import pipeline, task
    from cadenza.engine.api import run_pipeline

    @task
    def one() -> int:
        return 1

    @task
    def two(x: int) -> int:
        return x + 1

    @pipeline(name=f"failing_writes_{type(error).__name__.lower()}")
    def failing_writes() -> None:
        two(one())  # two's input is committed inside the driver's loop: write 2 fails

    def on_start(driver: Any) -> None:
        driver.store = FailingWrites(driver.store, error)

    with caplog.at_level(logging.WARNING, logger="cadenza"), pytest.raises(type(error)) as info:
        run_pipeline(failing_writes, {}, executor="inline", on_start=on_start)
    assert info.value is error, "the first error is raised, not the failed end's write"
    [record] = [r for r in caplog.records if "driver failed" in r.getMessage()]
    return record


def test_a_store_error_is_logged_without_a_traceback(
        sqlite_env: Settings, caplog: pytest.LogCaptureFixture) -> None:
    error = StoreError("writing a batch failed: the server closed the connection",
                       hint="is the database running?")
    record = _run_failing(error, caplog)
    assert record.exc_info is None
    assert "writing a batch failed" in record.getMessage()
    assert any("the run's end could not be recorded" in r.getMessage()
               for r in caplog.records)


def test_an_internal_error_keeps_its_traceback(
        sqlite_env: Settings, caplog: pytest.LogCaptureFixture) -> None:
    record = _run_failing(InternalError("a rule of Cadenza's own was broken"), caplog)
    assert record.exc_info is not None


@pytest.mark.postgres
def test_a_dropped_database_ends_cadenza_run_with_one_clean_error(tmp_path: Path) -> None:
    from tests.fixtures.store import _connect_admin, _database_url, _require_postgres

    _require_postgres()
    name = f"cadenza_gone_{secrets.token_hex(5)}"
    with _connect_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        (tmp_path / "pipe.py").write_text(PIPELINE)
        release = tmp_path / "release"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")},
               "CADENZA_HOME": str(tmp_path / "home"), "CADENZA_DATABASE_URL": _database_url(name),
               "NO_COLOR": "1", "COLUMNS": "200",
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
            proc = subprocess.Popen(
                [*CADENZA, "run", "pipe.py", "-p", f"release={release}", "--executor",
                 "processes"], cwd=tmp_path, env=env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: Path(f"{release}.started").exists() or proc.poll() is not None,
                     timeout_s=120, what="the run's first task to start")
            with _connect_admin() as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            release.touch()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = (tmp_path / "err").read_text()
        assert code != 0, stderr
        assert "Traceback" not in stderr, stderr
        assert "probably a bug" not in stderr, stderr
        assert "driver failed: metadata store" in stderr, stderr  # the log line, once
        assert "error: metadata store" in stderr and "fix: is PostgreSQL running" in stderr, stderr
    finally:
        with _connect_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
