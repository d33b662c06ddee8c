"""Scheduler fixtures for the multi-scheduler tests: an hourly pipeline with catch-up since
two days ago (UTC midnight, the same in every process), plus the event pipelines of
sched_events (from CADENZA_TEST_REDIS_URL / CADENZA_TEST_NATS_URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cadenza import pipeline
from tests.pipelines.sched_events import *
from tests.pipelines.sched_events import echo

_START = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)


@pipeline(schedule="@hourly", start_date=_START, catchup=True)
def hourly_catchup():
    echo(0, "hourly")
