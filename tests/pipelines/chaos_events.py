"""The chaos pipeline started by events (tests/chaos/schedulers.py): each message on the
Redis stream named by CADENZA_TEST_REDIS_URL is one run, its JSON the run's parameters.
Loaded by `cadenza scheduler tests.pipelines.chaos_events:chaos_events` and by
`cadenza server --scheduler tests/pipelines/chaos_events.py`."""

from __future__ import annotations

import os

from cadenza import pipeline
from cadenza.triggers.events import EventTrigger
from tests.pipelines.chaos import wire

_URL = os.environ.get("CADENZA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0?stream=chaos.none")


@pipeline(triggers=[EventTrigger(_URL)])
def chaos_events(seed: int, ledger: str, work_s: float = 0.05, cache_group: int = 0):
    wire(seed, ledger, work_s, cache_group)
