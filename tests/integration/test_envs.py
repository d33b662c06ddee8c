"""Per-task uv environments with real uv and packages from the index (SPEC §2).

Tiny pure-Python pins (`six` 1.16.0 and 1.15.0; the driver itself has another six), real
environment builds under the test's CADENZA_HOME, real child processes. Builds are counted
by the lines of `envs/builds.log` (one per build), never by timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.store import open_store
from tests.conftest import RAY
from tests.fixtures.waiting import wait_for
from tests.pipelines import envs as pipes

pytestmark = pytest.mark.slow


def builds(home: Path) -> list[dict[str, object]]:
    path = home / "envs" / "builds.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def env_rows(settings: Settings, run_id: str, task_id: str) -> dict[str, str]:
    return {m.name: str(m.value) for m in open_store(settings.database_url).get_metrics(run_id)
            if m.task_id == task_id and m.kind == "env"}


@pytest.mark.parametrize("executor", ["inline", "threads", "processes", RAY])
def test_conflicting_pins_in_one_pipeline_each_task_sees_its_own(
        sqlite_env: Settings, executor: str) -> None:
    import six  # the driver's own, neither of the pins

    assert six.__version__ not in ("1.16.0", "1.15.0")
    result = pipes.conflicting_pins.run(executor=executor)
    assert result.state == "success", result.error
    assert result.outputs["both"] == ["1.16.0", "1.15.0"]
    envs_dir = sqlite_env.home / "envs"
    new, old = result.outputs["six_new"], result.outputs["six_old"]
    assert Path(new["file"]).is_relative_to(envs_dir)
    assert Path(old["python"]).parent.parent != Path(new["python"]).parent.parent
    assert len(builds(sqlite_env.home)) == 2
    # The resolved lock is recorded on each attempt.
    assert "six==1.16.0" in env_rows(sqlite_env, result.run_id, "six_new")["env.lock"]
    rows = env_rows(sqlite_env, result.run_id, "six_old")
    assert rows["env.lock"].split() == ["six==1.15.0"]
    assert rows["env.python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")
    # The task without requirements ran in the driver's environment: no env recorded.
    assert env_rows(sqlite_env, result.run_id, "both") == {}


def test_a_kept_env_worker_sees_the_drivers_environment_as_it_is_now(
        sqlite_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set (or removed), PATH and the folder changed between two runs reach the
    task on the env worker kept from the first run, as on inline without requirements= (it
    saw the environment of its spawn); what the worker set itself stays, and the env's own
    bin stays first on PATH."""
    monkeypatch.delenv(pipes.BETWEEN_RUNS, raising=False)
    monkeypatch.delenv(pipes.WORKER_OWN, raising=False)

    def seen() -> dict[str, object]:
        result = pipes.env_environment.run(executor="inline")
        assert result.state == "success", result.error
        return result.outputs["environment_seen"]  # type: ignore[no-any-return]

    first = seen()
    assert first["value"] is None and first["own"] is None
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.setenv(pipes.BETWEEN_RUNS, "second run")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(folder)
    second = seen()
    assert second["pid"] == first["pid"]  # the kept worker
    assert (second["value"], second["cwd"], second["own"]) == (
        "second run", str(folder), "set in the worker")
    env_bin = Path(str(first["venv"])) / "bin"
    assert str(second["path"]).split(os.pathsep)[:2] == [str(env_bin), str(folder)]
    monkeypatch.delenv(pipes.BETWEEN_RUNS)
    third = seen()
    assert third["pid"] == first["pid"] and third["value"] is None
    assert third["own"] == "set in the worker"


def test_second_run_uses_the_cached_envs_without_building_and_caches_the_task(
        sqlite_env: Settings) -> None:
    first = pipes.conflicting_pins.run(executor="processes")
    assert first.state == "success", first.error
    assert len(builds(sqlite_env.home)) == 2
    second = pipes.conflicting_pins.run(executor="processes")
    assert second.state == "success", second.error
    assert second.outputs["both"] == ["1.16.0", "1.15.0"]
    assert len(builds(sqlite_env.home)) == 2  # no rebuild
    assert (env_rows(sqlite_env, first.run_id, "six_new")
            == env_rows(sqlite_env, second.run_id, "six_new"))
    attempt = next(a for a in open_store(sqlite_env.database_url).get_attempts(second.run_id)
                   if a.task_id == "six_new")
    assert attempt.log_path is not None
    assert "from the cache" in Path(attempt.log_path).read_text()

    # A cached task with requirements: its second run is a cache hit.
    hit = [pipes.cached_env.run(executor="processes") for _ in range(2)][1]
    assert hit.task_states["cached_six"] is TaskState.CACHED
    assert hit.outputs["cached_six"] == "1.16.0"


