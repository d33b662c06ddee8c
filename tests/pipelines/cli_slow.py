"""CLI fixture: a task that waits for a release file, to interrupt a run (Ctrl-C) and resume it.

`prepare` counts its executions in FOLDER/prepare.count, so a test can check that resume
does not run it again. `wait_for_release` writes FOLDER/started and then waits (in short
sleeps, so cancellation lands quickly) until FOLDER/release exists.
"""

from __future__ import annotations

import time
from pathlib import Path

from cadenza import pipeline, task


@task
def prepare(folder: str) -> int:
    with open(Path(folder) / "prepare.count", "a") as fh:
        fh.write("x\n")
    return 21


@task
def wait_for_release(value: int, folder: str) -> int:
    Path(folder, "started").write_text("started")
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the task")
        time.sleep(0.02)
    print("released")
    return value * 2


@task
def report(value: int) -> str:
    return f"result {value}"


@pipeline
def slow(folder: str):
    report(wait_for_release(prepare(folder), folder))
