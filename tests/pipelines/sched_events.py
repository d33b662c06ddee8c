"""Scheduler fixtures: event-triggered pipelines (Redis Streams, NATS JetStream).

`event_pipeline(url)` builds one for a test's own stream or subject. The module-level ones
exist when CADENZA_TEST_REDIS_URL / CADENZA_TEST_NATS_URL are set: what scheduler
subprocesses load (`cadenza scheduler tests.pipelines.sched_events:...`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cadenza import get_context, pipeline, task
from cadenza.triggers.events import EventTrigger


@task
def echo(n: int, label: str) -> dict:
    ctx = get_context()
    return {"n": n, "label": label, "trigger": ctx.extra.get("trigger"), "run_id": ctx.run_id}


@task
def first_step(n: int) -> int:
    marks = os.environ.get("CADENZA_TEST_MARKS")
    if marks:  # one line per execution: the kill -9 test checks nothing finished re-runs
        with open(Path(marks) / f"first_step.{n}", "a") as fh:
            fh.write(f"{os.getpid()}\n")
    return n


@task
def slow_step(n: int, seconds: float) -> int:
    time.sleep(seconds)  # work being done, not synchronisation
    return n * 2


def event_pipeline(url: str, name: str = "on_event", *, slow_s: float = 0.0):
    @pipeline(name=name, triggers=[EventTrigger(url)])
    def on_event(n: int, label: str = "none"):
        echo(n, label)
        if slow_s:
            slow_step(first_step(n), slow_s)

    return on_event


if os.environ.get("CADENZA_TEST_REDIS_URL"):
    redis_events = event_pipeline(os.environ["CADENZA_TEST_REDIS_URL"], "redis_events",
                                  slow_s=float(os.environ.get("CADENZA_TEST_SLOW_S", "0")))
if os.environ.get("CADENZA_TEST_NATS_URL"):
    nats_events = event_pipeline(os.environ["CADENZA_TEST_NATS_URL"], "nats_events",
                                 slow_s=float(os.environ.get("CADENZA_TEST_SLOW_S", "0")))
