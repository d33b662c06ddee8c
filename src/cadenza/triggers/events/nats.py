"""NATS JetStream: `nats://host:4222?subject=ml.training[&stream=...][&durable=...][&ack_wait=30]`.

A JetStream durable pull consumer per pipeline (default `cadenza_<pipeline>`), shared by all
schedulers; the stream holding the subject is found (or created, named after the subject).
The message id is `<stream>:<stream sequence>`, the same on every redelivery. `start=new`
(the default) delivers only messages published after the consumer exists; `start=all` the
stream's history. The delivery contract's cases (1-4) are those of `messages.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from cadenza.triggers.events.messages import Handler
from cadenza.triggers.events.trigger import EventTrigger, missing_client, unreachable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class NatsConsumer:
    """One pipeline's durable pull consumer of a NATS JetStream subject.

    Runs its own asyncio loop; use it from one thread. `poll(block_ms)` fetches up to
    `batch` messages, hands each to `handler(message_id, data)` and acknowledges (ack_sync,
    so the server has it) those the handler returned from; a message whose handler raised
    is nak'ed for redelivery.
    """

    def __init__(self, trigger: EventTrigger, pipeline: str, handler: Handler, *,
                 batch: int = 64) -> None:
        import asyncio

        try:
            import nats  # noqa: F401 - checked here, used when connecting
        except ImportError:
            raise missing_client(trigger, pipeline, "nats") from None
        p = trigger.parsed
        self.trigger = trigger
        self.pipeline = pipeline
        self.subject = p["subject"]
        self.stream_name = p.get("stream")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in pipeline)
        self.durable = p.get("durable") or f"cadenza_{safe}"
        self.ack_wait_s = float(p.get("ack_wait", 30))
        self.deliver_all = p.get("start") == "all"
        self.server = f"nats://{p['host']}:{p['port']}"
        self.handler = handler
        self.batch = batch
        self.loop = asyncio.new_event_loop()
        self._nc: Any = None
        self._sub: Any = None

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _connect(self) -> None:
        import asyncio

        import nats
        import nats.errors

        if self._sub is not None:
            return
        async def on_error(exc: Exception) -> None:
            log.debug("nats %s: %s", self.server, exc)

        # Reconnects forever once connected; the first connection gets CONNECT_TIMEOUT_S
        # (nats-py would retry it forever too, and prepare() would never return).
        try:
            self._nc = await asyncio.wait_for(nats.connect(
                self.server, connect_timeout=5, max_reconnect_attempts=-1, error_cb=on_error),
                CONNECT_TIMEOUT_S)
            await self._subscribe()
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            nc, self._nc = self._nc, None
            if nc is not None:
                await nc.close()
            raise unreachable(self.trigger, self.pipeline,
                              str(exc) or f"no answer within {CONNECT_TIMEOUT_S:g} s"
                              ) from None

    async def _subscribe(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        js = self._nc.jetstream()
        stream = self.stream_name
        if stream is None:
            try:
                stream = await js.find_stream_name_by_subject(self.subject)
            except NotFoundError:
                stream = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.subject)
                await js.add_stream(name=stream, subjects=[self.subject])
        self.stream_name = stream
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s, filter_subject=self.subject,
            deliver_policy=DeliverPolicy.ALL if self.deliver_all else DeliverPolicy.NEW,
            max_ack_pending=10_000)
        self._sub = await js.pull_subscribe(self.subject, durable=self.durable, stream=stream,
                                            config=config)

    def prepare(self) -> None:
        """Connect and create the stream and durable consumer if missing."""
        self._run(self._connect())

    async def _poll(self, block_ms: int) -> int:
        import nats.errors

        await self._connect()
        try:
            msgs = await self._sub.fetch(self.batch, timeout=max(block_ms, 1) / 1000)
        except (nats.errors.TimeoutError, TimeoutError):
            return 0
        handled = 0
        for msg in msgs:
            message_id = f"{msg.metadata.stream}:{msg.metadata.sequence.stream}"
            try:
                self.handler(message_id, msg.data)
            except BaseException:
                await msg.nak()  # case 4: redelivered later
                raise
            await msg.ack_sync(timeout=5)  # case 2: only after the commit
            handled += 1
        return handled

    def poll(self, block_ms: int = 1000) -> int:
        return int(self._run(self._poll(block_ms)))

    def close(self) -> None:
        async def _close() -> None:
            if self._nc is not None:
                await self._nc.close()

        try:
            self._run(_close())
        finally:
            self.loop.close()
