"""Event triggers: one run per message from Redis Streams or NATS JetStream.

What belongs here: `EventTrigger` (URL parsing), turning a message into run parameters,
recording it with its run in one transaction, and the two consumers. What does not: the
threads that run consumers (`loop.py`), creating/claiming runs in the store
(`store/scheduling.py`).

Delivery contract (numbered; the code labels each case):
  1. A message's JSON object is validated as the pipeline's parameters (pydantic, the same
     validation as `pipeline.run(**params)`).
  2. Valid -> the run (queued) and the message's record are committed in ONE transaction;
     only then is the message acknowledged. A crash before the commit loses nothing (the
     message is redelivered); a crash between commit and ack makes a redelivery, which
     finds the record (UNIQUE (pipeline, source, message_id)) and creates no second run.
  3. Invalid (not JSON, not an object, wrong parameters) -> no run; the message is recorded
     with the validation error (`cadenza events list`) and acknowledged, so it is not
     redelivered forever.
  4. The store is unreachable -> nothing is acknowledged; the consumer backs off and the
     message is redelivered later.

Redis: `redis://host:6379/0?stream=ml.training[&group=...][&start=new|all]`. A consumer
group per pipeline (default `cadenza.<pipeline>`); each scheduler is a consumer in it.
Entries idle (delivered, not acked) for `claim_idle_ms` are claimed with XAUTOCLAIM, so the
messages of a scheduler that died are processed by another. The message id is the entry id.
A stream entry carries its JSON in a field `data` (or `json`, `payload`, `params`); an entry
without one of those uses its fields as the parameters.

NATS: `nats://host:4222?subject=ml.training[&stream=...][&durable=...][&ack_wait=30]`. A
JetStream durable pull consumer per pipeline (default `cadenza_<pipeline>`), shared by all
schedulers; the stream holding the subject is found (or created, named after the subject).
The message id is `<stream>:<stream sequence>`, the same on every redelivery.

`start=new` (the default) makes a new consumer group start at the end of the stream: only
messages published after it exists make runs; `start=all` processes the stream's history.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cadenza.core.errors import DefinitionError, ParameterError
from cadenza.graph.plan import Plan

log = logging.getLogger(__name__)

_JSON_FIELDS = ("data", "json", "payload", "params")


class InvalidMessage(ValueError):
    """A message that cannot become run parameters (case 3)."""


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Start one run per message of a Redis stream or a NATS subject.

    Example:
        @pipeline(triggers=[EventTrigger("redis://localhost:6379/0?stream=ml.training")])
        def training(n: int = 1000): ...
    """

    url: str

    def __post_init__(self) -> None:
        self.parsed  # noqa: B018 - validate at definition time

    @property
    def parsed(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        scheme = parts.scheme.lower()
        if scheme in ("redis", "rediss"):
            if not query.get("stream"):
                raise DefinitionError.single(f"EventTrigger {self.url!r} names no stream",
                                             hint="redis://host:6379/0?stream=ml.training")
            return {"kind": "redis", "scheme": scheme, "host": parts.hostname or "127.0.0.1",
                    "port": parts.port or 6379, "db": int((parts.path or "/0").strip("/") or 0),
                    "password": parts.password, "username": parts.username, **query}
        if scheme in ("nats", "tls"):
            if not query.get("subject"):
                raise DefinitionError.single(f"EventTrigger {self.url!r} names no subject",
                                             hint="nats://host:4222?subject=ml.training")
            return {"kind": "nats", "host": parts.hostname or "127.0.0.1",
                    "port": parts.port or 4222, "scheme": scheme, **query}
        raise DefinitionError.single(
            f"EventTrigger {self.url!r}: unknown scheme '{parts.scheme}'",
            hint="use redis://host:6379/0?stream=NAME or nats://host:4222?subject=NAME")

    @property
    def kind(self) -> str:
        return str(self.parsed["kind"])

    @property
    def source(self) -> str:
        """The canonical source (no credentials): part of every message's dedupe key."""
        p = self.parsed
        if p["kind"] == "redis":
            return (f"redis://{p['host']}:{p['port']}/{p['db']}?"
                    + urlencode({"stream": p["stream"]}))
        return f"nats://{p['host']}:{p['port']}?" + urlencode({"subject": p["subject"]})


# -- messages -> parameters (pure) -------------------------------------------------------------


def params_from_json(data: bytes | str) -> dict[str, Any]:
    """The parameters in a JSON message body; InvalidMessage when it is not a JSON object."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"message is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidMessage(f"message JSON must be an object of parameters, got "
                             f"{type(value).__name__}")
    return value


def params_from_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """The parameters of a Redis stream entry (see the module docstring)."""
    decoded = {(k.decode() if isinstance(k, bytes) else str(k)):
               (v.decode() if isinstance(v, bytes) else v) for k, v in fields.items()}
    for name in _JSON_FIELDS:
        if name in decoded and len(decoded) == 1:
            return params_from_json(decoded[name])
    return decoded


def _payload_of(raw: Any) -> dict[str, Any]:
    """What to keep of a message in its record (bounded)."""
    if isinstance(raw, Mapping):
        out = {(k.decode() if isinstance(k, bytes) else str(k)):
               (v.decode(errors="replace") if isinstance(v, bytes) else v)
               for k, v in raw.items()}
        text = json.dumps(out, default=str)
        return out if len(text) <= 16384 else {"truncated": text[:16384]}
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        value = json.loads(text)
        if isinstance(value, dict) and len(text) <= 16384:
            return value
    except ValueError:
        pass
    return {"raw": text[:16384]}


def handle_message(pipeline: Plan, trigger: EventTrigger, message_id: str, raw: Any, *,
                   sched: Any) -> Any:
    """Record one message and create its run (cases 1-3). Returns the EventOutcome.

    Raises StoreError when the store cannot be written (case 4: do not acknowledge).
    """
    from cadenza.core.scheduling import NewRun, TriggerEventRecord
    from cadenza.engine.api import new_run

    payload = _payload_of(raw)
    base = TriggerEventRecord(pipeline=pipeline.name, source=trigger.source,
                              message_id=message_id, status="run", payload=payload)
    try:  # 1
        params = params_from_fields(raw) if isinstance(raw, Mapping) else params_from_json(raw)
        run, tis = new_run(pipeline, params, trigger="event", extra={"trigger": {
            "kind": "event", "source": trigger.source, "message_id": message_id}})
    except (InvalidMessage, ParameterError) as exc:  # 3
        error = str(exc) if isinstance(exc, InvalidMessage) else exc.message
        log.warning("pipeline %s: message %s from %s is invalid: %s", pipeline.name,
                    message_id, trigger.source, error)
        from dataclasses import replace

        return sched.record_event(replace(base, status="invalid", error=error))
    return sched.record_event(base, NewRun(run=run, task_instances=tis))  # 2


# -- consumers ---------------------------------------------------------------------------------


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


Handler = Callable[[str, Any], Any]


class RedisConsumer:
    """One pipeline's consumer of one Redis stream (see the module docstring).

    `poll(block_ms)` reads (and reclaims) up to `batch` entries, hands each to `handler(id,
    fields)` and acknowledges those the handler returned from; a handler that raises
    leaves its entry pending for redelivery.
    """

    def __init__(self, trigger: EventTrigger, pipeline: str, handler: Handler, *,
                 consumer: str | None = None, batch: int = 64,
                 claim_idle_ms: int = 30_000) -> None:
        import redis

        p = trigger.parsed
        self.trigger = trigger
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
        self.prepare()
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

        p = trigger.parsed
        self.trigger = trigger
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
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        if self._sub is not None:
            return
        async def on_error(exc: Exception) -> None:
            log.debug("nats %s: %s", self.server, exc)

        self._nc = await nats.connect(self.server, connect_timeout=5, max_reconnect_attempts=-1,
                                      error_cb=on_error)
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


def make_consumer(trigger: EventTrigger, pipeline: str, handler: Handler, **options: Any) -> Any:
    """The consumer for `trigger`'s kind (Redis or NATS)."""
    if trigger.kind == "redis":
        return RedisConsumer(trigger, pipeline, handler, **options)
    options.pop("claim_idle_ms", None)
    options.pop("consumer", None)
    return NatsConsumer(trigger, pipeline, handler, **options)


def list_events(*, pipeline: str | None = None, status: str | None = None, limit: int = 50,
                settings: Any = None) -> list[Any]:
    """Processed messages, newest first, with the run each made or its validation error:
    what `cadenza events list [--pipeline P] [--status invalid]` prints."""
    from cadenza.core.settings import get_settings
    from cadenza.store import open_store
    from cadenza.store.scheduling import scheduling_store

    s = settings or get_settings()
    return scheduling_store(open_store(s.database_url)).list_events(
        pipeline=pipeline, status=status, limit=limit)
