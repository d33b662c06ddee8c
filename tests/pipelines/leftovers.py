"""A task that starts a child process which ignores SIGTERM, then outlives its timeout
(tests/integration/test_processes_leftovers.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cadenza import pipeline, task


@task(timeout=2)
def starts_a_stubborn_child(pid_file: str) -> None:
    child = subprocess.Popen(["sh", "-c", 'trap "" TERM; while true; do sleep 1; done'])
    Path(pid_file).write_text(str(child.pid))
    time.sleep(600)


@pipeline
def stubborn(pid_file: str = "") -> None:
    starts_a_stubborn_child(pid_file)
