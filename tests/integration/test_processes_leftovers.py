"""A timed-out task's children go with its worker on the processes executor, even one that
ignores SIGTERM (as a JVM busy in its shutdown hooks effectively does): the worker dies at
the SIGTERM and its process group gets SIGKILL when the pool reaps it (Spark tasks rely on
this for their JVM, tests/integration/test_spark.py)."""

from __future__ import annotations

from pathlib import Path

import psutil

from cadenza.core.settings import Settings
from tests.fixtures.waiting import wait_for
from tests.pipelines import leftovers


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_ignoring_sigterm_is_killed_with_the_timed_out_worker(
        sqlite_env: Settings, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = leftovers.stubborn.run(executor="processes", pid_file=str(pid_file))
    assert result.state == "failed"
    pid = int(pid_file.read_text())
    wait_for(lambda: _gone(pid), timeout_s=30, what="the child that ignores SIGTERM to die")
