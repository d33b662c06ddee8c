"""MQTT event triggers against the real Mosquitto on 127.0.0.1:1883 (SPEC §9): QoS 1 with a
persistent session, one run per message with its JSON as parameters, acknowledged only after
the run is committed, no second run when a message comes again (deduplicated on its
message_id user property, or on topic and payload when it has none), invalid messages
acknowledged and recorded, one session holder among several consumers with the others
standing by, and an unreachable broker named with the pipeline and the fix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cadenza.core.errors import ConfigError
from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.events import EventTrigger, handle_message, list_events
from cadenza.triggers.loop import Scheduler
from tests.fixtures.brokers import MQTT, require_mqtt
from tests.fixtures.waiting import wait_for
from tests.integration.test_events import poll_until, runs_of
from tests.pipelines.sched_events import event_pipeline


def publish(topic: str, bodies: list[bytes], *, ids: list[str | None] | None = None) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    host, port = MQTT.rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, int(port))
    client.loop_start()
    try:
        for body, mid in zip(bodies, ids or [None] * len(bodies), strict=True):
            props = None
            if mid is not None:
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = ("message_id", mid)
            client.publish(topic, body, qos=1, properties=props).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(client_id: str) -> None:
    """End the broker's session of `client_id` and clear its retained presence message."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = MQTT.rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.connect(host, int(port), clean_start=True)  # session expiry 0: gone on disconnect
    client.loop_start()
    try:
        client.publish(f"cadenza/sessions/{client_id}", b"", qos=1,
                       retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def topic() -> Iterator[str]:
    """A fresh topic; the session its trigger (mqtt_url) makes is ended afterwards."""
    require_mqtt()
    name = f"cadenza/test/{uuid.uuid4().hex[:10]}"
    yield name
    forget_session(client_id_of(name))


def client_id_of(topic: str) -> str:
    return f"cadenza-{topic.rsplit('/', 1)[1]}"


def mqtt_url(topic: str, **extra: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"topic": topic, "client_id": client_id_of(topic),
                                             **extra}.items())
    return f"mqtt://{MQTT}?{query}"


def drain(consumer, count: int, timeout_s: float = 30) -> None:
    seen = 0

    def more() -> bool:
        nonlocal seen
        seen += consumer.poll(200)
        return seen >= count

    wait_for(more, timeout_s=timeout_s, every_s=0)


def test_mqtt_message_makes_one_run_and_is_acknowledged_after_it(cadenza_env, topic):
    url = mqtt_url(topic)
    pipe = event_pipeline(url, "mqtt_runs")
    sched = Scheduler([pipe], executor="inline")
    sched.open_consumers()  # the session and its subscription exist from here on
    publish(topic, [f'{{"n": {n}, "label": "q{n}"}}'.encode() for n in range(3)],
            ids=[f"reading-{n}" for n in range(3)])
    poll_until(sched, 3)
    sched.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "mqtt_runs")
    assert [r.params for r in runs] == [{"n": n, "label": f"q{n}"} for n in range(3)]
    assert all(r.state is RunState.SUCCESS and r.trigger == "event" for r in runs)
    store = open_store(cadenza_env.database_url)
    out = store.get_task_instance(runs[0].run_id, "echo").output.value
    assert out["trigger"]["source"] == EventTrigger(url).source
    assert sorted(e.message_id for e in list_events(pipeline="mqtt_runs")) == [
        "reading-0", "reading-1", "reading-2"]
    sched.close()
    # The same session again: an unacknowledged message would be sent now. None is.
    again = Scheduler([pipe], max_runs=0)
    assert again.poll_events(500) == 0
    again.close()


def test_mqtt_messages_wait_in_the_session_while_no_scheduler_is_connected(
        cadenza_env, topic):
    url = mqtt_url(topic)
    pipe = event_pipeline(url, "mqtt_offline")
    first = Scheduler([pipe], max_runs=0)
    first.open_consumers()
    first.close()  # the session stays, subscribed, with nobody connected
    publish(topic, [b'{"n": 1}', b'{"n": 2}'])
    later = Scheduler([pipe], max_runs=0)
    poll_until(later, 2)
    assert [r.params["n"] for r in runs_of(cadenza_env, "mqtt_offline")] == [1, 2]
    later.close()


def test_mqtt_invalid_messages_make_no_run_are_acknowledged_and_recorded(cadenza_env, topic):
    url = mqtt_url(topic)
    pipe = event_pipeline(url, "mqtt_invalid")
    sched = Scheduler([pipe], max_runs=0)
    sched.open_consumers()
    publish(topic, [b'{"n": "some"}', b"{oops", b'"n"'])
    poll_until(sched, 3)
    assert open_store(cadenza_env.database_url).list_runs(pipeline="mqtt_invalid") == []
    events = sorted(list_events(pipeline="mqtt_invalid"), key=lambda e: e.payload.get("raw", ""))
    assert sorted(e.status for e in events) == ["invalid"] * 3
    errors = " ".join(e.error for e in events)
    assert "some" in errors and "not JSON" in errors and "must be an object" in errors
    sched.close()
    again = Scheduler([pipe], max_runs=0)
    assert again.poll_events(500) == 0
    again.close()


