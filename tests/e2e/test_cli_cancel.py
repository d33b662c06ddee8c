"""`cadenza runs cancel RUN_ID` from another process, whoever drives the run (`cadenza run`,
a plain `python script.py`, `cadenza scheduler`); and a driver killed with kill -9 shows as
`crashed` until `cadenza resume` finishes its run (SPEC §7, issue 11 item 4).

Every process here is real: the tests wait on files the task writes and on store states,
never on sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.test_cli_support import Project, instances, make_project, output_of
from tests.fixtures.waiting import wait_for

JOBS = '''
import os
import time
from pathlib import Path

from cadenza import pipeline, task

CTL = {ctl!r}


@task
def prepare(folder: str) -> int:
    with open(Path(folder) / "prepare.count", "a") as fh:
        fh.write("x\\n")
    return 21


@task
def wait_for_release(value: int, folder: str) -> int:
    """Writes the pid of the process running it, then waits (short sleeps) for a file."""
    Path(folder, "pid.tmp").write_text(str(os.getpid()))
    os.replace(Path(folder, "pid.tmp"), Path(folder, "pid"))
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the task")
        time.sleep(0.02)
    return value * 2


@task
def report(value: int) -> str:
    return f"result {{value}}"


@pipeline
def slow(folder: str = CTL):
    report(wait_for_release(prepare(folder), folder))


@pipeline(schedule="@monthly", start_date="2024-01-01", catchup=False)
def slow_monthly(folder: str = CTL):
    report(wait_for_release(prepare(folder), folder))
'''

SCRIPT = '''
import sys

sys.path.insert(0, {pipelines!r})

from jobs import slow  # noqa: E402

if __name__ == "__main__":
    result = slow.run(executor=sys.argv[1])
    print(f"script saw {{result.run_id}} {{result.state}}")
'''

EXECUTORS = ["processes", "threads", "inline"]


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    folder = tmp_path / "ctl"
    folder.mkdir()
    return folder


@pytest.fixture
def proj(tmp_path: Path, ctl: Path) -> Project:
    p = make_project(tmp_path, files={"pipelines/jobs.py": JOBS.format(ctl=str(ctl))})
    (p.root / "script.py").write_text(SCRIPT.format(pipelines=str(p.pipelines)))
    return p


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _started(ctl: Path, proc: subprocess.Popen[str]) -> int:
    wait_for(lambda: (ctl / "pid").exists() or proc.poll() is not None,
             what="the slow task to start")
    assert proc.poll() is None, proc.communicate()
    return int((ctl / "pid").read_text())


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _cancel_and_check(proj: Project, ctl: Path, run_id: str, executor: str,
                      task_pid: int) -> str:
    """`cadenza runs cancel` from this (another) process; the run ends cancelled."""
    done = proj.ok("runs", "cancel", run_id[:10])
    assert f"Cancelled run {run_id}" in done.stdout, done.stdout
    if executor == "processes":
        assert "killed" in done.stdout
        wait_for(lambda: _pid_gone(task_pid), what="the worker running the task to be gone")
    else:
        assert "next Python bytecode" in done.stdout  # threads/inline: where it stops
    run = proj.json("runs", "show", run_id)
    assert run["state"] == "cancelled"
    states = {k: v["state"] for k, v in instances(run).items()}
    assert states == {"prepare": "success", "wait_for_release": "cancelled",
                      "report": "cancelled"}
    history = instances(run)["wait_for_release"]["attempt_history"]
    assert [a["state"] for a in history] == ["cancelled"]
    return done.stdout


def _resume_finishes(proj: Project, ctl: Path, run_id: str) -> None:
    (ctl / "release").write_text("go")
    resumed = proj.ok("resume", run_id)
    assert "succeeded" in resumed.stdout, resumed.stdout
    run = proj.json("runs", "show", run_id)
    assert run["state"] == "success"
    assert output_of(run, "report") == "result 42"
    assert (ctl / "prepare.count").read_text().count("x") == 1  # kept, not run again


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_stops_a_run_driven_by_cadenza_run(proj: Project, ctl: Path,
                                                  executor: str) -> None:
    proc = proj.popen("run", "pipelines/jobs.py:slow", "--executor", executor)
    try:
        task_pid = _started(ctl, proc)
        run_id = proj.last_run_id()
        _cancel_and_check(proj, ctl, run_id, executor, task_pid)
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 1, (out, err)  # the run did not succeed
    assert f"Run {run_id} of pipeline slow was cancelled" in out, out
    assert "Traceback" not in err
    _resume_finishes(proj, ctl, run_id)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_stops_a_run_driven_by_a_plain_script(proj: Project, ctl: Path,
                                                     executor: str) -> None:
    proc = subprocess.Popen([sys.executable, "script.py", executor], cwd=proj.root,
                            env=proj.env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        task_pid = _started(ctl, proc)
        run_id = proj.last_run_id()
        _cancel_and_check(proj, ctl, run_id, executor, task_pid)
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, (out, err)
    assert f"script saw {run_id} cancelled" in out
    assert "Traceback" not in err
    _resume_finishes(proj, ctl, run_id)


@pytest.mark.parametrize("executor", ["processes", "threads"])
def test_cancel_stops_a_run_driven_by_the_scheduler(proj: Project, ctl: Path,
                                                    executor: str) -> None:
    proc = proj.popen("scheduler", "pipelines/jobs.py:slow_monthly", "--executor", executor)
    try:
        task_pid = _started(ctl, proc)
        run_id = proj.last_run_id()
        _cancel_and_check(proj, ctl, run_id, executor, task_pid)
        assert proc.poll() is None  # the scheduler goes on serving
        proc.send_signal(signal.SIGTERM)
    finally:
        _, err = _stop(proc)
    assert "Traceback" not in err
    assert f"run {run_id} of slow_monthly (schedule) ended cancelled" in err, err
    _resume_finishes(proj, ctl, run_id)


def test_cancel_of_a_queued_run_nobody_drives_cancels_it_directly(proj: Project,
                                                                   ctl: Path) -> None:
    from cadenza.engine.api import new_run
    from cadenza.engine.resume import load_pipeline
    from cadenza.store import open_store

    pipe = load_pipeline(f"{proj.pipelines / 'jobs.py'}:slow")
    run, rows = new_run(pipe, {}, trigger="manual")
    store = open_store(proj.env["CADENZA_DATABASE_URL"])
    store.create_run(run, rows)

    done = proj.ok("runs", "cancel", run.run_id)
    assert f"Cancelled run {run.run_id}" in done.stdout
    assert "was queued" in done.stdout
    shown = proj.json("runs", "show", run.run_id)
    assert shown["state"] == "cancelled"
    assert {t["state"] for t in shown["task_instances"]} == {"cancelled"}


def test_cancel_of_a_finished_run_says_so_and_exits_1(proj: Project, ctl: Path) -> None:
    (ctl / "release").write_text("go")
    proj.ok("run", "pipelines/jobs.py:slow", "--executor", "inline")
    run_id = proj.last_run_id()
    done = proj.ok("runs", "cancel", run_id, code=1)
    assert f"Run {run_id} of pipeline slow already ended success; nothing to cancel" \
        in done.stdout + done.stderr
    assert proj.json("runs", "show", run_id)["state"] == "success"


def test_cancel_of_an_unknown_run_is_a_run_not_found_error(proj: Project) -> None:
    done = proj.ok("runs", "cancel", "no-such-run", code=2)
    assert "no run with id 'no-such-run'" in done.stderr
    assert "cadenza runs list" in done.stderr


def _show(proj: Project, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = proj.json("runs", "show", run_id)
    return data


@pytest.mark.parametrize("executor", ["processes", "inline"])
def test_a_driver_killed_with_kill_9_shows_crashed_until_resumed(proj: Project, ctl: Path,
                                                                 executor: str) -> None:
    env = {**proj.env, "CADENZA_LEASE_S": "2"}
    proc = subprocess.Popen([*_cadenza(), "run", "pipelines/jobs.py:slow", "-e", executor],
                            cwd=proj.root, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        _started(ctl, proc)
        run_id = proj.last_run_id()
        wait_for(lambda: instances(_show(proj, run_id))["wait_for_release"]["state"]
                 == "running", what="the running row to be committed")
        assert _show(proj, run_id)["state"] == "running"  # alive: not crashed
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    wait_for(lambda: _show(proj, run_id)["state"] == "crashed", what="the run to show crashed")
    listed = proj.ok("runs", "list").stdout
    row = next(line for line in listed.splitlines() if run_id in line)
    assert "crashed" in row, listed
    shown = proj.ok("runs", "show", run_id).stdout
    assert "crashed" in shown and f"cadenza resume {run_id}" in shown, shown
    assert proj.json("runs", "list", "--state", "crashed")[0]["run_id"] == run_id
    assert run_id not in [r["run_id"] for r in proj.json("runs", "list", "--state", "running")]
    _resume_finishes(proj, ctl, run_id)


def _cadenza() -> list[str]:
    from tests.e2e.test_cli_support import CADENZA

    return list(CADENZA)
