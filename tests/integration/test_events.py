"""Event triggers against the real Redis (127.0.0.1:6379) and NATS JetStream
(127.0.0.1:4222) (SPEC §4): one run per message with its JSON validated as parameters,
acknowledged only after the run is committed, no second run on redelivery, invalid
messages acknowledged and recorded with the validation error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from cadenza.triggers.events import (
    EventTrigger,
    InvalidMessage,
    handle_message,
    list_events,
    params_from_fields,
    params_from_json,
)
from cadenza.triggers.loop import Scheduler
from cadenza.triggers.metrics import sample
from tests.fixtures.waiting import wait_for
from tests.pipelines.sched_events import event_pipeline

REDIS = os.environ.get("CADENZA_TEST_REDIS", "127.0.0.1:6379")
NATS = os.environ.get("CADENZA_TEST_NATS", "127.0.0.1:4222")


def _redis_client():
    redis = pytest.importorskip("redis", reason="pip install 'cadenza[triggers]'")
    host, port = REDIS.split(":")
    client = redis.Redis(host=host, port=int(port), socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS} is not reachable: {exc}")
    return client


async def _nats_js():
    import nats

    nc = await nats.connect(f"nats://{NATS}", connect_timeout=2, max_reconnect_attempts=0,
                            allow_reconnect=False)
    return nc, nc.jetstream()


def _nats_available() -> None:
    pytest.importorskip("nats", reason="pip install 'cadenza[triggers]'")

    async def probe() -> None:
        nc, js = await _nats_js()
        await js.account_info()
        await nc.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        pytest.skip(f"NATS JetStream at {NATS} is not reachable: {exc}")


@pytest.fixture
def redis_stream() -> Iterator[tuple[str, object]]:
    """A fresh stream name and a client; the stream is deleted afterwards."""
    client = _redis_client()
    stream = f"cadenza.test.{uuid.uuid4().hex[:10]}"
    yield stream, client
    client.delete(stream)
    client.close()


@pytest.fixture
def nats_subject() -> Iterator[str]:
    """A fresh subject; its stream is deleted afterwards."""
    _nats_available()
    subject = f"cadenza.test.{uuid.uuid4().hex[:10]}"
    yield subject

    async def cleanup() -> None:
        nc, js = await _nats_js()
        with contextlib.suppress(Exception):  # nothing was created
            await js.delete_stream(subject.replace(".", "_"))
        await nc.close()

    asyncio.run(cleanup())


def publish_nats(subject: str, bodies: list[bytes]) -> None:
    async def send() -> None:
        nc, js = await _nats_js()
        for body in bodies:
            await js.publish(subject, body)
        await nc.close()

    asyncio.run(send())


def poll_until(sched: Scheduler, count: int, timeout_s: float = 30) -> None:
    seen = 0

    def more() -> bool:
        nonlocal seen
        seen += sched.poll_events(200)
        return seen >= count

    wait_for(more, timeout_s=timeout_s, every_s=0)


def runs_of(settings, name: str):
    return sorted(open_store(settings.database_url).list_runs(pipeline=name, limit=1000),
                  key=lambda r: r.params["n"])


# -- pure ------------------------------------------------------------------------------------


def test_message_bodies_become_parameters() -> None:
    assert params_from_json(b'{"n": 3}') == {"n": 3}
    assert params_from_fields({b"data": b'{"n": 3}'}) == {"n": 3}
    assert params_from_fields({b"n": b"3", b"label": b"x"}) == {"n": "3", "label": "x"}
    with pytest.raises(InvalidMessage, match="not JSON"):
        params_from_json(b"{nope")
    with pytest.raises(InvalidMessage, match="must be an object"):
        params_from_json(b"[1, 2]")


def test_event_trigger_urls_are_checked_and_keep_no_credentials() -> None:
    t = EventTrigger("redis://:secret@cache:6380/2?stream=ml.training")
    assert t.kind == "redis" and t.source == "redis://cache:6380/2?stream=ml.training"
    assert EventTrigger("nats://bus:4222?subject=ml.training").source == (
        "nats://bus:4222?subject=ml.training")
    from cadenza.core.errors import CadenzaError

    with pytest.raises(CadenzaError, match="names no stream"):
        EventTrigger("redis://localhost:6379/0")
    with pytest.raises(CadenzaError, match="unknown scheme"):
        EventTrigger("zmq://localhost:5555?topic=x")


# -- Redis -----------------------------------------------------------------------------------


def test_redis_message_makes_one_run_with_its_json_as_parameters(cadenza_env, redis_stream):
    stream, client = redis_stream
    pipe = event_pipeline(f"redis://{REDIS}/0?stream={stream}", "redis_runs")
    sched = Scheduler([pipe], executor="inline")
    created = {"pipeline": "redis_runs", "trigger": "event"}
    before = sample("cadenza_runs_created_total", created)
    sched.open_consumers()  # the group exists before anything is published
    for n in range(3):
        client.xadd(stream, {"data": json.dumps({"n": n, "label": f"m{n}"})})
    poll_until(sched, 3)
    sched.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "redis_runs")
    assert [r.params for r in runs] == [{"n": n, "label": f"m{n}"} for n in range(3)]
    assert all(r.state is RunState.SUCCESS and r.trigger == "event" for r in runs)
    store = open_store(cadenza_env.database_url)
    out = store.get_task_instance(runs[0].run_id, "echo").output.value
    assert out["trigger"]["kind"] == "event"
    assert out["trigger"]["source"] == f"redis://{REDIS}/0?stream={stream}"
    events = list_events(pipeline="redis_runs")
    assert sorted(e.run_id for e in events) == sorted(r.run_id for r in runs)
    assert client.xpending(stream, "cadenza.redis_runs")["pending"] == 0
    assert sample("cadenza_runs_created_total", created) == before + 3
    sched.close()


def test_redis_invalid_message_makes_no_run_is_acked_and_recorded(cadenza_env, redis_stream):
    stream, client = redis_stream
    pipe = event_pipeline(f"redis://{REDIS}/0?stream={stream}", "redis_invalid")
    sched = Scheduler([pipe], max_runs=0)
    invalid = {"pipeline": "redis_invalid", "status": "invalid"}
    before = sample("cadenza_events_total", invalid)
    sched.open_consumers()
    client.xadd(stream, {"data": json.dumps({"n": "three"})})
    client.xadd(stream, {"data": "{not json"})
    client.xadd(stream, {"data": json.dumps({"n": 1, "colour": "red"})})
    poll_until(sched, 3)
    assert open_store(cadenza_env.database_url).list_runs(pipeline="redis_invalid") == []
    events = sorted(list_events(pipeline="redis_invalid"), key=lambda e: e.message_id)
    assert [e.status for e in events] == ["invalid"] * 3
    assert "'n'" in events[0].error and "three" in events[0].error
    assert "not JSON" in events[1].error
    assert "unknown parameter 'colour'" in events[2].error
    assert events[0].payload == {"data": '{"n": "three"}'}
    assert client.xpending(stream, "cadenza.redis_invalid")["pending"] == 0
    assert sample("cadenza_events_total", invalid) == before + 3
    sched.close()


def test_redis_redelivery_after_a_crash_between_commit_and_ack_makes_no_second_run(
        cadenza_env, redis_stream):
    from cadenza.triggers.events.redis import RedisConsumer

    stream, client = redis_stream
    url = f"redis://{REDIS}/0?stream={stream}"
    pipe = event_pipeline(url, "redis_redeliver")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    committed: list[str] = []

    def crash_after_commit(message_id, raw):
        outcome = handle_message(pipe, trigger, message_id, raw, sched=sched)
        committed.append(outcome.event.run_id)
        raise RuntimeError("killed between commit and ack")

    dying = RedisConsumer(trigger, pipe.name, crash_after_commit, consumer="dying")
    dying.prepare()
    client.xadd(stream, {"data": json.dumps({"n": 7})})
    with pytest.raises(RuntimeError, match="between commit and ack"):
        wait_for(lambda: dying.poll(200), timeout_s=10, every_s=0)
    assert client.xpending(stream, "cadenza.redis_redeliver")["pending"] == 1
    outcomes = []
    survivor = RedisConsumer(trigger, pipe.name, lambda mid, raw: outcomes.append(
        handle_message(pipe, trigger, mid, raw, sched=sched)), consumer="survivor",
        claim_idle_ms=0)
    assert survivor.poll(0) == 1
    assert [o.created for o in outcomes] == [False]
    assert outcomes[0].event.run_id == committed[0]
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="redis_redeliver")
    assert [r.run_id for r in runs] == committed
    assert client.xpending(stream, "cadenza.redis_redeliver")["pending"] == 0
    assert sched.count_events("redis_redeliver") == 1
    dying.close()
    survivor.close()


def test_redis_event_run_starts_from_the_running_scheduler(cadenza_env, redis_stream):
    stream, client = redis_stream
    pipe = event_pipeline(f"redis://{REDIS}/0?stream={stream}", "redis_live")
    sched = Scheduler([pipe], executor="threads", event_block_ms=100)
    thread = threading.Thread(target=sched.run_forever, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sched._consumers, timeout_s=10)
        client.xadd(stream, {"data": json.dumps({"n": 42})})
        store = open_store(cadenza_env.database_url)
        wait_for(lambda: [r for r in store.list_runs(pipeline="redis_live")
                          if r.state is RunState.SUCCESS], timeout_s=30)
    finally:
        sched.shutdown()
        thread.join(30)
    (run,) = open_store(cadenza_env.database_url).list_runs(pipeline="redis_live")
    assert run.params == {"n": 42, "label": "none"}


# -- NATS ------------------------------------------------------------------------------------


def test_nats_message_makes_one_run_with_its_json_as_parameters(cadenza_env, nats_subject):
    pipe = event_pipeline(f"nats://{NATS}?subject={nats_subject}", "nats_runs")
    sched = Scheduler([pipe], executor="inline")
    sched.open_consumers()
    publish_nats(nats_subject, [json.dumps({"n": n}).encode() for n in range(3)])
    poll_until(sched, 3)
    sched.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "nats_runs")
    assert [r.params for r in runs] == [{"n": n, "label": "none"} for n in range(3)]
    assert all(r.state is RunState.SUCCESS and r.trigger == "event" for r in runs)
    ids = sorted(e.message_id for e in list_events(pipeline="nats_runs"))
    stream = nats_subject.replace(".", "_")
    assert ids == [f"{stream}:{i}" for i in (1, 2, 3)]
    assert sched.poll_events(200) == 0  # all acknowledged: nothing comes back
    sched.close()


def test_nats_invalid_message_makes_no_run_is_acked_and_recorded(cadenza_env, nats_subject):
    pipe = event_pipeline(f"nats://{NATS}?subject={nats_subject}&ack_wait=1", "nats_invalid")
    sched = Scheduler([pipe], max_runs=0)
    sched.open_consumers()
    publish_nats(nats_subject, [b'{"n": "many"}', b"\xff\xfe"])
    poll_until(sched, 2)
    assert open_store(cadenza_env.database_url).list_runs(pipeline="nats_invalid") == []
    events = sorted(list_events(pipeline="nats_invalid"), key=lambda e: e.message_id)
    assert [e.status for e in events] == ["invalid", "invalid"]
    assert "many" in events[0].error and "not JSON" in events[1].error
    # Both were acknowledged: the consumer holds none unacked, and redelivered none.
    stream, durable = nats_subject.replace(".", "_"), "cadenza_nats_invalid"
    info = wait_for(lambda: (i := nats_consumer_info(stream, durable)).num_ack_pending == 0
                    and i, what="the server to see both acks")
    assert info.num_redelivered == 0 and info.num_pending == 0
    sched.close()


def nats_consumer_info(stream: str, durable: str):
    async def ask():
        nc, js = await _nats_js()
        try:
            return await js.consumer_info(stream, durable)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_nats_redelivery_after_a_failure_before_ack_makes_no_second_run(
        cadenza_env, nats_subject):
    from cadenza.triggers.events.nats import NatsConsumer

    url = f"nats://{NATS}?subject={nats_subject}&ack_wait=1"
    pipe = event_pipeline(url, "nats_redeliver")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    outcomes = []
    fail = [True]

    def handler(message_id, raw):
        outcomes.append(handle_message(pipe, trigger, message_id, raw, sched=sched))
        if fail[0]:
            fail[0] = False
            raise RuntimeError("killed between commit and ack")

    consumer = NatsConsumer(trigger, pipe.name, handler)
    consumer.prepare()
    publish_nats(nats_subject, [b'{"n": 5}'])
    with pytest.raises(RuntimeError, match="between commit and ack"):
        wait_for(lambda: consumer.poll(200), timeout_s=10, every_s=0)
    wait_for(lambda: consumer.poll(300), timeout_s=15, every_s=0)  # redelivered
    assert [o.created for o in outcomes] == [True, False]
    assert outcomes[0].event.run_id == outcomes[1].event.run_id
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="nats_redeliver")
    assert [r.run_id for r in runs] == [outcomes[0].event.run_id]
    consumer.close()


def test_unreachable_redis_and_nats_name_the_trigger_the_pipeline_and_the_fix() -> None:
    import socket

    from cadenza.core.errors import ConfigError
    from cadenza.triggers.events.nats import NatsConsumer
    from cadenza.triggers.events.redis import RedisConsumer

    pytest.importorskip("redis", reason="pip install 'cadenza[triggers]'")
    pytest.importorskip("nats", reason="pip install 'cadenza[triggers]'")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis_trigger = EventTrigger(f"redis://127.0.0.1:{port}/0?stream=orders")
    nats_trigger = EventTrigger(f"nats://127.0.0.1:{port}?subject=orders")
    for consumer, source in (
            (RedisConsumer(redis_trigger, "ingest", lambda mid, raw: None),
             f"redis://127.0.0.1:{port}/0?stream=orders"),
            # nats-py retries a first connection forever: it must give up and say so.
            (NatsConsumer(nats_trigger, "ingest", lambda mid, raw: None),
             f"nats://127.0.0.1:{port}?subject=orders")):
        with pytest.raises(ConfigError) as info:
            consumer.prepare()
        text = str(info.value)
        assert text.startswith(f"pipeline 'ingest': EventTrigger {source}: cannot use the")
        assert "Fix: start the broker" in text
        consumer.close()