@pytest.mark.parametrize("executor", ["processes", RAY])
def test_a_requirement_that_cannot_resolve_fails_the_task_with_uvs_message_and_the_fix(
        sqlite_env: Settings, executor: str) -> None:
    result = pipes.broken_requirement.run(executor=executor)
    assert result.state == "failed"
    assert result.task_states["broken"] is TaskState.FAILED
    assert result.task_states["after_broken"] is TaskState.SUCCESS  # trigger rules go on
    ti = next(t for t in open_store(sqlite_env.database_url).get_task_instances(result.run_id)
              if t.task_id == "broken")
    assert ti.error is not None
    message = ti.error.message
    assert "pipeline 'broken_requirement', task 'broken'" in message
    assert "cadenza-no-such-package-zz" in message and "uv says" in message
    assert "Fix: correct @task(requirements=" in message
    assert ti.error.traceback == ""  # a user error: no traceback
    assert builds(sqlite_env.home) == []
    assert list((sqlite_env.home / "envs").glob(".build-*")) == []  # nothing half-built left


def test_two_processes_building_one_env_build_it_once(tmp_path: Path) -> None:
    root = tmp_path / "envs"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cadenza.executors.envs import ensure_env
        env = ensure_env(("six==1.15.0",), None, root=Path({str(root)!r}))
        import subprocess
        out = subprocess.run([str(env.python), "-c", "import six; print(six.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
        print(env.key, env.built, out)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = [o[0].split() for o in outs]
    assert lines[0][0] == lines[1][0]
    assert sorted(line[1] for line in lines) == ["False", "True"]  # one built, one waited
    assert [line[2] for line in lines] == ["1.15.0", "1.15.0"]
    assert len((root / "builds.log").read_text().splitlines()) == 1
    assert [p.name for p in root.iterdir() if p.is_dir()] == [lines[0][0]]


def _pid_in(path: Path) -> int:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.strip() else 0


def test_a_timed_out_task_in_an_env_is_killed(sqlite_env: Settings, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = pipes.env_timeout.run(executor="processes", pid_file=str(pid_file))
    assert result.state == "failed"
    ti = open_store(sqlite_env.database_url).get_task_instances(result.run_id)[0]
    assert ti.error is not None and ti.error.kind == "timeout", ti.error
    pid = _pid_in(pid_file)
    assert pid
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
             timeout_s=10, what="the timed-out task's process to be gone")


def test_an_env_timeout_counts_from_the_task_start_not_the_worker_boot(
        sqlite_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env worker's interpreter start and the import of the task's module (2 s here) come
    before the task's function starts; its 1 s timeout counts from that start only."""
    monkeypatch.setenv("CADENZA_TEST_SLOW_IMPORT_S", "2")
    monkeypatch.delitem(sys.modules, "tests.pipelines.env_slow_import", raising=False)
    from tests.pipelines import env_slow_import  # the driver pays the 2 s too, untimed

    result = env_slow_import.env_slow_import.run(executor="threads")
    assert result.state == "success", result.error
    assert result.outputs["quick_after_a_slow_import"] == "ran"


def test_a_task_whose_env_process_dies_is_retried(sqlite_env: Settings) -> None:
    result = pipes.env_worker_lost.run(executor="processes")
    assert result.state == "success", result.error
    assert result.outputs["dies_once"] == "attempt 2"
    attempts = [a for a in open_store(sqlite_env.database_url).get_attempts(result.run_id)]
    assert [a.error.kind for a in attempts if a.error is not None] == ["worker_lost"]
    first = next(a for a in attempts if a.attempt == 1)
    assert first.error is not None and "SIGKILL" in first.error.message


def test_a_driver_killed_with_sigkill_leaves_no_env_task_running(
        sqlite_env: Settings, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.pipelines import envs
        envs.env_sleeper.run(executor="processes", pid_file={str(pid_file)!r})
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        pid = wait_for(lambda: _pid_in(pid_file), timeout_s=120, what="the task to start")
        assert psutil.pid_exists(pid)
    finally:
        driver.kill()
        driver.wait()
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
             timeout_s=10, what="the env task's process to die with its driver")


def test_python_version_is_the_envs_interpreter(sqlite_env: Settings) -> None:
    result = pipes.explicit_python.run(executor="threads")
    assert result.state == "success", result.error
    assert result.outputs["which_python"].startswith("3.11.")
    rows = env_rows(sqlite_env, result.run_id, "which_python")
    assert rows["env.python"].startswith("3.11.") and rows["env.lock"] == ""


def test_the_cli_shows_environment_builds_as_progress(sqlite_env: Settings,
                                                      tmp_path: Path) -> None:
    env = {**os.environ, "CADENZA_HOME": str(sqlite_env.home), "NO_COLOR": "1"}
    target = f"{Path(pipes.__file__).resolve()}:conflicting_pins"
    done = subprocess.run([sys.executable, "-m", "cadenza", "run", target, "-e", "processes"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    notes = [line for line in done.stdout.splitlines() if "building environment" in line]
    assert len(notes) == 2 and any("six==1.15.0" in n for n in notes), done.stdout
    assert sum("built in" in line for line in done.stdout.splitlines()) == 2


@pytest.mark.parametrize("executor", ["threads", "processes", RAY])
def test_mapped_instances_share_one_env_built_once(sqlite_env: Settings, executor: str) -> None:
    result = pipes.mapped_env.run(executor=executor)
    assert result.state == "success", result.error
    assert result.outputs["six_of"] == ["0:1.15.0", "1:1.15.0", "2:1.15.0", "3:1.15.0"]
    assert len(builds(sqlite_env.home)) == 1  # four instances at once, one build (the lock)


@pytest.mark.parametrize("executor", ["threads", "processes", RAY])
def test_cancelling_a_run_kills_its_env_task(sqlite_env: Settings, tmp_path: Path,
                                             executor: str) -> None:
    from cadenza.core.states import RunState
    from cadenza.engine.cancel import cancel_run

    pid_file = tmp_path / "pid"
    box: dict[str, object] = {}
    driver = threading.Thread(target=lambda: box.setdefault("result", pipes.env_sleeper.run(
        executor=executor, pid_file=str(pid_file))), daemon=True)
    driver.start()
    pid = wait_for(lambda: _pid_in(pid_file), timeout_s=120, what="the task to start")
    run_id = open_store(sqlite_env.database_url).list_runs(limit=1)[0].run_id
    report = cancel_run(run_id, wait_s=60)
    assert report.state is RunState.CANCELLED
    driver.join(60)
    ti = open_store(sqlite_env.database_url).get_task_instances(run_id)[0]
    assert ti.state is TaskState.CANCELLED
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
             timeout_s=10, what="the cancelled task's process to be gone")


def test_env_workers_are_kept_for_the_next_task_of_their_env(sqlite_env: Settings) -> None:
    def workers(run_id: str) -> set[str]:
        return {str(a.worker) for a in open_store(sqlite_env.database_url).get_attempts(run_id)}

    first = pipes.mapped_env.run(executor="inline")  # one at a time: one worker
    assert first.state == "success", first.error
    assert len(workers(first.run_id)) == 1 and "env:" in next(iter(workers(first.run_id)))
    second = pipes.mapped_env.run(executor="inline")
    assert workers(second.run_id) == workers(first.run_id)  # the same process again
    pid = int(next(iter(workers(first.run_id))).split("@")[0].removeprefix("pid:"))
    assert psutil.pid_exists(pid)


def test_a_python_that_is_not_there_fails_the_task_saying_how_to_get_it(
        sqlite_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")  # no download attempt: uv answers at once
    result = pipes.missing_python.run(executor="threads")
    assert result.task_states["far_future"] is TaskState.FAILED
    ti = open_store(sqlite_env.database_url).get_task_instances(result.run_id)[0]
    assert ti.error is not None and ti.error.traceback == ""
    assert "task 'far_future'" in ti.error.message
    assert "could not create a python 3.99 environment; uv says:" in ti.error.message
    assert "Fix: install Python 3.99 on this machine" in ti.error.message


def test_idle_env_workers_past_their_idle_timeout_are_stopped(
        sqlite_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.executors import envs

    first = pipes.mapped_env.run(executor="inline")
    (name,) = {str(a.worker) for a in open_store(sqlite_env.database_url).get_attempts(
        first.run_id)}
    pid = int(name.split("@")[0].removeprefix("pid:"))
    monkeypatch.setattr(envs, "IDLE_TIMEOUT_S", -1.0)  # every idle worker is past it
    second = pipes.mapped_env.run(executor="inline")
    assert second.state == "success", second.error
    assert not psutil.pid_exists(pid)  # stopped (and reaped) when the next call swept
    workers = {str(a.worker) for a in open_store(sqlite_env.database_url).get_attempts(
        second.run_id)}
    assert name not in workers


def test_a_task_defined_in_the_script_that_runs_it_works_in_its_env(tmp_path: Path) -> None:
    script = tmp_path / "script_env.py"
    script.write_text(textwrap.dedent("""
        from cadenza import pipeline, task

        OFFSET = 10

        def helper(v: str) -> str:
            return f"{v}+{OFFSET}"

        @task(requirements=["six==1.15.0"])
        def in_env() -> str:
            import six
            return helper(six.__version__)

        @pipeline
        def from_script() -> None:
            in_env()

        result = from_script.run(executor="processes")
        print("RESULT", result.state, result.outputs["in_env"])
    """))
    env = {**os.environ, "CADENZA_HOME": str(tmp_path / "home")}
    env.pop("CADENZA_DATABASE_URL", None)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert "RESULT success 1.15.0+10" in done.stdout, done.stdout + done.stderr
