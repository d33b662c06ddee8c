"""MQTT (Mosquitto and other MQTT 5 brokers): `mqtt://[user:password@]host:1883?topic=T`.

QoS 1 with a persistent session: the pipeline's consumer connects as `client_id` (default
`cadenza-<pipeline>`) with clean start off and a session that outlives the connection for
7 days, so messages published while no scheduler is connected wait in the broker, and a
message the consumer received but did not acknowledge is sent again when the session is
next connected. A message is acknowledged (PUBACK) only after its run and record are
committed (case 2 of `messages.py`); when the handler fails (case 4) the consumer
disconnects and reconnects later, which makes the broker send the unacknowledged messages
again. Retained messages are not delivered on subscribe (only messages from now on).

One connection holds a session at a time (a second connection with the same client id
takes it over), so among several schedulers one holds the session and the others stand by.
The holder keeps a retained `held <scheduler>` on `cadenza/sessions/<client id>`, refreshed
every HEARTBEAT_S, and leaves a will of `gone` there, which the broker publishes 1 s after
the holder's connection is lost without a DISCONNECT (kill -9, crash, network); `close()`
publishes `gone` itself. A scheduler starts by connecting the session (taking it over); one
that lost its connection watches that topic and connects the session again when it reads
`gone`, when the holder it names has not refreshed it for LEASE_S, or, when it names this
scheduler itself (a lost connection, not a takeover), after LOST_GRACE_S. The messages the
previous holder had not acknowledged are sent again then, and deduplicated.

The message id is the MQTT 5 user property `message_id` when the publisher sets one,
otherwise a SHA-256 of the topic and payload (`sha256:...`): two messages with the same topic
and payload and no message_id count as one (a warning says so once per consumer).
Mosquitto keeps at most `max_queued_messages` (default 1000) messages per session.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from cadenza.triggers.events.messages import Handler, consumer_name
from cadenza.triggers.events.trigger import EventTrigger, missing_client, unreachable

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
WILL_DELAY_S = 1
CONNECT_TIMEOUT_S = 10.0
GONE = b"gone"
HEARTBEAT_S = 10.0  # the holder republishes `held ...` this often
LEASE_S = 30.0  # a standby takes a session whose `held ...` is older than this
LOST_GRACE_S = 2.0  # time for a takeover's `held <other>` to arrive after a lost connection


def message_id_of(msg: Any) -> str:
    """The publisher's `message_id` user property, else a digest of topic and payload."""
    for key, value in getattr(getattr(msg, "properties", None), "UserProperty", None) or ():
        if key == "message_id" and value:
            return str(value)
    return "sha256:" + hashlib.sha256(msg.topic.encode() + b"\0" + msg.payload).hexdigest()


