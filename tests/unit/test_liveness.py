"""engine/lease.py: the one liveness rule (driver named, lease current, process not known
dead on this host), used by is_orphaned, cancel, the scheduler's takeover and gc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from cadenza.core.records import RunRecord
from cadenza.core.states import RunState
from cadenza.engine.lease import (
    DriverLiveness,
    driver_is_dead,
    driver_liveness,
    is_held,
    is_orphaned,
)
from tests.fixtures.waiting import wait_for

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOST = socket.gethostname()


def _id(pid: int, host: str = HOST) -> str:
    return f"{host}:{pid}:abc123"


@pytest.fixture
def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def zombie_pid() -> Iterator[int]:
    """The pid of a child that has exited but that nobody has waited for yet."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE,
             what="the child to become a zombie")
    yield child.pid
    child.wait()


@pytest.fixture
def live_pid() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    yield child.pid
    assert child.stdin is not None
    child.stdin.close()
    child.wait()


def test_this_process_and_a_live_child_are_alive(live_pid: int) -> None:
    assert driver_liveness(_id(os.getpid())) is DriverLiveness.ALIVE
    assert driver_liveness(_id(live_pid)) is DriverLiveness.ALIVE
    assert not driver_is_dead(_id(live_pid))


def test_an_exited_pid_and_a_zombie_are_dead(dead_pid: int, zombie_pid: int) -> None:
    assert driver_liveness(_id(dead_pid)) is DriverLiveness.DEAD
    assert driver_liveness(_id(zombie_pid)) is DriverLiveness.DEAD
    assert driver_is_dead(_id(dead_pid)) and driver_is_dead(_id(zombie_pid))


def test_another_host_or_a_foreign_id_is_unknown_never_dead(dead_pid: int) -> None:
    for driver_id in (_id(dead_pid, host="elsewhere"), "scheduler-7", f"{HOST}:x:abc"):
        assert driver_liveness(driver_id) is DriverLiveness.UNKNOWN
        assert not driver_is_dead(driver_id)
    assert driver_is_dead(None) and driver_is_dead("")


def test_is_held_needs_a_driver_a_current_lease_and_a_process_not_known_dead(
        live_pid: int, dead_pid: int) -> None:
    fresh, stale = NOW - timedelta(seconds=5), NOW - timedelta(seconds=31)

    def held(driver_id: str | None, heartbeat_at: datetime | None) -> bool:
        return is_held(driver_id, heartbeat_at, now=NOW, lease=30.0)

    assert held(_id(live_pid), fresh)
    assert held(_id(live_pid, host="elsewhere"), fresh)  # the lease speaks for other hosts
    assert not held(_id(live_pid), stale)
    assert not held(_id(live_pid), None)
    assert not held(None, fresh)
    assert not held(_id(dead_pid), fresh)  # a dead local driver does not wait for its lease


def test_is_orphaned_is_the_negation_of_is_held_for_an_unfinished_run(
        live_pid: int, dead_pid: int) -> None:
    def run(state: RunState, driver_id: str | None, age_s: float) -> RunRecord:
        return RunRecord(run_id="r", pipeline="p", state=state, created_at=NOW,
                         driver_id=driver_id, heartbeat_at=NOW - timedelta(seconds=age_s))

    for driver_id in (_id(live_pid), _id(dead_pid), _id(dead_pid, host="elsewhere")):
        for age in (1.0, 60.0):
            r = run(RunState.RUNNING, driver_id, age)
            assert is_orphaned(r, now=NOW, lease=30.0) is not is_held(
                driver_id, r.heartbeat_at, now=NOW, lease=30.0)
            assert not is_orphaned(run(RunState.SUCCESS, driver_id, age), now=NOW, lease=30.0)
    assert is_orphaned(run(RunState.RUNNING, None, 1.0), now=NOW, lease=30.0)
    assert not is_orphaned(run(RunState.QUEUED, None, 1.0), now=NOW, lease=30.0)
