"""Kafka: `kafka://host:9092[,host2:9092]?topic=ml.training[&group=...][&start=new|all]`.

A consumer group per pipeline (default `cadenza.<pipeline>`; `group=` names another), each
scheduler a member of it, so the topic's partitions are shared among the schedulers and a
dead scheduler's partitions move to the others after `session_timeout_ms` (default 10 s).
Offsets are committed by hand, never automatically: after a batch, each partition's offset
is committed past the messages whose runs were committed (case 2 of `messages.py`); a
scheduler that dies before that commit leaves those messages to be delivered again, and the
redelivery finds their records and makes no second run. The message id is
`<topic>:<partition>:<offset>`, the same on every redelivery.

The topic is created (`partitions=`, default 1) when it does not exist. A group that has no
committed offset yet starts, with `start=new` (the default), at the end of each partition as
it is when the trigger is first prepared (those offsets are committed then, so messages
produced from that moment on make runs even before the group's first rebalance ends);
`start=all` starts at the beginning.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from cadenza.triggers.events.messages import Handler, consumer_name
from cadenza.triggers.events.trigger import EventTrigger, missing_client, unreachable

log = logging.getLogger(__name__)

_TIMEOUT_S = 10.0  # metadata, topic creation and offset look-ups at prepare time
_FIRST_FETCH_S = 2.0  # the first poll after joining waits up to this for a fetch (see poll)


class KafkaConsumer:
    """One pipeline's member of its Kafka consumer group (see the module docstring).

    `poll(block_ms)` fetches up to `batch` messages, hands each to `handler(message_id,
    value)` in partition order and commits, per partition, the offset after the last one
    the handler returned from; when the handler raises, the partitions are rewound to their
    first unhandled message (fetched again by the next poll) and the error propagates.
    """

    def __init__(self, trigger: EventTrigger, pipeline: str, handler: Handler, *,
                 consumer: str | None = None, batch: int = 64) -> None:
        try:
            import confluent_kafka
        except ImportError:
            raise missing_client(trigger, pipeline, "confluent_kafka") from None
        self._ck = confluent_kafka
        p = trigger.parsed
        self.trigger = trigger
        self.pipeline = pipeline
        self.topic = str(p["topic"])
        self.group = p.get("group") or f"cadenza.{pipeline}"
        self.start_all = p.get("start") == "all"
        self.partitions = int(p.get("partitions", 1))
        self.bootstrap = str(p["bootstrap"])
        self.handler = handler
        self.batch = batch
        self._errors: list[str] = []
        self.config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "client.id": consumer or consumer_name(),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if self.start_all else "latest",
            "session.timeout.ms": int(p.get("session_timeout_ms", 10_000)),
            "heartbeat.interval.ms": max(int(p.get("session_timeout_ms", 10_000)) // 5, 500),
            # How long the broker may hold a fetch when there is nothing new. Apache Kafka
            # answers as soon as a message comes; Tansu holds the fetch to this limit, so
            # librdkafka's 500 ms made event -> first task ~240 ms there (bench/scheduler.py:
            # median 235 ms at 500, 50 ms at 100). An idle consumer pays <= 10 fetches/s.
            "fetch.wait.max.ms": 100,
            "error_cb": self._on_error,
            "logger": log,
        }
        self.client: Any = None
        self._joined = False
        self._fetched = False
        self._early: list[Any] = []  # messages that came while prepare() waited to join

    def _on_error(self, err: Any) -> None:
        # librdkafka reports broker trouble here, not from poll(): remembered so poll can
        # name it (every broker down = the trigger cannot work until one is back).
        log.debug("kafka %s: %s", self.bootstrap, err)
        if err.code() == self._ck.KafkaError._ALL_BROKERS_DOWN or err.fatal():
            self._errors.append(err.str())

    def prepare(self) -> None:
        """Create the topic if missing, fix a new group's start, join the group."""
        if self.client is not None:
            return
        ck = self._ck
        try:
            self._ensure_topic()
            client = ck.Consumer(self.config)
            try:
                if not self.start_all:
                    self._start_new_group_at_end(client)
                client.subscribe([self.topic], on_assign=self._on_assign)
            except BaseException:
                client.close()
                raise
        except ck.KafkaException as exc:
            raise unreachable(self.trigger, self.pipeline, exc.args[0].str()) from None
        self.client = client
        # Join the group now (a few seconds: the group coordinator's rebalance), so that a
        # scheduler's first poll -- `cadenza scheduler --once` makes only one -- can read.
        deadline = time.monotonic() + 3 * self.config["session.timeout.ms"] / 1000
        while not self._joined and time.monotonic() < deadline:
            msg = client.poll(0.1)
            if msg is not None:
                self._early.append(msg)
        if not self._joined:
            log.warning("pipeline %s: the Kafka group %s has not assigned this scheduler its "
                        "partitions yet; polling goes on", self.pipeline, self.group)

    def _on_assign(self, _client: Any, _partitions: Any) -> None:
        self._joined = True  # also with no partition (more schedulers than partitions)

    def _ensure_topic(self) -> None:
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap,
                             "logger": log})  # type: ignore[dict-item]
        meta = admin.list_topics(timeout=_TIMEOUT_S)
        if self.topic in meta.topics and meta.topics[self.topic].error is None:
            return
        futures = admin.create_topics([NewTopic(self.topic, num_partitions=self.partitions,
                                                replication_factor=1)],
                                      operation_timeout=_TIMEOUT_S, request_timeout=_TIMEOUT_S)
        try:
            futures[self.topic].result(_TIMEOUT_S)
            log.info("pipeline %s: created Kafka topic %s (%d partitions)", self.pipeline,
                     self.topic, self.partitions)
        except self._ck.KafkaException as exc:
            if exc.args[0].code() != self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise  # another scheduler creating it at the same time is fine

    def _start_new_group_at_end(self, client: Any) -> None:
        ck = self._ck
        meta = client.list_topics(self.topic, timeout=_TIMEOUT_S)
        parts = [ck.TopicPartition(self.topic, n) for n in sorted(meta.topics[self.topic]
                                                                   .partitions)]
        committed = client.committed(parts, timeout=_TIMEOUT_S)
        fresh = [tp.partition for tp in committed if tp.offset < 0]
        if not fresh:
            return
        ends = [ck.TopicPartition(self.topic, n,
                                  client.get_watermark_offsets(
                                      ck.TopicPartition(self.topic, n), timeout=_TIMEOUT_S)[1])
                for n in fresh]
        client.commit(offsets=ends, asynchronous=False)

    def poll(self, block_ms: int = 1000) -> int:
        """Handle what is there (waiting up to block_ms for it). Returns how many messages
        were handled."""
        self.prepare()
        ck = self._ck
        # consume(n, timeout) waits for n messages or the timeout: wait for the first one
        # only (poll returns when it comes), then take what else is there at once. Right
        # after joining, nothing has been fetched yet: the first poll waits for one fetch.
        wait_s = max(block_ms, 0) / 1000
        if not self._fetched and self._joined:
            wait_s = max(wait_s, _FIRST_FETCH_S)
            self._fetched = True
        if self._early:
            msgs, self._early = self._early, []
            msgs += self.client.consume(max(self.batch - len(msgs), 1), 0)
        else:
            first = self.client.poll(wait_s)
            msgs = [] if first is None else [first, *self.client.consume(self.batch - 1, 0)]
        if self._errors:
            error, self._errors = self._errors[-1], []
            if not msgs:
                raise unreachable(self.trigger, self.pipeline, error)
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for msg in msgs:
            err = msg.error()
            if err is None:
                by_partition[msg.partition()].append(msg)
            elif err.code() != ck.KafkaError._PARTITION_EOF:
                raise unreachable(self.trigger, self.pipeline, err.str())
        done: dict[int, int] = {}  # partition -> offset to commit (next to read)
        handled = 0
        try:
            for partition, batch in by_partition.items():
                for msg in batch:
                    self.handler(f"{self.topic}:{partition}:{msg.offset()}", msg.value())
                    done[partition] = msg.offset() + 1
                    handled += 1
        except BaseException:
            # Unhandled messages are fetched again: each partition goes back to its first.
            for partition, batch in by_partition.items():
                first = done.get(partition, batch[0].offset())
                if first <= batch[-1].offset():
                    self.client.seek(ck.TopicPartition(self.topic, partition, first))
            raise
        finally:
            if done:  # only what was committed (case 2); the rest is delivered again
                self._ack(done)
        return handled

    def _ack(self, done: dict[int, int]) -> None:
        ck = self._ck
        try:
            self.client.commit(offsets=[ck.TopicPartition(self.topic, p, o)
                                        for p, o in done.items()], asynchronous=False)
        except ck.KafkaException as exc:
            # The group rebalanced meanwhile: the new owner gets these messages again and
            # finds their records (no second run).
            log.warning("pipeline %s: committing Kafka offsets %s failed (%s); the messages "
                        "will be delivered again and deduplicated", self.pipeline, done,
                        exc.args[0].str())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()  # leaves the group at once: its partitions move now
            self.client = None
