"""RabbitMQ (AMQP) event triggers against the real RabbitMQ on 127.0.0.1:5672 (SPEC §9): one
run per message with its JSON as parameters, acknowledged only after the run is committed,
no second run when a message comes again (deduplicated on its message_id, or on its content
when it has none), invalid messages acknowledged and recorded, and an unreachable broker
named with the pipeline and the fix."""

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
from tests.fixtures.brokers import AMQP, require_amqp
from tests.fixtures.ports import refusing_port
from tests.fixtures.waiting import wait_for
from tests.integration.test_events import poll_until, runs_of
from tests.pipelines.sched_events import event_pipeline


def _connect():
    import pika

    host, port = AMQP.rsplit(":", 1)
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=host, port=int(port), credentials=pika.PlainCredentials("guest", "guest")))


def publish(queue: str, bodies: list[bytes], *, ids: list[str | None] | None = None) -> None:
    import pika

    conn = _connect()
    channel = conn.channel()
    channel.queue_declare(queue=queue, durable=True)
    for body, mid in zip(bodies, ids or [None] * len(bodies), strict=True):
        channel.basic_publish("", queue, body, properties=pika.BasicProperties(
            message_id=mid, delivery_mode=2))
    conn.close()


def queue_depth(queue: str) -> int:
    """Messages ready in the queue (unacknowledged ones of a closed consumer come back)."""
    conn = _connect()
    try:
        return int(conn.channel().queue_declare(queue=queue, passive=True)
                   .method.message_count)
    finally:
        conn.close()


@pytest.fixture
def queue() -> Iterator[str]:
    require_amqp()
    name = f"cadenza.test.{uuid.uuid4().hex[:10]}"
    yield name
    conn = _connect()
    conn.channel().queue_delete(queue=name)
    conn.close()


def amqp_url(queue: str, **extra: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"queue": queue, **extra}.items())
    return f"amqp://guest:guest@{AMQP}/?{query}"


def test_amqp_message_makes_one_run_and_is_acknowledged_after_it(cadenza_env, queue):
    pipe = event_pipeline(amqp_url(queue), "amqp_runs")
    sched = Scheduler([pipe], executor="inline")
    sched.open_consumers()  # declares the queue
    publish(queue, [f'{{"n": {n}, "label": "a{n}"}}'.encode() for n in range(3)],
            ids=[f"order-{n}" for n in range(3)])
    poll_until(sched, 3)
    sched.run_once(timeout_s=60)
    runs = runs_of(cadenza_env, "amqp_runs")
    assert [r.params for r in runs] == [{"n": n, "label": f"a{n}"} for n in range(3)]
    assert all(r.state is RunState.SUCCESS and r.trigger == "event" for r in runs)
    store = open_store(cadenza_env.database_url)
    out = store.get_task_instance(runs[0].run_id, "echo").output.value
    assert out["trigger"]["source"] == f"amqp://{AMQP}/%2F?queue={queue}"
    assert out["trigger"]["message_id"] == "order-0"
    assert sorted(e.message_id for e in list_events(pipeline="amqp_runs")) == [
        "order-0", "order-1", "order-2"]
    sched.close()  # anything not acknowledged would go back to the queue now
    assert queue_depth(queue) == 0


def test_amqp_invalid_messages_make_no_run_are_acknowledged_and_recorded(cadenza_env, queue):
    pipe = event_pipeline(amqp_url(queue, prefetch="2"), "amqp_invalid")
    sched = Scheduler([pipe], max_runs=0)
    sched.open_consumers()
    publish(queue, [b'{"n": "five"}', b"\xff\xfe", b'{"n": 1, "colour": "red"}'],
            ids=["bad-1", "bad-2", "bad-3"])
    poll_until(sched, 3)
    assert open_store(cadenza_env.database_url).list_runs(pipeline="amqp_invalid") == []
    events = sorted(list_events(pipeline="amqp_invalid"), key=lambda e: e.message_id)
    assert [e.status for e in events] == ["invalid"] * 3
    assert "five" in events[0].error and "not JSON" in events[1].error
    assert "unknown parameter 'colour'" in events[2].error
    sched.close()
    assert queue_depth(queue) == 0


def test_amqp_redelivery_after_a_crash_between_commit_and_ack_makes_no_second_run(
        cadenza_env, queue):
    from cadenza.triggers.events.amqp import AmqpConsumer

    url = amqp_url(queue)
    pipe = event_pipeline(url, "amqp_redeliver")
    sched = scheduling_store(open_store(cadenza_env.database_url))
    trigger = EventTrigger(url)
    outcomes = []

    def crash_after_commit(message_id, raw):
        outcomes.append(handle_message(pipe, trigger, message_id, raw, sched=sched))
        raise RuntimeError("killed between commit and ack")

    dying = AmqpConsumer(trigger, pipe.name, crash_after_commit)
    dying.prepare()
    # One message with a message_id, one without (told apart by its content).
    publish(queue, [b'{"n": 1}', b'{"n": 2}'], ids=["m-1", None])

    def crashed_on_both() -> bool:
        try:
            dying.poll(200)  # nothing yet, or a message: its handler raises
        except RuntimeError as exc:
            assert "between commit and ack" in str(exc)
        return len({o.event.message_id for o in outcomes}) == 2

    wait_for(crashed_on_both, timeout_s=15, every_s=0)
    dying.close()  # the connection drops: both are in the queue again
    first = [o for o in outcomes if o.created]
    assert len(first) == 2 and len(outcomes) >= 2  # a nack'ed one may have come back
    wait_for(lambda: queue_depth(queue) == 2, timeout_s=30, what="both to be requeued")
    outcomes.clear()
    survivor = AmqpConsumer(trigger, pipe.name, lambda mid, raw: outcomes.append(
        handle_message(pipe, trigger, mid, raw, sched=sched)))
    seen = 0

    def both() -> bool:
        nonlocal seen
        seen += survivor.poll(200)
        return seen >= 2

    wait_for(both, timeout_s=30, every_s=0)
    assert [o.created for o in outcomes] == [False, False]
    assert {o.event.run_id for o in outcomes} == {o.event.run_id for o in first}
    ids = sorted(o.event.message_id for o in first)
    assert ids[0] == "m-1" and ids[1].startswith("sha256:")
    runs = open_store(cadenza_env.database_url).list_runs(pipeline="amqp_redeliver")
    assert len(runs) == 2 and sched.count_events("amqp_redeliver") == 2
    survivor.close()
    assert queue_depth(queue) == 0


def test_amqp_unreachable_broker_names_the_trigger_the_pipeline_and_the_fix():
    pytest.importorskip("pika", reason="pip install 'cadenza[amqp]'")
    from cadenza.triggers.events.amqp import AmqpConsumer

    with refusing_port() as port:
        trigger = EventTrigger(f"amqp://guest:guest@127.0.0.1:{port}/?queue=retrain")
        consumer = AmqpConsumer(trigger, "retraining", lambda mid, raw: None)
        with pytest.raises(ConfigError) as info:
            consumer.poll(0)
    text = str(info.value)
    assert text.startswith(f"pipeline 'retraining': EventTrigger amqp://127.0.0.1:{port}/%2F"
                           "?queue=retrain: cannot use the amqp broker")
    assert "Fix: start the broker" in text
    consumer.close()
