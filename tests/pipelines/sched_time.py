"""Scheduler fixtures: time-scheduled pipelines (cron, presets, timedelta, bounds, caps)."""

from __future__ import annotations

import threading
from datetime import timedelta

from cadenza import get_context, pipeline, task

# Tasks of `gated` block on this until a test sets it (same process: inline/threads).
GATE = threading.Event()


@task
def record_interval() -> dict:
    ctx = get_context()
    start, end = ctx.data_interval or (None, None)
    return {
        "logical_date": ctx.logical_date.isoformat() if ctx.logical_date else None,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "run_id": ctx.run_id,
    }


@task
def wait_for_gate() -> str:
    if not GATE.wait(60):
        raise TimeoutError("the test never opened the gate")
    return "through"


@pipeline(schedule="@daily", timezone="Europe/Paris", start_date="2026-03-27", catchup=True)
def daily_paris():
    record_interval()


@pipeline(schedule="@hourly", timezone="Europe/Paris", start_date="2026-10-24T23:00",
          catchup=True)
def hourly_paris():
    record_interval()


@pipeline(schedule="30 2 * * *", timezone="America/New_York", start_date="2026-03-06",
          end_date="2026-03-10", catchup=True)
def bounded_new_york():
    record_interval()


@pipeline(schedule="@daily", start_date="2026-01-01", catchup=False)
def no_catchup():
    record_interval()


@pipeline(schedule=timedelta(hours=6), start_date="2026-01-01T00:00", catchup=True)
def every_six_hours():
    record_interval()


@pipeline(schedule="@hourly", start_date="2026-01-01", catchup=True, max_active_runs=1)
def gated():
    wait_for_gate()


@pipeline(schedule="@daily", start_date="2026-01-01", catchup=True)
def needs_param(n: int):
    record_interval()


# Days (of the logical date) on which `fail_on_bad_days` raises; a test changes it between
# a backfill and its --rerun-failed (same process: inline executor).
BAD_DAYS: set[int] = set()


@task
def fail_on_bad_days() -> str:
    ctx = get_context()
    assert ctx.logical_date is not None
    if ctx.logical_date.day in BAD_DAYS:
        raise ValueError(f"day {ctx.logical_date.day} is bad")
    return ctx.logical_date.date().isoformat()


@pipeline(schedule="@daily", start_date="2026-02-01", catchup=True)
def daily_mendable():
    fail_on_bad_days()
