"""Messages into runs: a message's JSON as run parameters, and its record with its run.

What belongs here: turning a message into run parameters, recording it with its run in one
transaction (the delivery contract below), and listing the records. What does not: reading
messages from a broker (one module per transport), creating runs in the store
(`store/scheduling.py`).

Delivery contract (numbered; every consumer labels its cases with these numbers):
  1. A message's JSON object is validated as the pipeline's parameters (pydantic, the same
     validation as `pipeline.run(**params)`).
  2. Valid -> the run (queued) and the message's record are committed in ONE transaction;
     only then is the message acknowledged (Redis XACK, NATS ack, Kafka offset commit,
     AMQP basic.ack, MQTT PUBACK). A crash before the commit loses nothing (the message is
     redelivered); a crash between commit and ack makes a redelivery, which finds the
     record (UNIQUE (pipeline, source, message_id)) and creates no second run.
  3. Invalid (not JSON, not an object, wrong parameters) -> no run; the message is recorded
     with the validation error (`cadenza events list`) and acknowledged, so it is not
     redelivered forever.
  4. The store is unreachable -> nothing is acknowledged; the consumer backs off and the
     message is redelivered later.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from cadenza.core.errors import ParameterError
from cadenza.graph.plan import Plan
from cadenza.triggers.events.trigger import EventTrigger

log = logging.getLogger(__name__)

_JSON_FIELDS = ("data", "json", "payload", "params")


class InvalidMessage(ValueError):
    """A message that cannot become run parameters (case 3)."""


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


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


Handler = Callable[[str, Any], Any]


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
