"""The user's story of issue 11, item 1, with the real executables: a script with `SCALE = 2`
run as `python story.py`, then `SCALE = 100`. The task must run again and return the new
value (it used to be served from the cache: the stale 6), and `cadenza plan` must say why.
The same for a dict read through a helper; a global that cannot be hashed gives one warning
line and the task runs every time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_plan_lineage import rows
from tests.e2e.test_cli_support import Project, make_project

STORY = '''
import threading

from cadenza import pipeline, task

SCALE = 2
CONFIG = {"factor": 10, "layers": [64, 32], "tags": {"a", "b", "c", "d", "e"}}
LOCK = threading.Lock()


def factor():
    return CONFIG["factor"]


@task(cache=True)
def scaled(x: int) -> int:
    return x * SCALE


@task(cache=True)
def configured(x: int) -> int:
    return x * factor()


@task(cache=True)
def locked(x: int) -> int:
    with LOCK:
        return x


@pipeline
def story(x: int = 3):
    scaled(x)
    configured(x)


@pipeline
def guarded(x: int = 3):
    locked(x)


if __name__ == "__main__":
    result = story.run()
    for name in ("scaled", "configured"):
        print(name, result.outputs[name], result.task_states[name].value)
'''
PIPELINE = "pipelines/story.py"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path, executor="processes", files={PIPELINE: STORY})


def run_script(p: Project) -> dict[str, tuple[int, str]]:
    """`python pipelines/story.py` (module `__main__`): each task's output and state."""
    proc = subprocess.run([sys.executable, PIPELINE], cwd=p.root, env=p.env, text=True,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    found = {}
    for line in proc.stdout.splitlines():
        name, value, state = line.split()
        found[name] = (int(value), state)
    return found


def edit(p: Project, old: str, new: str) -> None:
    path = p.root / PIPELINE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_a_changed_constant_reruns_the_task_and_plan_names_it(project: Project) -> None:
    assert run_script(project) == {"scaled": (6, "success"), "configured": (30, "success")}
    # Imported by the CLI under another module name than __main__: the same keys.
    table = rows(project.ok("plan", f"{PIPELINE}:story").stdout)
    assert table["scaled"].startswith("cached cache hit")
    assert run_script(project) == {"scaled": (6, "cached"), "configured": (30, "cached")}

    edit(project, "SCALE = 2", "SCALE = 100")
    table = rows(project.ok("plan", f"{PIPELINE}:story").stdout)
    assert table["scaled"] == "will run global SCALE changed"
    assert table["configured"].startswith("cached cache hit")
    assert run_script(project) == {"scaled": (300, "success"), "configured": (30, "cached")}

    edit(project, '"factor": 10', '"factor": 20')
    table = rows(project.ok("plan", f"{PIPELINE}:story").stdout)
    assert table["configured"] == "will run global CONFIG changed"
    run = project.json("run", f"{PIPELINE}:story")
    states = {t["task_id"]: t["state"] for t in run["task_instances"]}
    assert states == {"scaled": "cached", "configured": "success"}


def test_an_unhashable_global_warns_once_and_the_task_always_runs(project: Project) -> None:
    first = project.ok("run", f"{PIPELINE}:guarded", "--executor", "inline")
    warnings = [line for line in first.stderr.splitlines() if "global LOCK" in line]
    assert len(warnings) == 1, first.stderr
    assert "pipeline 'guarded', task 'locked'" in warnings[0]
    assert "not cached and runs every time. Fix:" in warnings[0]

    plan = project.ok("plan", f"{PIPELINE}:guarded")
    assert rows(plan.stdout)["locked"] == "will run not cacheable (global LOCK)"
    assert len([line for line in plan.stderr.splitlines() if "global LOCK" in line]) == 1

    again = project.json("run", f"{PIPELINE}:guarded", "--executor", "inline")
    assert {t["task_id"]: t["state"] for t in again["task_instances"]} == {"locked": "success"}
