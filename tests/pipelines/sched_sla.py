"""Scheduler fixtures: pipelines with an SLA and an on_sla_miss callback."""

from __future__ import annotations

from datetime import timedelta

from cadenza import pipeline, task
from cadenza.core import clock

MISSES: list[tuple[str, str]] = []  # (pipeline, run_id) per on_sla_miss call


def record_miss(ctx) -> None:
    MISSES.append((ctx.pipeline, ctx.run_id))


@task
def quick() -> int:
    return 1


@task
def fifteen_minutes() -> int:
    # Takes 15 minutes of the test's FakeClock (the tests never sleep).
    fake = clock.get_clock()
    if hasattr(fake, "advance"):
        fake.advance(15 * 60)
    return 2


@pipeline(schedule="@hourly", start_date="2026-01-01", catchup=False,
          sla=timedelta(minutes=10), on_sla_miss=record_miss)
def hourly_with_sla():
    quick()


@pipeline(sla=timedelta(minutes=10), on_sla_miss=[record_miss])
def slow_with_sla():
    fifteen_minutes()


@pipeline(sla=timedelta(minutes=10), on_sla_miss=record_miss)
def quick_with_sla():
    quick()
