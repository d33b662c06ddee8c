"""On `processes`, a task's log holds everything the task writes to its stdout and stderr
file descriptors: its child commands (`subprocess.run`, `os.system`), raw `os.write(1, ...)`,
C code. None of it reaches the driver's terminal, and none of it leaks into the next task.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.e2e.test_cli_support import make_project

LOUD = textwrap.dedent("""
    import os
    import subprocess
    import sys

    from cadenza import pipeline, task


    @task
    def loud() -> int:
        print("py-line")
        print("py-err-line", file=sys.stderr)
        subprocess.run(["sh", "-c", "echo from-child; echo err-child >&2"], check=True)
        os.write(1, b"raw\\n")
        os.write(2, b"raw-err\\n")
        os.system("echo from-system")
        return os.getpid()


    @task
    def quiet(pid: int) -> int:
        print("quiet-own")
        return os.getpid()


    @pipeline
    def loud_flow():
        quiet(loud())
""")

LOUD_LINES = ("from-child", "err-child", "raw", "raw-err", "from-system")


def test_child_commands_and_raw_fd_writes_go_to_the_attempt_log(tmp_path: Path) -> None:
    project = make_project(tmp_path, executor="processes", files={"pipelines/loud.py": LOUD})
    run = project.ok("run", "loud_flow")
    for line in LOUD_LINES:
        assert line not in run.stdout.splitlines(), run.stdout
        assert line not in run.stderr.splitlines(), run.stderr
    run_id = project.last_run_id()

    loud = project.ok("logs", run_id, "loud").stdout.splitlines()
    for line in (*LOUD_LINES, "py-line", "py-err-line"):
        assert loud.count(line) == 1, loud  # each once: Python-level output is not doubled
    # Ordering is the order the task wrote in.
    assert loud.index("py-line") < loud.index("from-child") < loud.index("raw")
    assert loud.index("raw") < loud.index("from-system")

    quiet = project.ok("logs", run_id, "quiet").stdout.splitlines()
    assert "quiet-own" in quiet
    assert not set(quiet) & set(LOUD_LINES), quiet
