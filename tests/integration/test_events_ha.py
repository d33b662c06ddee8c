"""A `cadenza scheduler` killed with kill -9 between committing the runs of a batch of
Kafka, RabbitMQ or MQTT messages and acknowledging them loses and doubles nothing (SPEC §4,
§9): the broker delivers the unacknowledged messages again to the scheduler started after
it, which finds their records and makes no second run, takes over the runs the dead one was
driving, and makes one run for each message the dead one never read.

The schedulers are real processes on the real PostgreSQL; the victim is stopped for good at
its first acknowledgement (CADENZA_TEST_HOLD_ACK, tests/pipelines/sched_events.py), after
its runs were committed, and killed there while its runs are mid-task."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from tests.fixtures.brokers import AMQP, MQTT, require_amqp, require_mqtt
from tests.fixtures.waiting import wait_for
from tests.integration.test_scheduler_ha import ROOT, Schedulers

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

N = 6
TARGET = "tests.pipelines.sched_events:url_events"


class Kafka:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"cadenza.ha.{uuid.uuid4().hex[:10]}"
        self.url = f"kafka://{bootstrap}?topic={self.topic}&session_timeout_ms=6000"

    def publish(self, bodies: list[bytes]) -> None:
        from tests.integration.test_events_kafka import produce

        produce(self.bootstrap, self.topic, bodies)

    def acknowledged(self) -> int:
        """How many messages the group has committed past."""
        from tests.integration.test_events_kafka import committed

        return max(committed(self.bootstrap, self.topic, "cadenza.url_events")[0], 0)

    def cleanup(self) -> None:
        """Nothing to do: the broker is in memory, and the topic is this test's own."""


class Amqp:
    def __init__(self) -> None:
        require_amqp()
        self.queue = f"cadenza.ha.{uuid.uuid4().hex[:10]}"
        self.url = f"amqp://guest:guest@{AMQP}/?queue={self.queue}"

    def publish(self, bodies: list[bytes]) -> None:
        from tests.integration.test_events_amqp import publish

        publish(self.queue, bodies, ids=[f"ha-{i}" for i in range(len(bodies))])

    def acknowledged(self) -> int:
        """How many messages have left the queue (with no consumer connected)."""
        from tests.integration.test_events_amqp import queue_depth

        return N - queue_depth(self.queue)

    def cleanup(self) -> None:
        from tests.integration.test_events_amqp import _connect

        conn = _connect()
        conn.channel().queue_delete(queue=self.queue)
        conn.close()


class Mqtt:
    def __init__(self) -> None:
        require_mqtt()
        self.topic = f"cadenza/ha/{uuid.uuid4().hex[:10]}"
        self.client_id = f"cadenza-ha-{uuid.uuid4().hex[:8]}"
        self.url = f"mqtt://{MQTT}?topic={self.topic}&client_id={self.client_id}"

    def publish(self, bodies: list[bytes]) -> None:
        from tests.integration.test_events_mqtt import publish

        publish(self.topic, bodies, ids=[f"ha-{i}" for i in range(len(bodies))])

    def acknowledged(self) -> int:
        """N when the session holds no unacknowledged message (connecting it would send
        them); checked with no scheduler connected."""
        from cadenza.triggers.events import EventTrigger
        from cadenza.triggers.events.mqtt import MqttConsumer

        resent: list[str] = []
        consumer = MqttConsumer(EventTrigger(self.url), "url_events",
                                lambda mid, raw: resent.append(mid))
        try:
            consumer.poll(1000)
        finally:
            consumer.close()
        return N - len(resent)

    def cleanup(self) -> None:
        from tests.integration.test_events_mqtt import forget_session

        forget_session(self.client_id)


@pytest.fixture(params=["kafka", "amqp", "mqtt"])
def broker(request: pytest.FixtureRequest):
    if request.param == "kafka":
        b = Kafka(request.getfixturevalue("kafka_bootstrap"))
    else:
        b = Amqp() if request.param == "amqp" else Mqtt()
    yield b
    b.cleanup()


def test_a_scheduler_killed_between_run_commit_and_ack_loses_and_doubles_nothing(
        broker, pg_url: str, tmp_path: Path):
    hold, marks = tmp_path / "hold", tmp_path / "marks"
    hold.mkdir()
    marks.mkdir()
    env = {**os.environ,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "CADENZA_HOME": str(tmp_path / "home"),
           "CADENZA_DATABASE_URL": pg_url,
           "CADENZA_TEST_EVENT_URL": broker.url,
           "CADENZA_TEST_SLOW_S": "2",
           "CADENZA_TEST_MARKS": str(marks),
           "CADENZA_TEST_HOLD_ACK": str(hold)}
    group = Schedulers(tmp_path, env)
    try:
        victim = group.start(TARGET)
        wait_for(lambda: (hold / f"prepared.{victim.pid}").exists(), timeout_s=90,
                 what="the victim's consumer to be ready")
        broker.publish([json.dumps({"n": n}).encode() for n in range(N)])
        wait_for(lambda: (hold / f"held.{victim.pid}").exists(), timeout_s=60,
                 what="the victim to commit a batch and stop before acknowledging it")
        store = open_store(pg_url)

        def mid_run() -> list[str]:
            out = []
            for r in store.list_runs(pipeline="url_events"):
                slow = store.get_task_instance(r.run_id, "slow_step")
                first = store.get_task_instance(r.run_id, "first_step")
                if slow and slow.state is TaskState.RUNNING and first.state is TaskState.SUCCESS:
                    out.append(r.run_id)
            return out

        mid = wait_for(mid_run, timeout_s=60, what="a run of the victim mid-task")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        held = {r.params["n"] for r in store.list_runs(pipeline="url_events")}
        assert held, "the victim committed runs before it died"
        committed = {store.get_run(r.run_id).params["n"] for r in store.list_runs(
            pipeline="url_events") if (ti := store.get_task_instance(r.run_id, "first_step"))
            and ti.state is TaskState.SUCCESS}
        if not isinstance(broker, Mqtt):  # (the MQTT check connects the session itself)
            # The victim acknowledged nothing: RabbitMQ requeues its deliveries once it has
            # seen the connection close, so wait for that rather than read at once.
            wait_for(lambda: broker.acknowledged() == 0, timeout_s=30,
                     what="every message to be unacknowledged after the kill")

        env.pop("CADENZA_TEST_HOLD_ACK")
        group.start(TARGET)

        def finished() -> bool:
            runs = store.list_runs(pipeline="url_events", limit=100)
            return len(runs) >= N and all(r.state.is_final for r in runs)

        try:
            wait_for(finished, timeout_s=180, every_s=0.25, what="every message's run")
        except AssertionError:
            print(group.logs()[-5000:])
            raise
        runs = store.list_runs(pipeline="url_events", limit=100)
        assert sorted(r.params["n"] for r in runs) == list(range(N)), group.logs()[-3000:]
        assert all(r.state is RunState.SUCCESS for r in runs), group.logs()[-3000:]
        assert scheduling_store(store).count_events("url_events") == N
        # The runs the victim was driving were taken over, not run again from the start.
        for run_id in mid:
            assert len(store.get_attempts(run_id, "first_step")) == 1
            attempts = store.get_attempts(run_id, "slow_step")
            assert [a.error.kind for a in attempts if a.error] == ["interrupted"]
        for n in committed:
            assert len((marks / f"first_step.{n}").read_text().splitlines()) == 1
    finally:
        group.stop()
    assert broker.acknowledged() == N
