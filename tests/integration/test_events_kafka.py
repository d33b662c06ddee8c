"""Kafka event triggers against a real Kafka-compatible broker (Tansu, tests/fixtures/
brokers.py) with confluent-kafka (SPEC §9): one run per message with its JSON as parameters,
offsets committed only after the run is committed, no second run when a message comes
again, invalid messages committed and recorded, and an unreachable broker named with the
pipeline and the fix."""

from __future__ import annotations

import json
import uuid

import pytest

from cadenza.core.errors import ConfigError
from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.events import EventTrigger, handle_message, list_events
from cadenza.triggers.loop import Scheduler
from tests.fixtures.ports import refusing_port
from tests.fixtures.waiting import wait_for
from tests.integration.test_events import poll_until, runs_of
from tests.pipelines.sched_events import event_pipeline


def produce(bootstrap: str, topic: str, bodies: list[bytes], *, partitions: int = 1) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for i, body in enumerate(bodies):
        producer.produce(topic, body, partition=i % partitions)
    assert producer.flush(30) == 0, "messages not delivered to the broker"


def committed(bootstrap: str, topic: str, group: str, partitions: int = 1) -> list[int]:
    """The group's committed offset of each partition (-1001: none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str, partitions: int = 1) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cadenza.test.watermarks"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)]
    finally:
        c.close()


@pytest.fixture
def topic() -> str:
    return f"cadenza.test.{uuid.uuid4().hex[:10]}"


def kafka_url(bootstrap: str, topic: str, **extra: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"topic": topic, "session_timeout_ms": "6000",
                                             **extra}.items())
    return f"kafka://{bootstrap}?{query}"


def test_kafka_message_makes_one_run_and_the_offset_is_committed_after_it(
        cadenza_env, kafka_bootstrap, topic):
    url = kafka_url(kafka_bootstrap, topic, partitions="2")
    pipe = event_pipeline(url, "kafka_runs")
    sched = Scheduler([pipe], executor="inline")
    sched.open_consumers()  # topic and group exist; messages from now on make runs
    assert committed(kafka_bootstrap, topic, "cadenza.kafka_runs", 2) == [0, 0]
    produce(kafka_bootstrap, topic, [json.dumps({"n": n, "label": f"k{n}"}).encode()
                                     for n in range(4)], partitions=2)
    poll_until(sched, 4)
    sched.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "kafka_runs")
    assert [r.params for r in runs] == [{"n": n, "label": f"k{n}"} for n in range(4)]
    assert all(r.state is RunState.SUCCESS and r.trigger == "event" for r in runs)
    store = open_store(cadenza_env.database_url)
    out = store.get_task_instance(runs[0].run_id, "echo").output.value
    assert out["trigger"]["source"] == f"kafka://{kafka_bootstrap}?topic={topic}"
    events = list_events(pipeline="kafka_runs")
    assert sorted(e.message_id for e in events) == sorted(
        f"{topic}:{p}:{o}" for p in (0, 1) for o in (0, 1))
    assert committed(kafka_bootstrap, topic, "cadenza.kafka_runs", 2) == [2, 2]
    assert sched.poll_events(500) == 0  # committed: nothing comes back
    sched.close()


def test_kafka_new_group_starts_at_the_end_and_start_all_reads_the_history(
        cadenza_env, kafka_bootstrap, topic):
    produce(kafka_bootstrap, topic, [b'{"n": 100}'])  # before any trigger: history
    new = Scheduler([event_pipeline(kafka_url(kafka_bootstrap, topic), "kafka_new")],
                    max_runs=0)
    everything = Scheduler([event_pipeline(kafka_url(kafka_bootstrap, topic, start="all"),
                                           "kafka_all")], max_runs=0)
    new.open_consumers()
    everything.open_consumers()
    produce(kafka_bootstrap, topic, [b'{"n": 101}'])
    poll_until(new, 1)
    poll_until(everything, 2)
    assert [r.params["n"] for r in runs_of(cadenza_env, "kafka_new")] == [101]
    assert [r.params["n"] for r in runs_of(cadenza_env, "kafka_all")] == [100, 101]
    new.close()
    everything.close()


def test_kafka_invalid_messages_make_no_run_are_committed_and_recorded(
        cadenza_env, kafka_bootstrap, topic):
    pipe = event_pipeline(kafka_url(kafka_bootstrap, topic), "kafka_invalid")
    sched = Scheduler([pipe], max_runs=0)
    sched.open_consumers()
    produce(kafka_bootstrap, topic, [b'{"n": "lots"}', b"{nope", b"[1]"])
    poll_until(sched, 3)
    assert open_store(cadenza_env.database_url).list_runs(pipeline="kafka_invalid") == []
    events = sorted(list_events(pipeline="kafka_invalid"), key=lambda e: e.message_id)
    assert [e.status for e in events] == ["invalid"] * 3
    assert "lots" in events[0].error and "not JSON" in events[1].error
    assert "must be an object" in events[2].error
    assert events[1].payload == {"raw": "{nope"}
    assert committed(kafka_bootstrap, topic, "cadenza.kafka_invalid") == [3]
    sched.close()


def test_kafka_redelivery_after_a_crash_between_commit_and_offset_makes_no_second_run(
        cadenza_env, kafka_bootstrap, topic):
    from cadenza.triggers.events.kafka import KafkaConsumer

    url = kafka_url(kafka_bootstrap, topic)
    pipe = event_pipeline(url, "kafka_redeliver")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    outcomes = []

    def crash_after_commit(message_id, raw):
        outcomes.append(handle_message(pipe, trigger, message_id, raw, sched=sched))
        if len(outcomes) == 2:
            raise RuntimeError("killed between commit and offset commit")

    dying = KafkaConsumer(trigger, pipe.name, crash_after_commit)
    dying.prepare()
    produce(kafka_bootstrap, topic, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    with pytest.raises(RuntimeError, match="between commit and offset"):
        wait_for(lambda: dying.poll(500), timeout_s=30, every_s=0)
    # The first message's offset was committed, the second's (its run committed) was not.
    assert committed(kafka_bootstrap, topic, "cadenza.kafka_redeliver") == [1]
    dying.close()  # leaves the group: the next member is given the partition at once
    survivor = KafkaConsumer(trigger, pipe.name, lambda mid, raw: outcomes.append(
        handle_message(pipe, trigger, mid, raw, sched=sched)))

    def drained() -> bool:
        survivor.poll(500)
        return len(outcomes) >= 4

    wait_for(drained, timeout_s=60, every_s=0, what="the messages to come again")
    assert survivor.poll(500) == 0
    assert [o.created for o in outcomes] == [True, True, False, True]
    assert outcomes[2].event.run_id == outcomes[1].event.run_id
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="kafka_redeliver")
    assert sorted(r.run_id for r in runs) == sorted(
        o.event.run_id for o in outcomes if o.created)
    assert sched.count_events("kafka_redeliver") == 3
    assert committed(kafka_bootstrap, topic, "cadenza.kafka_redeliver") == [3]
    survivor.close()


def test_kafka_unreachable_broker_names_the_trigger_the_pipeline_and_the_fix():
    from cadenza.triggers.events.kafka import KafkaConsumer

    with refusing_port() as port:
        trigger = EventTrigger(f"kafka://127.0.0.1:{port}?topic=ml.training")
        consumer = KafkaConsumer(trigger, "retrain", lambda mid, raw: None)
        with pytest.raises(ConfigError) as info:
            consumer.prepare()
    text = str(info.value)
    assert f"kafka://127.0.0.1:{port}?topic=ml.training" in text
    assert "pipeline 'retrain'" in text and "Fix: start the broker" in text
    consumer.close()


def test_kafka_scheduler_once_runs_what_was_produced_since_the_group_last_read(
        cadenza_env, kafka_bootstrap, topic):
    url = kafka_url(kafka_bootstrap, topic)
    first = Scheduler([event_pipeline(url, "kafka_once")], max_runs=0)
    first.open_consumers()  # the group starts here
    first.close()
    produce(kafka_bootstrap, topic, [b'{"n": 1}', b'{"n": 2}'])
    # `cadenza scheduler --once`: join the group, take what is there, drive the runs.
    once = Scheduler([event_pipeline(url, "kafka_once")], executor="inline")
    once.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "kafka_once")
    assert [r.params["n"] for r in runs] == [1, 2]
    assert all(r.state is RunState.SUCCESS for r in runs)
    once.close()
    assert committed(kafka_bootstrap, topic, "cadenza.kafka_once") == [2]
