"""Timeouts on in-process executors: a task stuck in a blocking call the test controls.

`blocked` waits on RELEASE, a blocking call no exception can interrupt in a thread; it sets
RETURNED when that call has returned (whatever happens next), so a test can tell a run that
ended while the task was still blocked.
"""

from __future__ import annotations

import threading
import time

from cadenza import pipeline, task

RELEASE = threading.Event()
RETURNED = threading.Event()


@task(timeout=0.3)
def blocked() -> str:
    try:
        RELEASE.wait(120)
    finally:
        RETURNED.set()
    return "late"


@pipeline
def blocked_pipeline():
    blocked()


@task(timeout=0.2)
def sleeps(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@pipeline
def sleeps_pipeline(seconds: float = 1.5):
    sleeps(seconds)


@task(timeout=30)
def quick() -> int:
    return 1


@pipeline
def quick_pipeline():
    quick()
