"""Scheduling and triggers: cron/preset/timedelta schedules, backfill, asset triggers,
sensors, event triggers (Redis Streams, NATS JetStream), SLA, and the scheduler service.

Public: `Scheduler`, `backfill`, `FileSensor`, `sensor`, `EventTrigger`, `pause`,
`unpause`, `list_events`. Heavy clients (redis, nats) are imported only when a consumer
starts, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EventTrigger",
    "FileSensor",
    "Scheduler",
    "SensorTimeout",
    "backfill",
    "list_events",
    "pause",
    "sensor",
    "unpause",
]

_WHERE = {
    "EventTrigger": "cadenza.triggers.events",
    "list_events": "cadenza.triggers.events",
    "FileSensor": "cadenza.triggers.sensors",
    "sensor": "cadenza.triggers.sensors",
    "SensorTimeout": "cadenza.triggers.sensors",
    "Scheduler": "cadenza.triggers.loop",
    "pause": "cadenza.triggers.loop",
    "unpause": "cadenza.triggers.loop",
    "backfill": "cadenza.triggers.backfill",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'cadenza.triggers' has no attribute {name!r}")
