"""The ray executor on a real two-node local Ray cluster (tests/fixtures/ray.py): placement by
resources, a node lost mid-task, timeouts and cancels that kill, a driver killed with
SIGKILL, a wide map, the artifact-store check, per-task environments through Ray's
runtime_env. The engine's behaviours on every executor (chain, maps, branches, trigger rules,
retries, timeouts, context, DataFrame outputs, caching) run on ray through the `executor`
fixture in the other suites, and per-task environments in test_envs.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cadenza import get_run
from cadenza.core.errors import ConfigError
from cadenza.core.settings import Settings
from cadenza.core.states import RunState, TaskState
from cadenza.engine.api import run_pipeline
from cadenza.engine.cancel import cancel_run
from cadenza.engine.resume import resume_run
from cadenza.store import open_store
from tests.conftest import count
from tests.fixtures.ray import RayCluster, wait_gone
from tests.fixtures.waiting import wait_for
from tests.pipelines import on_ray
from tests.pipelines.resumable import crashy

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
S = TaskState


def test_a_task_requiring_special_runs_on_the_second_node(sqlite_env: Settings,
                                                          ray_env: RayCluster) -> None:
    result = on_ray.placed.run(executor="ray")

    assert result.state is RunState.SUCCESS, result.error
    assert result.outputs["on_special"] == ray_env.second_node_id()


def test_a_resource_no_node_has_fails_at_once_naming_it(sqlite_env: Settings,
                                                        ray_env: RayCluster) -> None:
    result = on_ray.no_such_resource.run(executor="ray")

    assert result.state is RunState.FAILED
    ti = open_store(sqlite_env.database_url).get_task_instance(result.run_id, "wants_tpu")
    assert ti is not None and ti.error is not None and ti.error.kind == "resources"
    assert "TPU: 1" in ti.error.message and "no node of the Ray cluster" in ti.error.message


class GatedRun:
    """A pipeline of gated calls (tests/pipelines/on_ray.py `gated`) driven on ray in a
    thread: each call says where it runs (FOLDER/<i>.<attempt>), then waits for `release()`."""

    def __init__(self, pipe: Any, folder: Path) -> None:
        self.folder = folder
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=lambda: self._box.update(
            result=pipe.run(folder=str(folder), executor="ray")), daemon=True)
        self._thread.start()

    def wait_first_two(self, what: str | Callable[[], str]) -> None:
        """Until instances 0 and 1 both run (their first attempts)."""
        wait_for(lambda: (self.folder / "0.1").exists() and (self.folder / "1.1").exists(),
                 timeout_s=120, what=what)

    def release(self) -> None:
        (self.folder / "release").write_text("go")

    def result(self) -> Any:
        self._thread.join(180)
        return self._box["result"]


def test_a_killed_raylet_loses_the_attempt_and_the_retry_finishes_the_run(
        sqlite_env: Settings, ray_env: RayCluster, counter_dir: Path) -> None:
    run = GatedRun(on_ray.gated_pair, counter_dir)
    try:
        # One actor per node (1 CPU each): both instances run, one on the second node.
        run.wait_first_two(what="both instances to start")
        second = ray_env.second_node_id()
        where = {i: (counter_dir / f"{i}.1").read_text().split() for i in (0, 1)}
        doomed = next(i for i, (node, _) in where.items() if node == second)
        os.kill(ray_env.second.raylet_pid(), signal.SIGKILL)
        wait_gone(int(where[doomed][1]), what="the task's worker on the dead node to end")
        run.release()
        result = run.result()
        assert result.state is RunState.SUCCESS, result.error
        attempts = open_store(sqlite_env.database_url).get_attempts(result.run_id, "gated",
                                                                    doomed)
        assert [a.state for a in attempts] == [S.UP_FOR_RETRY, S.SUCCESS]
        assert attempts[0].error is not None and attempts[0].error.kind == "worker_lost"
        assert "died" in attempts[0].error.message
        # The retry ran on the node that is left.
        assert (counter_dir / f"{doomed}.2").read_text().split()[0] != second
    finally:
        run.release()
        ray_env.second.stop()
        wait_for(lambda: ray_env.alive_nodes() == 1, timeout_s=60,
                 what="the dead node to leave the cluster")
        ray_env.start_second()


def test_a_timed_out_ray_task_is_killed(sqlite_env: Settings, ray_env: RayCluster,
                                        counter_dir: Path) -> None:
    result = on_ray.too_slow.run(folder=str(counter_dir), executor="ray")

    assert result.state is RunState.FAILED
    ti = open_store(sqlite_env.database_url).get_task_instance(result.run_id, "sleeps")
    assert ti is not None and ti.error is not None and ti.error.kind == "timeout"
    assert ti.error.message == "timed out after 1 s"
    wait_gone(int((counter_dir / "sleeper.pid").read_text()),
              what="the timed-out task's process to be killed")


def test_calls_queued_behind_a_timed_out_one_run_again_elsewhere_with_their_own_deadline(
        sqlite_env: Settings, ray_env: RayCluster, counter_dir: Path) -> None:
    # Two actors (one per CPU) each hold a running call and the next one queued in Ray. When
    # instance 0 times out its actor is killed: the call queued behind it never ran, so it
    # goes back to the backlog (no attempt spent) and its 3 s deadline only starts then.
    from cadenza.executors.base import get_executor

    ex: Any = get_executor("ray")
    requeued = ex.requeued
    result = on_ray.slow_first.run(folder=str(counter_dir), executor="ray")

    assert result.state is RunState.FAILED
    assert ex.requeued > requeued  # a call was queued behind instance 0, and sent again
    store = open_store(sqlite_env.database_url)
    rows = {r.map_index: r for r in store.get_task_instances(result.run_id)
            if r.task_id == "first_is_slow" and r.map_index >= 0}
    assert rows[0].state is S.FAILED and rows[0].error is not None
    assert rows[0].error.kind == "timeout"
    assert {i: rows[i].state for i in (1, 2, 3)} == {1: S.SUCCESS, 2: S.SUCCESS, 3: S.SUCCESS}
    for i in (1, 2, 3):
        assert len(store.get_attempts(result.run_id, "first_is_slow", i)) == 1
    wait_gone(int((counter_dir / "slow.pid").read_text()),
              what="the timed-out call's process to be killed")


def test_a_call_queued_behind_one_whose_actor_dies_is_sent_again_without_spending_an_attempt(
        sqlite_env: Settings, ray_env: RayCluster, counter_dir: Path) -> None:
    # Two actors (one per CPU) each run a gated call with the next one queued behind it in
    # Ray. SIGKILL of instance 0's actor process: its call is lost (retried per retries=),
    # the call queued behind it never ran, so it goes back to the backlog and runs on another
    # actor with its first attempt.
    from cadenza.executors.base import get_executor

    ex: Any = get_executor("ray")
    requeued = ex.requeued
    run = GatedRun(on_ray.gated_four, counter_dir)
    try:
        run.wait_first_two(what=lambda: f"instances 0 and 1 to start ({_pool_state(ex)})")
        wait_for(lambda: sum(len(a.jobs) for a in list(ex._actors)) == 4, timeout_s=60,
                 what="instances 2 and 3 to be queued behind them")
        pid = int((counter_dir / "0.1").read_text().split()[1])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: ex.requeued > requeued, timeout_s=60,
                 what="the call queued behind instance 0 to be requeued")
    finally:
        run.release()
    result = run.result()

    assert result.state is RunState.SUCCESS, result.error
    store = open_store(sqlite_env.database_url)
    attempts = {i: store.get_attempts(result.run_id, "gated", i) for i in range(4)}
    assert [a.state for a in attempts[0]] == [S.UP_FOR_RETRY, S.SUCCESS]
    assert attempts[0][0].error is not None and attempts[0][0].error.kind == "worker_lost"
    assert {i: len(attempts[i]) for i in (1, 2, 3)} == {1: 1, 2: 1, 3: 1}
    assert not (counter_dir / "2.2").exists() and not (counter_dir / "3.2").exists()


@pytest.mark.parametrize("when", ["before the run", "while the run waits for room"])
def test_a_node_the_executor_has_not_seen_yet_gets_calls_instead_of_a_queue_behind_a_busy_one(
        when: str, sqlite_env: Settings, ray_env: RayCluster, counter_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The executor believes the cluster has 1 CPU (as after the second node was lost and
    # before it came back). Trusting that, it would queue instance 1 behind instance 0 on the
    # one actor, and the two gated calls, which wait for each other here, would never both
    # run. A run starts from the cluster as it is (preflight), and a call that finds no room
    # looks again when what the executor knows is older than CAPACITY_STALE_S.
    from cadenza.executors.base import get_executor
    from cadenza.executors.ray import pool

    ex: Any = get_executor("ray")
    ex.shutdown()  # no actor left idle by an earlier test: each call needs one of its own
    ex.start()
    preflight = ex.preflight

    def believe_one_cpu() -> None:
        with ex._state:
            ex._capacity = 1
            ex._capacity_at = time.monotonic() - (
                0.0 if when == "before the run" else pool.CAPACITY_STALE_S + 1)

    def preflight_then_forget(*args: Any, **kwargs: Any) -> None:
        preflight(*args, **kwargs)
        believe_one_cpu()

    believe_one_cpu()
    if when == "before the run":  # only preflight may correct it: never stale during the run
        monkeypatch.setattr(pool, "CAPACITY_STALE_S", 3600.0)
    else:
        monkeypatch.setattr(ex, "preflight", preflight_then_forget)
    run = GatedRun(on_ray.gated_pair, counter_dir)
    try:
        run.wait_first_two(what=lambda: f"both instances to start ({_pool_state(ex)})")
    finally:
        run.release()
    result = run.result()
    assert result.state is RunState.SUCCESS, result.error
    assert ex._capacity == 2


def _pool_state(ex: Any) -> str:
    """What the ray executor's pool holds, for a failed wait's message."""
    with ex._state:
        actors = [f"{a.phase} on {a.node} jobs={len(a.jobs)}" for a in ex._actors]
        return f"capacity {ex._capacity}, backlog {len(ex._backlog)}, actors {actors}"


def test_a_thousand_task_map_completes(sqlite_env: Settings, ray_env: RayCluster) -> None:
    result = on_ray.wide_map.run(n=1000, executor="ray")

    assert result.state is RunState.SUCCESS, result.error
    assert result.outputs["total"] == sum(range(1, 1001))
    rows = open_store(sqlite_env.database_url).get_task_instances(result.run_id)
    mapped = [r for r in rows if r.task_id == "inc" and r.map_index >= 0]
    assert len(mapped) == 1000 and {r.state for r in mapped} == {S.SUCCESS}


def test_cancel_of_a_run_kills_its_running_ray_task(sqlite_env: Settings, ray_env: RayCluster,
                                                    counter_dir: Path) -> None:
    box: dict[str, Any] = {}
    driver = threading.Thread(target=lambda: box.update(
        result=on_ray.waiting.run(folder=str(counter_dir), executor="ray")), daemon=True)
    driver.start()
    pid_file = counter_dir / "waiter.pid"
    wait_for(pid_file.exists, timeout_s=120, what="the task to start")
    run_id = open_store(sqlite_env.database_url).list_runs(limit=1)[0].run_id

    report = cancel_run(run_id, wait_s=60)

    driver.join(60)
    assert (report.outcome, report.state) == ("cancelled", RunState.CANCELLED)
    assert box["result"].task_states["waits"] is S.CANCELLED
    wait_gone(int(pid_file.read_text()), what="the cancelled task's process to be killed")


def test_a_driver_killed_with_sigkill_leaves_no_ray_task_and_resume_finishes_on_ray(
        cadenza_env: Settings, ray_env: RayCluster, counter_dir: Path, home: Path) -> None:
    script = textwrap.dedent(f"""
        from tests.pipelines.resumable import crashy
        crashy.run(folder={str(counter_dir)!r}, executor="ray")
    """)
    env = {**os.environ, "CADENZA_DATABASE_URL": cadenza_env.database_url,
           "CADENZA_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    try:
        started = counter_dir / "blocker-started-1"
        wait_for(started.exists, timeout_s=120, what="the blocker to start on Ray")
        watcher = open_store(cadenza_env.database_url)

        def blocker_recorded_running() -> bool:
            runs = watcher.list_runs(limit=1)
            ti = runs and watcher.get_task_instance(runs[0].run_id, "blocker")
            return bool(ti) and ti.state is S.RUNNING

        wait_for(blocker_recorded_running, timeout_s=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Ray ends the dead driver's job and kills its actors: the task does not run on.
    wait_gone(int(started.read_text()), what="the dead driver's Ray task to be killed")
    store = open_store(cadenza_env.database_url)
    run_id = store.list_runs(limit=1)[0].run_id
    assert store.get_run(run_id).state is RunState.RUNNING  # what the dead driver left

    (counter_dir / "release").write_text("go")
    result = resume_run(run_id, executor="ray", pipeline=crashy)

    assert result.state is RunState.SUCCESS, result.error
    assert result.outputs["finish"] == "a+blocker+finish+b"
    assert count(counter_dir, "a") == 1 and count(counter_dir, "b") == 1
    assert count(counter_dir, "blocker") == 2  # interrupted once, run again
    assert store.get_run(run_id).executor == "ray"


def test_an_artifact_store_the_nodes_cannot_reach_fails_before_the_run(
        sqlite_env: Settings, ray_env: RayCluster) -> None:
    # memory:// is a store only the driver's process sees: as a folder on the driver's own
    # disk would be to the nodes of a real cluster.
    settings = dataclasses.replace(sqlite_env, artifact_root="memory://cadenza-driver-only")

    with pytest.raises(ConfigError) as err:
        run_pipeline(on_ray.placed, {}, executor="ray", settings=settings)

    assert "not reachable from every node of the Ray cluster" in err.value.message
    assert "placed" in err.value.message
    assert "s3://" in (err.value.hint or "")
    assert open_store(sqlite_env.database_url).list_runs(limit=1) == []  # no run started


def test_cadenza_run_executor_ray_on_the_cli(sqlite_env: Settings, ray_env: RayCluster,
                                             home: Path) -> None:
    cadenza = Path(sys.executable).parent / "cadenza"
    env = {**os.environ, "CADENZA_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("CADENZA_DATABASE_URL", None)
    done = subprocess.run([str(cadenza), "run", "tests/pipelines/on_ray.py:placed",
                           "--executor", "ray"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "success" in done.stdout.lower()


def test_a_driver_connected_through_ray_client_runs_the_pipeline_on_the_cluster(
        sqlite_env: Settings, ray_env: RayCluster, home: Path) -> None:
    # A driver outside the cluster: `cadenza run` with CADENZA_RAY_ADDRESS=ray://HEAD:PORT
    # (the head's Ray Client server). Each task reports the Ray node it ran on.
    cadenza = Path(sys.executable).parent / "cadenza"
    env = {**os.environ, "CADENZA_HOME": str(home), "PYTHONPATH": str(ROOT),
           "CADENZA_RAY_ADDRESS": ray_env.client_address}
    env.pop("CADENZA_DATABASE_URL", None)
    done = subprocess.run([str(cadenza), "run", "tests/pipelines/on_ray.py:placed",
                           "--executor", "ray"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout + done.stderr + ray_env.client_server_logs()
    store = open_store(sqlite_env.database_url)
    run = store.list_runs(limit=1)[0]
    assert (run.state, run.executor) == (RunState.SUCCESS, "ray")
    nodes = {str(n["NodeID"]) for n in ray_nodes() if n.get("Alive")}
    result = get_run(run.run_id)
    assert result.outputs["on_special"] == ray_env.second_node_id()
    assert result.outputs["anywhere"] in nodes  # a node of this cluster, not a local Ray


def ray_nodes() -> list[dict[str, Any]]:
    import ray

    return list(ray.nodes())


LOG_DRIVER = """
import os, subprocess, sys
home = os.environ["CADENZA_HOME"]
# This process's own view of CADENZA_HOME (where task logs go): a disk the Ray nodes do not
# see, as the driver's disk is to the nodes of a real cluster.
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", home], check=True)
from tests.pipelines import on_ray
result = on_ray.speaking.run(executor="ray")
print("RUN", result.run_id, result.state, flush=True)
logs = subprocess.run([sys.argv[1], "logs", result.run_id, "speaks"], capture_output=True,
                      text=True, check=False)