class MqttConsumer:
    """One pipeline's consumer of one MQTT topic filter (see the module docstring).

    Single-threaded (the paho client's loop is driven by `poll`): use it from one thread.
    `poll(block_ms)` waits up to block_ms for messages, hands each to `handler(message_id,
    payload)` and acknowledges those the handler returned from.
    """

    def __init__(self, trigger: EventTrigger, pipeline: str, handler: Handler, *,
                 consumer: str | None = None, batch: int = 64) -> None:
        try:
            import paho.mqtt.client  # noqa: F401 - checked here, used below
        except ImportError:
            raise missing_client(trigger, pipeline, "paho.mqtt") from None
        p = trigger.parsed
        self.trigger = trigger
        self.pipeline = pipeline
        self.topic = str(p["topic"])
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in pipeline)
        self.client_id = str(p.get("client_id") or f"cadenza-{safe}")
        self.presence_topic = f"cadenza/sessions/{self.client_id}"
        self.me = consumer or consumer_name()
        self.host, self.port = str(p["host"]), int(p["port"])
        self.tls = p["scheme"] == "mqtts"
        self.auth = (p.get("username"), p.get("password"))
        self.handler = handler
        self.batch = batch
        self.session: Any = None  # the client holding the session, when we hold it
        self.watch: Any = None  # a clean client reading the presence topic, when standing by
        self.standby = False
        self.presence: bytes | None = None
        self._presence_at = 0.0  # when the presence topic last said something (monotonic)
        self._lost_at = 0.0
        self._announced_at = 0.0
        self._pending: list[Any] = []
        self._warned_no_id = False

    # -- connections -----------------------------------------------------------------------

    def _client(self, client_id: str, *, persistent: bool) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, manual_ack=persistent)
        if self.auth[0]:
            client.username_pw_set(self.auth[0], self.auth[1])
        if self.tls:
            client.tls_set()
        client.enable_logger(log)
        return client

    def _connect(self, client: Any, *, persistent: bool, subscribe: str) -> None:
        """Connect `client` and subscribe it; raise the trigger's error when that fails."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions

        state: dict[str, Any] = {"subscribed": False, "error": None}

        def on_connect(c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                state["error"] = f"the broker refused the connection: {reason}"
                return
            # Messages from now on: retained ones are not delivered on subscribe.
            c.subscribe(subscribe, options=SubscribeOptions(qos=1, retainHandling=(
                2 if persistent else 0)))

        def on_subscribe(_c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
            failed = [r for r in reasons if r.is_failure]
            if failed:
                state["error"] = f"the broker refused the subscription to {subscribe}: " \
                                 f"{failed[0]}"
            else:
                state["subscribed"] = True

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        try:
            client.connect(self.host, self.port, keepalive=30, clean_start=not persistent,
                           properties=props)
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while not state["subscribed"] and state["error"] is None:
                if client.loop(0.1) != 0 and state["error"] is None:
                    state["error"] = "the connection was closed while connecting"
                if time.monotonic() > deadline:
                    state["error"] = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        except OSError as exc:
            state["error"] = f"{type(exc).__name__}: {exc}"
        if state["error"] is not None:
            _quietly_close(client)
            raise unreachable(self.trigger, self.pipeline, str(state["error"]))

    def _acquire(self) -> None:
        """Connect the session (taking it over if another connection holds it)."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = self._client(self.client_id, persistent=True)
        will = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        will.WillDelayInterval = WILL_DELAY_S  # a takeover in time suppresses it
        client.will_set(self.presence_topic, GONE, qos=1, retain=True, properties=will)
        client.on_message = lambda _c, _u, msg: self._pending.append(msg)
        self._pending.clear()
        self._connect(client, persistent=True, subscribe=self.topic)
        self.session = client
        self._announce()
        self.standby = False
        if self.watch is not None:
            _quietly_close(self.watch)
            self.watch = None
        log.info("pipeline %s: holding MQTT session %s for %s", self.pipeline, self.client_id,
                 self.topic)

    def _announce(self) -> None:
        self.session.publish(self.presence_topic, f"held {self.me}".encode(), qos=1,
                             retain=True)
        self._announced_at = time.monotonic()

    def _drop(self) -> None:
        """Leave the session without a will (it stays ours); unacknowledged messages come
        again when it is next connected."""
        client, self.session = self.session, None
        self._pending.clear()
        if client is not None:
            _quietly_close(client)

    def _stand_by(self, block_ms: int) -> bool:
        """Watch the presence topic for up to block_ms; True when the session is free."""
        if self.watch is None:
            def on_message(_c: Any, _u: Any, msg: Any) -> None:
                self.presence = bytes(msg.payload)
                self._presence_at = time.monotonic()

            watch = self._client(f"{self.client_id}.watch.{self.me}"[:200], persistent=False)
            watch.on_message = on_message
            self.presence = None
            self._connect(watch, persistent=False, subscribe=self.presence_topic)
            self.watch = watch
        if self.watch.loop(max(block_ms, 1) / 1000) != 0:
            _quietly_close(self.watch)
            self.watch = None
            return False
        now = time.monotonic()
        if self.presence == GONE:
            return True
        if self.presence is None or self.presence == f"held {self.me}".encode():
            return now - self._lost_at > LOST_GRACE_S
        return now - self._presence_at > LEASE_S

    def prepare(self) -> None:
        """Connect the session, unless another scheduler's connection holds it."""
        if self.session is None and not self.standby:
            self._acquire()

    # -- messages ----------------------------------------------------------------------------

    def poll(self, block_ms: int = 1000) -> int:
        """Handle what was delivered (waiting up to block_ms for it). Returns how many
        messages were handled."""
        if self.session is None:
            if self.standby and not self._stand_by(block_ms):
                return 0
            self._acquire()
        if self.session.loop(0 if self._pending else max(block_ms, 0) / 1000) != 0 \
                and not self._pending:
            # Taken over by another scheduler, or the broker went away: stand by, and
            # take the session again when the presence topic says it is free.
            self._drop()
            self.standby = True
            self._lost_at = time.monotonic()
            log.info("pipeline %s: lost MQTT session %s (taken over, or the broker went "
                     "away); standing by", self.pipeline, self.client_id)
            return 0
        if time.monotonic() - self._announced_at > HEARTBEAT_S:
            self._announce()
        done: list[Any] = []
        try:
            while self._pending and len(done) < self.batch:
                msg = self._pending[0]
                message_id = message_id_of(msg)
                if message_id.startswith("sha256:") and not self._warned_no_id:
                    self._warned_no_id = True
                    log.warning("pipeline %s: messages on %s carry no message_id user "
                                "property; they are told apart by topic and payload",
                                self.pipeline, self.topic)
                try:
                    self.handler(message_id, msg.payload)
                except BaseException:
                    self._drop_after(done)  # case 4: sent again on reconnect
                    done = []
                    raise
                self._pending.pop(0)
                done.append(msg)
        finally:
            if done:  # only what was committed (case 2)
                self._ack(done)
        return len(done)

    def _drop_after(self, done: list[Any]) -> None:
        if done:
            self._ack(done)
        self._drop()

    def _ack(self, msgs: list[Any]) -> None:
        session = self.session
        if session is None:
            return
        for msg in msgs:
            session.ack(msg.mid, msg.qos)
        session.loop_write()

    def close(self) -> None:
        if self.session is not None:
            info = self.session.publish(self.presence_topic, GONE, qos=1, retain=True)
            deadline = time.monotonic() + 5
            while not info.is_published() and time.monotonic() < deadline:
                if self.session.loop(0.05) != 0:
                    break
            try:
                _quietly_close(self.session)
            finally:
                self.session = None
        if self.watch is not None:
            _quietly_close(self.watch)
            self.watch = None


def _quietly_close(client: Any) -> None:
    """DISCONNECT (normal: no will, the session stays) and close the socket."""
    try:
        client.disconnect()  # written at once (the loop is not threaded)
    except OSError as exc:
        log.debug("closing an MQTT connection: %s", exc)
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
