"""engine/watch.py: group commit while an inline task holds the driver's thread."""

from __future__ import annotations

import threading

import pytest

from cadenza.engine.watch import CallerThreadWatch
from tests.fixtures.waiting import wait_for


def test_a_long_call_is_committed_once_while_it_runs() -> None:
    flushed = threading.Event()
    calls: list[int] = []

    def flush() -> None:
        calls.append(1)
        flushed.set()

    watch = CallerThreadWatch(flush, after_s=0.01)
    with watch:
        assert flushed.wait(10), "pending rows were not committed while the call ran"
        # The watch goes to its untimed sleep while the call still runs: nothing more to
        # commit for this call (a watch that committed every window would never sleep).
        wait_for(lambda: watch._idle, timeout_s=10, what="the watch to go idle")
        assert calls == [1]
    watch.close()
    assert calls == [1]


def test_quick_calls_commit_nothing() -> None:
    calls: list[int] = []
    watch = CallerThreadWatch(lambda: calls.append(1), after_s=60)
    for _ in range(1000):
        with watch:
            pass
    watch.close()
    assert calls == []


def test_a_failed_commit_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """The rows stay in the driver's batch and its next commit retries them, after the
    call's outcome is recorded: raising here would cancel a task that succeeded."""
    failed = threading.Event()

    def flush() -> None:
        if not failed.is_set():
            failed.set()
            raise OSError("disk full")

    watch = CallerThreadWatch(flush, after_s=0.0)
    with watch:
        assert failed.wait(10)
    watch.close()
    assert "disk full" in caplog.text


def test_back_to_back_calls_do_not_wake_the_thread_each_time() -> None:
    """A wake-up per call costs a GIL hand-off per inline task (~10 % of chain200)."""
    wakes: list[int] = []

    class CountingCondition(threading.Condition):
        def notify(self, n: int = 1) -> None:
            wakes.append(1)
            super().notify(n)

    watch = CallerThreadWatch(lambda: None, after_s=0.05)
    watch._cond = CountingCondition()
    for _ in range(2000):
        with watch:
            pass
    watch.close()
    assert len(wakes) < 20  # close() and the odd quiet window, not one per call
