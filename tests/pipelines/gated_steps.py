"""`steps`: first -> hold -> last, where `hold` runs until the file `gate` exists (relative
to the working directory; default `release`), so a test sees a run with a task running and
then lets it finish. Used as a project's pipeline file by tests/e2e/test_cli_server.py and
tests/integration/test_api_events.py. Self-contained (imports only cadenza)."""

import time
from pathlib import Path

from cadenza import pipeline, task


@task
def first(n: int) -> int:
    return n + 1


@task
def hold(value: int, gate: str) -> int:
    deadline = time.monotonic() + 120
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never created the gate file {gate}")
        time.sleep(0.02)
    return value * 2


@task
def last(value: int) -> int:
    return value + 100


@pipeline
def steps(n: int = 1, gate: str = "release"):
    last(hold(first(n), gate))
