"""Group commit while a task holds the driver's own thread.

The inline executor runs a task inside `submit()`, so for the task's whole length the driver's
loop is not turning and its group-commit timer cannot fire: without help, a ten-minute inline
task would stay `queued` in the store (and in `cadenza runs show`) until it ended. A
`CallerThreadWatch` wraps such a call; if the call is still running after the group-commit
window, one helper thread commits what the driver had pending (the task's `running` row among
it).

The driver touches none of its pending state while the call runs (the task's outcome goes to
a queue), and leaving the watch waits for a commit in progress, even when Ctrl-C interrupts
that wait, so the two threads never write the same batch at once.

A commit that fails here is logged, not raised: the rows stay in the driver's batch, and the
driver's own next commit retries them (and raises, if the store is really gone) after it has
recorded the call's outcome, so a task that succeeded is never lost to a passing store error.

Entering and leaving cost one lock each and wake nobody. The thread, started once per driver
on first use, stays in a timed wait while calls keep coming (one wake-up per window) and is
woken only from an untimed sleep after a quiet window: a wake-up per call cost ~10% of
chain200 on inline (a GIL hand-off per task).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


class CallerThreadWatch:
    def __init__(self, flush: Callable[[], None], *, after_s: float) -> None:
        self._flush = flush
        self._after_s = after_s
        self._cond = threading.Condition()
        self._since: float | None = None  # when the call being watched started
        self._last = 0.0  # when the latest call started
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False  # True while the thread waits with no timeout: entering wakes it

    def __enter__(self) -> Self:
        with self._cond:
            self._since = self._last = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="cadenza-commit-watch",
                                                daemon=True)
                self._thread.start()
            if self._idle:
                self._cond.notify()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        interrupted: KeyboardInterrupt | None = None
        while True:  # wait for a commit in progress, whatever happens meanwhile
            try:
                with self._cond:
                    self._since = None
                break
            except KeyboardInterrupt as ki:  # Ctrl-C during the wait: wait on, then raise it
                interrupted = ki
        if interrupted is not None and exc is None:
            raise interrupted

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._since is None:
                    if time.monotonic() - self._last < self._after_s:
                        # Calls are coming: keep a timed watch so the next needs no wake-up.
                        self._cond.wait(self._after_s)
                        continue
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                left = self._since + self._after_s - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._since = None  # one commit per call: nothing else changes until it ends
                try:
                    self._flush()
                except Exception as exc:  # noqa: BLE001 - the driver's next commit retries
                    log.warning("could not record the running task yet (%s); the run's next "
                                "commit retries it", exc)