print("LOGS", logs.returncode, logs.stdout, logs.stderr, flush=True)
"""


def test_cadenza_logs_shows_the_log_of_a_task_that_ran_on_another_node(
        ray_env: RayCluster, tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root, to give the driver a disk the nodes do not see")
    home = tmp_path / "driver-home"
    home.mkdir()
    env = {**os.environ, "CADENZA_HOME": str(home), "PYTHONPATH": str(ROOT),
           "CADENZA_DATABASE_URL": f"sqlite:///{tmp_path / 'cadenza.db'}",
           "CADENZA_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           "CADENZA_RAY_ADDRESS": ray_env.address}
    cadenza = str(Path(sys.executable).parent / "cadenza")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", LOG_DRIVER, cadenza], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    run_line = next(line for line in done.stdout.splitlines() if line.startswith("RUN "))
    run_id = run_line.split()[1]
    assert run_line.endswith("success"), done.stdout + done.stderr
    logs = done.stdout[done.stdout.index("LOGS "):]
    assert logs.startswith("LOGS 0"), logs
    assert f"hello from node {ray_env.second_node_id()}" in logs
    # The node wrote its own copy at the driver's path on its disk (here: under the tmpfs the
    # driver had): what `cadenza logs` showed came back with the outcome.
    assert list((home / "logs" / run_id).glob("speaks*.log"))


def test_import_cadenza_and_loading_the_ray_executor_do_not_import_ray() -> None:
    code = ("import sys, cadenza\n"
            "from cadenza.executors import base\n"
            "cls = base._load('ray')\n"
            "assert cls.places_resources\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"  # ray is imported when the executor starts, not before
