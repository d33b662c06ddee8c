"""Redis Streams: `redis://host:6379/0?stream=ml.training[&group=...][&start=new|all]`.

A consumer group per pipeline (default `cadenza.<pipeline>`); each scheduler is a consumer in
it. Entries idle (delivered, not acked) for `claim_idle_ms` are claimed with XAUTOCLAIM, so the
messages of a scheduler that died are processed by another. The message id is the entry id.
A stream entry carries its JSON in a field `data` (or `json`, `payload`, `params`); an entry
without one of those uses its fields as the parameters. `start=new` (the default) makes a new
group start at the end of the stream; `start=all` processes the stream's history.
The delivery contract's cases (1-4) are those of `messages.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from cadenza.triggers.events.messages import Handler, consumer_name
from cadenza.triggers.events.trigger import EventTrigger, missing_client, unreachable

log = logging.getLogger(__name__)


class RedisConsumer:
    """One pipeline's consumer of one Redis stream (see the module docstring).

    `poll(block_ms)` reads (and reclaims) up to `batch` entries, hands each to `handler(id,
    fields)` and acknowledges those the handler returned from; a handler that raises
    leaves its entry pending for redelivery.
    """

    def __init__(self, trigger: EventTrigger, pipeline: str, handler: Handler, *,
                 consumer: str | None = None, batch: int = 64,
                 claim_idle_ms: int = 30_000) -> None:
        try:
            import redis
        except ImportError:
            raise missing_client(trigger, pipeline, "redis") from None
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        p = trigger.parsed
        self.trigger = trigger
        self.pipeline = pipeline
        self.stream = p["stream"]
        self.group = p.get("group") or f"cadenza.{pipeline}"
        self.start_id = "0" if p.get("start") == "all" else "$"
        self.consumer = consumer or consumer_name()
        self.handler = handler
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self._claim_cursor = "0-0"
        self.client = redis.Redis(host=p["host"], port=p["port"], db=p["db"],
                                  username=p.get("username"), password=p.get("password"),
                                  ssl=p["scheme"] == "rediss", socket_timeout=None,
                                  socket_connect_timeout=5)
        self._ready = False

    def prepare(self) -> None:
        """Create the consumer group if missing (new messages from now on make runs)."""
        try:
            self._prepare()
        except self._errors as exc:
            raise unreachable(self.trigger, self.pipeline, exc) from None

    def _prepare(self) -> None:
        import redis

        if self._ready:
            return
        try:
            self.client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    def poll(self, block_ms: int = 1000) -> int:
        """Process what is there (waiting up to block_ms for new entries). Returns how many
        entries were handled."""
        try:
            return self._poll(block_ms)
        except self._errors as exc:
            raise unreachable(self.trigger, self.pipeline, exc) from None

    def _poll(self, block_ms: int) -> int:
        self._prepare()
        handled = 0
        # Entries a dead (or failed) consumer left unacknowledged for long enough.
        res: Any = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                     min_idle_time=self.claim_idle_ms,
                                     start_id=self._claim_cursor, count=self.batch)
        self._claim_cursor = res[0] if res and res[0] else "0-0"
        claimed = [(mid, fields) for mid, fields in (res[1] if res else []) if fields]
        handled += self._handle(claimed)
        got: Any = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                     count=self.batch,
                                     block=block_ms if block_ms > 0 and not handled else None)
        for _stream, entries in got or []:
            handled += self._handle(entries)
        return handled

    def _handle(self, entries: list[tuple[Any, Any]]) -> int:
        done = []
        try:
            for mid, fields in entries:
                message_id = mid.decode() if isinstance(mid, bytes) else str(mid)
                self.handler(message_id, fields)
                done.append(mid)
        finally:
            if done:  # only what was committed (case 2); the rest stays pending
                self.client.xack(self.stream, self.group, *done)
        return len(done)

    def close(self) -> None:
        self.client.close()
