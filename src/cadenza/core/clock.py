"""Injectable time. The engine and scheduler read time only through here, so tests can
control it (`use_clock(FakeClock(...))`) instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when told to (or when something sleeps on it)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))


_clock: Clock = Clock()


def get_clock() -> Clock:
    return _clock


def now() -> datetime:
    return _clock.now()


def monotonic() -> float:
    return _clock.monotonic()


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    global _clock
    old, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = old
