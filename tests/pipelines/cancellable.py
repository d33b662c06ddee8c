"""A pipeline to cancel while it runs: `hold` writes FOLDER/started, then waits in short
sleeps for FOLDER/release (so an interrupt lands at once); `first` counts its runs."""

from __future__ import annotations

import time
from pathlib import Path

from cadenza import pipeline, task


@task
def first(folder: str) -> int:
    with open(Path(folder) / "first.count", "a") as fh:
        fh.write("x\n")
    return 1


@task
def hold(value: int, folder: str) -> int:
    Path(folder, "started").write_text("yes")
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the task")
        time.sleep(0.02)
    return value + 1


@task
def last(value: int) -> int:
    return value * 10


@pipeline
def held(folder: str):
    last(hold(first(folder), folder))
