"""Scheduler fixtures: event-triggered pipelines (Redis, NATS, Kafka, AMQP, MQTT).

`event_pipeline(url)` builds one for a test's own stream, subject, topic or queue. The
module-level ones exist when CADENZA_TEST_REDIS_URL / CADENZA_TEST_NATS_URL /
CADENZA_TEST_EVENT_URL are set: what scheduler subprocesses load (`cadenza scheduler
tests.pipelines.sched_events:...`).

CADENZA_TEST_HOLD_ACK=DIR (for the kill -9 tests, tests/integration/test_events_ha.py) makes
the consumers of this process write DIR/prepared.<pid> once their group/queue/session
exists, and stop for good at their first acknowledgement, after the runs of that batch are
committed: DIR/held.<pid> says how many messages it holds. A kill -9 then is exactly "the
scheduler died between the run's commit and the message's ack".
"""

from __future__ import annotations

import os
import threading
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

if os.environ.get("CADENZA_TEST_EVENT_URL"):
    url_events = event_pipeline(os.environ["CADENZA_TEST_EVENT_URL"], "url_events",
                                slow_s=float(os.environ.get("CADENZA_TEST_SLOW_S", "0")))


def _hold_acks(folder: Path) -> None:
    from cadenza.triggers.events.amqp import AmqpConsumer
    from cadenza.triggers.events.kafka import KafkaConsumer
    from cadenza.triggers.events.mqtt import MqttConsumer

    def hold(self, *_done) -> None:
        (folder / f"held.{os.getpid()}").touch()
        threading.Event().wait()  # never acknowledges: the test kills this process

    for cls in (KafkaConsumer, AmqpConsumer, MqttConsumer):
        def prepare(self, real_prepare=cls.prepare) -> None:
            real_prepare(self)
            (folder / f"prepared.{os.getpid()}").touch()

        cls.prepare = prepare
        cls._ack = hold


if os.environ.get("CADENZA_TEST_HOLD_ACK"):
    _hold_acks(Path(os.environ["CADENZA_TEST_HOLD_ACK"]))
