"""RabbitMQ (AMQP 0-9-1): `amqp://user:password@host:5672/vhost?queue=ml.training`.

The queue is shared by every scheduler (competing consumers: each message goes to one of
them); it is declared durable when it does not exist (an existing queue is used as it is),
and bound to `exchange=` with `routing_key=` (default: the queue's name) when the URL names
an exchange. Each consumer takes up to `prefetch` (default 64) unacknowledged messages at a
time; a message is acknowledged (basic.ack) only after its run and record are committed
(case 2 of `messages.py`). A scheduler that dies, or whose connection drops, before that
leaves the message unacknowledged, and RabbitMQ delivers it again to a live consumer.

The message id, which dedupes those redeliveries, is the message's `message_id` property:
publishers should set it (`pika.BasicProperties(message_id=...)`, any unique string). A
message without one is identified by a SHA-256 of its body, headers, timestamp, correlation
id and routing key (`sha256:...`), so two messages that are identical in all of those count
as one; a warning says so once per consumer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from cadenza.triggers.events.messages import Handler, consumer_name
from cadenza.triggers.events.trigger import EventTrigger, missing_client, unreachable

log = logging.getLogger(__name__)


def message_id_of(method: Any, props: Any, body: bytes) -> str:
    """The publisher's message_id, else a digest of what identifies the message."""
    if props is not None and props.message_id:
        return str(props.message_id)
    h = hashlib.sha256(body)
    h.update(json.dumps([
        sorted((str(k), str(v)) for k, v in ((props.headers or {}) if props else {}).items()),
        getattr(props, "timestamp", None), getattr(props, "correlation_id", None),
        method.exchange, method.routing_key], default=str).encode())
    return "sha256:" + h.hexdigest()


class AmqpConsumer:
    """One pipeline's consumer of one RabbitMQ queue (see the module docstring).

    Single-threaded (pika's BlockingConnection): use it from one thread. `poll(block_ms)`
    waits up to block_ms for deliveries, hands each to `handler(message_id, body)` in order
    and acknowledges those the handler returned from; a message whose handler raised is
    rejected back to the queue (redelivered) and the error propagates.
    """

    def __init__(self, trigger: EventTrigger, pipeline: str, handler: Handler, *,
                 consumer: str | None = None, batch: int = 64) -> None:
        try:
            import pika
        except ImportError:
            raise missing_client(trigger, pipeline, "pika") from None
        self._pika = pika
        p = trigger.parsed
        self.trigger = trigger
        self.pipeline = pipeline
        self.queue = str(p["queue"])
        self.exchange = p.get("exchange")
        self.routing_key = p.get("routing_key") or self.queue
        self.prefetch = int(p.get("prefetch", batch))
        self.tag = f"cadenza:{pipeline}:{consumer or consumer_name()}"
        self.handler = handler
        ssl_options = None
        if p["scheme"] == "amqps":
            import ssl

            ssl_options = pika.SSLOptions(ssl.create_default_context(), p["host"])
        self.params = pika.ConnectionParameters(
            host=p["host"], port=p["port"], virtual_host=p["vhost"],
            credentials=pika.PlainCredentials(p["username"], p["password"]),
            ssl_options=ssl_options, connection_attempts=1, socket_timeout=5,
            blocked_connection_timeout=30, client_properties={"connection_name": self.tag})
        self.connection: Any = None
        self.channel: Any = None
        self._pending: list[tuple[Any, Any, bytes]] = []
        self._warned_no_id = False

    def _on_message(self, _channel: Any, method: Any, props: Any, body: bytes) -> None:
        self._pending.append((method, props, body))

    def prepare(self) -> None:
        """Connect, declare (and bind) the queue, start consuming it."""
        if self.channel is not None and self.channel.is_open:
            return
        self._reset()
        pika = self._pika
        try:
            self.connection = pika.BlockingConnection(self.params)
            channel = self.connection.channel()
            try:
                channel.queue_declare(queue=self.queue, durable=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 406:  # PRECONDITION_FAILED: exists with other options
                    raise
                channel = self.connection.channel()
                channel.queue_declare(queue=self.queue, passive=True)
            if self.exchange:
                channel.queue_bind(queue=self.queue, exchange=self.exchange,
                                   routing_key=self.routing_key)
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.basic_consume(queue=self.queue, on_message_callback=self._on_message,
                                  auto_ack=False, consumer_tag=self.tag)
        except pika.exceptions.AMQPError as exc:
            self._reset()
            raise unreachable(self.trigger, self.pipeline, _describe(exc)) from None
        self.channel = channel

    def poll(self, block_ms: int = 1000) -> int:
        """Handle what was delivered (waiting up to block_ms for it). Returns how many
        messages were handled."""
        self.prepare()
        pika = self._pika
        try:
            self.connection.process_data_events(
                time_limit=0 if self._pending else max(block_ms, 0) / 1000)
        except pika.exceptions.AMQPError as exc:
            self._reset()  # unacknowledged messages go back to the queue
            raise unreachable(self.trigger, self.pipeline, _describe(exc)) from None
        done: list[int] = []
        try:
            while self._pending:
                method, props, body = self._pending[0]
                message_id = message_id_of(method, props, body)
                if message_id.startswith("sha256:") and not self._warned_no_id:
                    self._warned_no_id = True
                    log.warning("pipeline %s: messages on queue %s carry no message_id; they "
                                "are told apart by their content (publish with "
                                "BasicProperties(message_id=...))", self.pipeline, self.queue)
                try:
                    self.handler(message_id, body)
                except BaseException:
                    self._reject(method.delivery_tag)  # case 4: delivered again later
                    raise
                self._pending.pop(0)
                done.append(method.delivery_tag)
        finally:
            if done:  # only what was committed (case 2)
                self._ack(done)
        return len(done)

    def _reject(self, tag: int) -> None:
        self._pending.pop(0)
        try:
            self.channel.basic_nack(delivery_tag=tag, requeue=True)
        except self._pika.exceptions.AMQPError as exc:
            log.debug("nack of %s failed (%s); the broker requeues it with the channel",
                      tag, exc)

    def _ack(self, tags: list[int]) -> None:
        try:
            for tag in tags:
                self.channel.basic_ack(delivery_tag=tag)
        except self._pika.exceptions.AMQPError as exc:
            # The connection dropped: RabbitMQ requeues these; their redelivery finds the
            # records and makes no second run.
            self._reset()
            log.warning("pipeline %s: acknowledging on queue %s failed (%s); the messages "
                        "will be delivered again and deduplicated", self.pipeline, self.queue,
                        _describe(exc))

    def _reset(self) -> None:
        self._pending.clear()
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except self._pika.exceptions.AMQPError as exc:
                log.debug("closing the AMQP connection: %s", exc)

    def close(self) -> None:
        self._reset()


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
