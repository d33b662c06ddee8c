"""Nothing a processes worker runs outlives the driver, nor the worker itself, and no task
body goes on after a kill -9 of the driver's process group (executors/processes/lifeline.py).

Each test drives a real ProcessExecutor from a script in a process group of its own (as
`cadenza run` is in a terminal, and as the fault campaign starts it), whose task starts a
grandchild and then waits for a release file before it writes that it ended. The worker is
stopped (SIGSTOP) before the fault, so it cannot run a line of its own: only the kernel (the
forkserver's parent-death signal) or the guard process can end it and its task's children.
A watchdog thread in the worker, the design before the lifeline, fails these tests.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fixtures.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0


def hold_then_end(started: str, release: str, ended: str) -> None:
    """The task: start a grandchild, say so (worker pid, grandchild pid), wait for the release
    file, then write that the body ended."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    tmp = f"{started}.tmp"
    Path(tmp).write_text(f"{os.getpid()} {child.pid}")
    os.replace(tmp, started)
    deadline = time.monotonic() + DEADLINE_S
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.001)
    Path(ended).write_text("the task body ended")


DRIVER = textwrap.dedent(
    """
    import sys, time
    from cadenza.executors.base import TaskCall
    from cadenza.executors.processes import ProcessExecutor
    from tests.integration.test_worker_lifeline import hold_then_end

    started, release, ended, root, method = sys.argv[1:]
    ex = ProcessExecutor(max_workers=2, start_method=method)
    ex.submit(TaskCall(
        run_id="r", pipeline="p", task_id="t", map_index=-1, attempt=1,
        fn=hold_then_end, fn_key="k",
        inputs={"started": started, "release": release, "ended": ended},
        call_kinds={k: "POSITIONAL_OR_KEYWORD" for k in ("started", "release", "ended")},
        artifact_root=root,
    ), print)
    time.sleep(300)
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Driver:
    """The driver script in a process group of its own, and the files its task writes."""

    def __init__(self, tmp_path: Path, method: str) -> None:
        self.started = tmp_path / "started"
        self.release = tmp_path / "release"
        self.ended = tmp_path / "ended"
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.started), str(self.release),
             str(self.ended), str(tmp_path / "artifacts"), method],
            env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        text = wait_for(lambda: self.started.exists() and self.started.read_text(),
                        timeout_s=DEADLINE_S, what="the task to start")
        self.worker, self.grandchild = map(int, str(text).split())
        # Every process the driver started: the forkserver (in the driver's group), the
        # workers, their guards, the task's grandchild.
        self.family = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def alive(self) -> list[int]:
        return [pid for pid in self.family if not _gone(pid)]

    def cleanup(self) -> None:
        for pid in [self.proc.pid, *self.family]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(params=multiprocessing.get_all_start_methods())
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the lifeline uses Linux's PR_SET_PDEATHSIG")
    d = Driver(tmp_path, request.param)
    try:
        yield d
    finally:
        d.cleanup()


def test_a_killed_driver_group_leaves_no_worker_no_task_child_and_no_body_ending(
        driver: Driver) -> None:
    assert driver.worker in driver.family and driver.grandchild in driver.family
    guards = [p.pid for p in psutil.Process(driver.worker).children()
              if p.pid != driver.grandchild]
    assert len(guards) == 1, "each worker has one guard process"
    os.kill(driver.worker, signal.SIGSTOP)  # from here the worker runs no code of its own
    os.killpg(driver.proc.pid, signal.SIGKILL)
    driver.release.touch()  # a worker left alive would end its task body now
    wait_for(lambda: not driver.alive(), timeout_s=30,
             what="every worker, guard and task child of the killed driver to be gone")
    driver.proc.wait(timeout=30)
    assert not driver.ended.exists()


def test_a_worker_killed_from_outside_takes_its_task_children_at_once(
        driver: Driver) -> None:
    # The driver is stopped: its pool cannot reap the worker and kill the group itself.
    os.kill(driver.proc.pid, signal.SIGSTOP)
    os.kill(driver.worker, signal.SIGKILL)  # as the OOM killer would
    wait_for(lambda: _gone(driver.grandchild), timeout_s=30,
             what="the dead worker's task child to be killed by its guard")
    assert not driver.ended.exists()


@pytest.mark.slow
def test_a_stopped_env_worker_dies_with_its_killed_driver(sqlite_env: Any, tmp_path: Path
                                                          ) -> None:
    """A call in its own environment (executors/envs.py) runs in a child of a driver thread,
    in a session of its own: its guard, watching the life pipe, ends it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the lifeline uses Linux's PR_SET_PDEATHSIG")
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.pipelines import envs
        envs.env_sleeper.run(executor="processes", pid_file={str(pid_file)!r})
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                              start_new_session=True, stdin=subprocess.DEVNULL)
    pid = 0
    try:
        pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
                           timeout_s=DEADLINE_S, what="the env task to start"))
        guards = psutil.Process(pid).children()
        assert len(guards) == 1, "the env worker has one guard process"
        os.kill(pid, signal.SIGSTOP)  # it cannot run its own watchdog thread now
        os.killpg(driver.pid, signal.SIGKILL)
        wait_for(lambda: _gone(pid) and _gone(guards[0].pid), timeout_s=30,
                 what="the stopped env worker and its guard to be gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        driver.wait(timeout=30)