def test_mqtt_redelivery_after_a_crash_between_commit_and_ack_makes_no_second_run(
        cadenza_env, topic):
    from cadenza.triggers.events.mqtt import MqttConsumer

    url = mqtt_url(topic)
    pipe = event_pipeline(url, "mqtt_redeliver")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    outcomes = []
    crashed: set[str] = set()

    def handler(message_id, raw):
        outcomes.append(handle_message(pipe, trigger, message_id, raw, sched=sched))
        if message_id not in crashed:  # each message: committed, then "killed" once
            crashed.add(message_id)
            raise RuntimeError("killed between commit and ack")

    consumer = MqttConsumer(trigger, pipe.name, handler)
    consumer.prepare()
    publish(topic, [b'{"n": 1}', b'{"n": 2}'], ids=["r-1", None])

    def each_came_again() -> bool:
        try:
            consumer.poll(200)  # nothing yet, or messages: a first delivery raises
        except RuntimeError as exc:
            assert "between commit and ack" in str(exc)
        return len(outcomes) >= 4

    wait_for(each_came_again, timeout_s=30, every_s=0)
    by_id: dict[str, list] = {}
    for o in outcomes:
        by_id.setdefault(o.event.message_id, []).append(o)
    assert len(by_id) == 2
    ids = sorted(by_id)
    assert ids[0] == "r-1" and ids[1].startswith("sha256:")
    for first, again in by_id.values():  # sent again after the reconnect: deduplicated
        assert (first.created, again.created) == (True, False)
        assert first.event.run_id == again.event.run_id
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="mqtt_redeliver")
    assert len(runs) == 2 and sched.count_events("mqtt_redeliver") == 2
    assert consumer.poll(500) == 0
    consumer.close()


def test_mqtt_one_consumer_holds_the_session_and_another_takes_it_when_it_leaves(
        cadenza_env, topic):
    from cadenza.triggers.events.mqtt import MqttConsumer

    url = mqtt_url(topic)
    pipe = event_pipeline(url, "mqtt_standby")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def handler(who):
        def handle(mid, raw):
            seen[who].append(handle_message(pipe, trigger, mid, raw, sched=sched).event.run_id)
        return handle

    a = MqttConsumer(trigger, pipe.name, handler("a"), consumer="a")
    b = MqttConsumer(trigger, pipe.name, handler("b"), consumer="b")
    a.prepare()
    b.prepare()  # takes the session over from a
    wait_for(lambda: a.poll(100) == 0 and a.standby, timeout_s=15, every_s=0)
    publish(topic, [b'{"n": 1}', b'{"n": 2}'], ids=["s-1", "s-2"])
    drain(b, 2)
    assert a.poll(300) == 0 and seen["a"] == [] and a.standby
    b.close()  # says the session is free: a connects it
    wait_for(lambda: a.poll(200) == 0 and a.session is not None, timeout_s=15, every_s=0)
    publish(topic, [b'{"n": 3}'], ids=["s-3"])
    drain(a, 1)
    assert len(seen["b"]) == 2 and len(seen["a"]) == 1
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="mqtt_standby")
    assert sorted(r.params["n"] for r in runs) == [1, 2, 3]
    a.close()


def test_mqtt_unreachable_broker_names_the_trigger_the_pipeline_and_the_fix():
    pytest.importorskip("paho.mqtt.client", reason="pip install 'cadenza[mqtt]'")
    import socket

    from cadenza.triggers.events.mqtt import MqttConsumer

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    trigger = EventTrigger(f"mqtt://127.0.0.1:{port}?topic=plant/retrain")
    consumer = MqttConsumer(trigger, "retraining", lambda mid, raw: None)
    with pytest.raises(ConfigError) as info:
        consumer.prepare()
    text = str(info.value)
    assert text.startswith(f"pipeline 'retraining': EventTrigger mqtt://127.0.0.1:{port}"
                           "?topic=plant%2Fretrain: cannot use the mqtt broker")
    assert "ConnectionRefusedError" in text and "Fix: start the broker" in text
    consumer.close()


def test_mqtt_a_holder_that_dies_is_replaced_by_a_standby_which_gets_its_unacked_messages(
        cadenza_env, topic):
    from cadenza.triggers.events.mqtt import MqttConsumer

    url = mqtt_url(topic)
    pipe = event_pipeline(url, "mqtt_will")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    outcomes: dict[str, list] = {"a": [], "b": []}

    def die_after_commit(mid, raw):
        outcomes["a"].append(handle_message(pipe, trigger, mid, raw, sched=sched))
        a.session.socket().close()  # as kill -9 does: no DISCONNECT, no PUBACK

    b = MqttConsumer(trigger, pipe.name, lambda mid, raw: outcomes["b"].append(
        handle_message(pipe, trigger, mid, raw, sched=sched)), consumer="b")
    a = MqttConsumer(trigger, pipe.name, die_after_commit, consumer="a")
    b.prepare()
    a.prepare()  # takes the session over: b stands by
    wait_for(lambda: b.poll(100) == 0 and b.standby, timeout_s=15, every_s=0)
    publish(topic, [b'{"n": 7}'], ids=["w-7"])
    wait_for(lambda: a.poll(200) or outcomes["a"], timeout_s=15, every_s=0)
    # The broker publishes a's will ("gone") a second after the connection died; b takes the
    # session and is sent the message a never acknowledged.
    wait_for(lambda: b.poll(200) or outcomes["b"], timeout_s=30, every_s=0,
             what="the standby to take the session and get the message again")
    assert [o.created for o in outcomes["a"]] == [True]
    assert [o.created for o in outcomes["b"]] == [False]
    assert outcomes["b"][0].event.run_id == outcomes["a"][0].event.run_id
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="mqtt_will")
    assert [r.params["n"] for r in runs] == [7]
    b.close()
