"""The clock-jump part of the fault campaign (tests/chaos/clockjump.py): a pipeline due every
ten minutes since CLOCK_START, with catch-up, so every interval must yield one run however
the scheduler's clock jumps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cadenza import pipeline, task

CLOCK_START = datetime(2026, 3, 1, tzinfo=UTC)
EVERY = timedelta(minutes=10)


@task
def tick_task() -> int:
    return 1


@pipeline(schedule=EVERY, start_date=CLOCK_START, catchup=True)
def every_ten_minutes():
    tick_task()
