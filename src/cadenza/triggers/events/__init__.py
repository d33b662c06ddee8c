"""Event triggers: one run per message of Redis, NATS, Kafka, RabbitMQ (AMQP) or MQTT.

What belongs here: `EventTrigger` (`trigger.py`: the URL of each transport), turning a
message into a run with its record (`messages.py`: the delivery contract, cases 1-4), and
one consumer per transport (`redis.py`, `nats.py`, `kafka.py`, `amqp.py`, `mqtt.py`), each
importing its client library only when a trigger of its kind is consumed. What does not:
the threads that run consumers (`loop.py`), creating/claiming runs in the store
(`store/scheduling.py`).

Every consumer has the same shape: `prepare()` (connect; create the group, durable
consumer, topic or queue it needs), `poll(block_ms) -> handled`, `close()`; it hands each
message to `handler(message_id, raw)` and acknowledges it only after the handler returned
(the run and the message's record are committed by then).
"""

from __future__ import annotations

from typing import Any

from cadenza.triggers.events.messages import (
    Handler,
    InvalidMessage,
    consumer_name,
    handle_message,
    list_events,
    params_from_fields,
    params_from_json,
)
from cadenza.triggers.events.trigger import EventTrigger

__all__ = [
    "EventTrigger",
    "Handler",
    "InvalidMessage",
    "consumer_name",
    "handle_message",
    "list_events",
    "make_consumer",
    "params_from_fields",
    "params_from_json",
]


def make_consumer(trigger: EventTrigger, pipeline: str, handler: Handler, **options: Any) -> Any:
    """The consumer for `trigger`'s kind. Options: `consumer` (this consumer's name in its
    group), `batch`, `claim_idle_ms` (Redis only)."""
    kind = trigger.kind
    if kind != "redis":
        options.pop("claim_idle_ms", None)
    if kind == "redis":
        from cadenza.triggers.events.redis import RedisConsumer

        return RedisConsumer(trigger, pipeline, handler, **options)
    if kind == "nats":
        from cadenza.triggers.events.nats import NatsConsumer

        options.pop("consumer", None)
        return NatsConsumer(trigger, pipeline, handler, **options)
    if kind == "kafka":
        from cadenza.triggers.events.kafka import KafkaConsumer

        return KafkaConsumer(trigger, pipeline, handler, **options)
    if kind == "amqp":
        from cadenza.triggers.events.amqp import AmqpConsumer

        return AmqpConsumer(trigger, pipeline, handler, **options)
    from cadenza.triggers.events.mqtt import MqttConsumer

    return MqttConsumer(trigger, pipeline, handler, **options)
