"""Scripts without `if __name__ == "__main__":` run on every executor, the default included.

Worker processes of the processes executor must not import the user's script again (as
multiprocessing's forkserver and spawn children do by default): that would re-run its
top-level `pipeline.run()`. Each script here appends its pid to a marker file at top level, so
the tests see how many times the top level ran, besides the results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HELPERS = textwrap.dedent("""
    def double(x):
        return 2 * x
""")

# chain, expand, fan-in, retries, branch, get_context(), a module-level constant, a sibling
# module's helper, and a class of the script returned as an output and passed as an input.
UNGUARDED = textwrap.dedent("""
    import json
    import os
    import sys

    from cadenza import get_context, pipeline, task
    from helpers import double

    with open(os.environ["TOP_LEVEL_MARKER"], "a") as marker:
        marker.write(f"{os.getpid()}\\n")

    SCALE = 3


    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y


    @task
    def numbers(n: int) -> list[int]:
        return list(range(n))


    @task
    def scaled(x: int) -> int:
        return double(x) * SCALE


    @task(retries=2, retry_delay=0)
    def flaky(xs: list[int]) -> int:
        if get_context().attempt < 2:
            raise RuntimeError("the first attempt fails")
        return sum(xs)


    @task.branch
    def gate(total: int) -> str:
        return "big" if total > 10 else "small"


    @task
    def big(total: int) -> str:
        return f"big {total}"


    @task
    def small(total: int) -> str:
        return f"small {total}"


    @task
    def seen(total: int) -> dict:
        ctx = get_context()
        return {"task": ctx.task_id, "run": ctx.run_id, "n": ctx.params["n"],
                "attempt": ctx.attempt}


    @task
    def make_point(total: int) -> Point:
        return Point(total, SCALE)


    @task
    def norm(p: Point) -> int:
        return p.x * p.x + p.y * p.y


    @pipeline
    def unguarded(n: int = 4):
        total = flaky(scaled.expand(x=numbers(n)))
        gate(total) >> [big(total), small(total)]
        seen(total)
        norm(make_point(total))
        norm(Point(3, 4))


    result = unguarded.run(n=4)
    point = result.outputs["make_point"]
    summary = {
        "state": str(result.state),
        "states": {k: str(v) for k, v in sorted(result.task_states.items())},
        "total": result.outputs["flaky"],
        "big": result.outputs["big"],
        "seen": result.outputs["seen"] | {"run": result.outputs["seen"]["run"] == result.run_id},
        "point": [type(point).__name__, isinstance(point, Point), point.x, point.y],
        "norm": [result.outputs["norm"], result.outputs["norm__1"]],
    }
    print("SUMMARY " + json.dumps(summary, sort_keys=True))
    sys.exit(0 if result.ok else 1)
""")

EXPECTED = {
    "state": "success",
    "states": {
        "big": "success", "flaky": "success", "gate": "success", "make_point": "success",
        "norm": "success", "norm__1": "success", "numbers": "success", "scaled": "success",
        "seen": "success", "small": "skipped",
    },
    "total": 36,  # 2 * 3 * (0 + 1 + 2 + 3), on the second attempt
    "big": "big 36",
    "seen": {"attempt": 1, "n": 4, "run": True, "task": "seen"},
    "point": ["Point", True, 36, 3],  # the script's own class, not a copy
    "norm": [36 * 36 + 9, 25],
}


def _env(tmp_path: Path, executor: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env["CADENZA_HOME"] = str(tmp_path / "home")
    env["CADENZA_EXECUTOR"] = executor
    env["TOP_LEVEL_MARKER"] = str(tmp_path / "marker")
    return env


def _check(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("SUMMARY ")]
    assert json.loads(line.removeprefix("SUMMARY ")) == EXPECTED
    # The top level ran once, in the driver: no worker imported the script again.
    assert len((tmp_path / "marker").read_text().split()) == 1


@pytest.mark.parametrize("executor", ["processes", "threads", "inline"])
def test_an_unguarded_script_runs_the_same_on_every_executor(tmp_path, executor):
    (tmp_path / "helpers.py").write_text(HELPERS)
    script = tmp_path / "flow.py"
    script.write_text(UNGUARDED)

    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                          env=_env(tmp_path, executor), capture_output=True, text=True,
                          timeout=180, check=False)

    _check(proc, tmp_path)


def test_an_unguarded_module_run_with_dash_m_runs_on_processes(tmp_path):
    package = tmp_path / "flows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (tmp_path / "helpers.py").write_text(HELPERS)
    (package / "flow.py").write_text(UNGUARDED)

    proc = subprocess.run([sys.executable, "-m", "flows.flow"], cwd=tmp_path,
                          env=_env(tmp_path, "processes"), capture_output=True, text=True,
                          timeout=180, check=False)

    _check(proc, tmp_path)


def test_a_script_read_from_stdin_runs_on_processes(tmp_path):
    """No file behind `__main__` (stdin, `python -c`, a notebook kernel): the tasks travel by
    value all the same."""
    (tmp_path / "helpers.py").write_text(HELPERS)

    proc = subprocess.run([sys.executable, "-"], input=UNGUARDED, cwd=tmp_path,
                          env=_env(tmp_path, "processes"), capture_output=True, text=True,
                          timeout=180, check=False)

    _check(proc, tmp_path)


POOLS = textwrap.dedent("""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    from cadenza import pipeline, task


    class Box:
        def __init__(self, v):
            self.v = v


    def square(v):
        return v * v


    @task
    def default_pool(n: int) -> list:
        with ProcessPoolExecutor(2) as ex:
            return list(ex.map(square, range(n)))


    @task
    def fork_pool(n: int) -> list:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as ex:
            return list(ex.map(square, range(n)))


    @task
    def by_reference(n: int) -> int:
        return pickle.loads(pickle.dumps(Box(n))).v


    @pipeline
    def pools(n: int = 4):
        default_pool(n)
        fork_pool(n)
        by_reference(n)


    if __name__ == "__main__":
        r = pools.run()
        print("OUT", r.state, r.outputs["default_pool"], r.outputs["fork_pool"],
              r.outputs["by_reference"])
""")


def test_a_task_can_pickle_the_functions_and_classes_of_its_script_by_reference(tmp_path):
    """Workers rebuild the script's functions by value; code inside a task that pickles them
    by reference (a process pool over a function of the script, pickle.dumps of an instance)
    finds them as `__main__.<name>`, and a spawn/forkserver pool's children import the script
    as they would from the driver."""
    script = tmp_path / "pools.py"
    script.write_text(POOLS)
    env = _env(tmp_path, "processes")

    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180, check=False)

    assert proc.returncode == 0, proc.stderr
    assert "OUT success [0, 1, 4, 9] [0, 1, 4, 9] 4" in proc.stdout, proc.stdout + proc.stderr
