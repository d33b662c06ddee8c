"""Clock jumps for the scheduler (the injected clock, core/clock.py): schedulers sharing
one store tick in turn while their wall clock moves a minute per tick and, on a seeded
schedule, jumps forward (hours: a suspended VM, an NTP step) or backward (an NTP step back;
the monotonic clock does not move back). Every ten-minute interval whose end the clock has
reached must have exactly one run: none duplicated (a backward jump must not re-create one),
none missed (a forward jump is caught up)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cadenza.core.clock import FakeClock, use_clock


class JumpingClock(FakeClock):
    def jump(self, seconds: float) -> None:
        """Move the wall clock only (NTP steps it; the monotonic clock never goes back)."""
        with self._lock:
            self._now += timedelta(seconds=seconds)


@dataclass
class ClockReport:
    jumps: int
    forward: int
    backward: int
    runs: int
    duplicated: int
    missed: int
    extra: int  # runs for intervals the clock never reached


def run_clock_campaign(database_url: str, home: Path, *, ticks: int, jumps: int, seed: int,
                       schedulers: int = 2) -> ClockReport:
    from cadenza.core.settings import load_settings
    from cadenza.store import open_store
    from cadenza.triggers.loop import Scheduler
    from tests.pipelines import chaos_clock

    rng = random.Random(seed)
    settings = load_settings(home, environ={"CADENZA_HOME": str(home),
                                            "CADENZA_DATABASE_URL": database_url})
    clock = JumpingClock(chaos_clock.CLOCK_START + timedelta(minutes=5))
    when = set(rng.sample(range(1, ticks), jumps))
    forward = backward = 0
    highest = clock.now()
    with use_clock(clock):
        fleet = [Scheduler([chaos_clock.every_ten_minutes], settings=settings, max_runs=0)
                 for _ in range(schedulers)]
        for n in range(ticks):
            if n in when:
                if rng.random() < 0.5:
                    clock.jump(rng.randint(1, 6) * 3600 + rng.randint(0, 599))
                    forward += 1
                else:
                    clock.jump(-(rng.randint(1, 3) * 3600 + rng.randint(0, 599)))
                    backward += 1
            else:
                clock.advance(60)
            highest = max(highest, clock.now())
            fleet[n % schedulers].tick()
    store = open_store(database_url)
    runs = store.list_runs(pipeline="every_ten_minutes", limit=100_000)
    got = Counter(r.logical_date for r in runs)
    expected = set()
    at = chaos_clock.CLOCK_START
    while at + chaos_clock.EVERY <= highest:
        expected.add(at)
        at += chaos_clock.EVERY
    return ClockReport(
        jumps=jumps, forward=forward, backward=backward, runs=len(runs),
        duplicated=sum(c - 1 for c in got.values() if c > 1),
        missed=len(expected - set(got)),
        extra=len(set(got) - expected))
