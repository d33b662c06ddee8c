"""Ctrl-C during `cadenza run`: the run is cancelled cleanly and `cadenza resume` finishes it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.test_cli_support import Project, instances, output_of, project
from tests.fixtures.waiting import wait_for

__all__ = ["project"]


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_sigint_cancels_the_run_and_resume_finishes_it(project: Project, tmp_path: Path,
                                                        executor: str) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    proc = project.popen("run", "pipelines/cli_slow.py", "--executor", executor,
                         "--param", f"folder={ctl}")
    try:
        wait_for(lambda: (ctl / "started").exists() or proc.poll() is not None,
                 what="the slow task to start")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"{out}\n{err}"
    assert "Traceback" not in err
    run_id = project.last_run_id()
    assert f"Run {run_id} of pipeline slow was cancelled" in out
    assert f"cadenza resume {run_id}" in out
    assert f"Resume with: cadenza resume {run_id}" in err

    run = project.json("runs", "show", run_id)
    assert run["state"] == "cancelled"
    states = {k: v["state"] for k, v in instances(run).items()}
    assert states == {"prepare": "success", "wait_for_release": "cancelled",
                      "report": "cancelled"}
    history = instances(run)["wait_for_release"]["attempt_history"]
    assert [a["state"] for a in history] == ["cancelled"]

    (ctl / "release").write_text("go")
    resumed = project.ok("resume", run_id[:12])
    assert f"Resumed run {run_id}" in resumed.stdout and "succeeded" in resumed.stdout
    run = project.json("runs", "show", run_id)
    assert run["state"] == "success"
    assert output_of(run, "report") == "result 42"
    assert (ctl / "prepare.count").read_text().count("x") == 1  # not run again
    assert instances(run)["wait_for_release"]["attempts"] == 2


def test_sigint_with_json_output_still_reports_the_cancelled_run(project: Project,
                                                                 tmp_path: Path) -> None:
    import json

    ctl = tmp_path / "ctl"
    ctl.mkdir()
    proc = project.popen("run", "slow", "--executor", "threads", "--param", f"folder={ctl}",
                         "--json")
    try:
        wait_for(lambda: (ctl / "started").exists() or proc.poll() is not None,
                 what="the slow task to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    data = json.loads(out)
    assert data["state"] == "cancelled" and data["interrupted"] is True
