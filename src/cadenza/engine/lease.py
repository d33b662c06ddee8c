"""Driver leases: a run is driven by one driver at a time, which proves it is alive.

One daemon thread per process renews the lease of every run this process drives. A driver
killed with `kill -9` stops renewing; after LEASE_S another driver (resume, a scheduler) may
claim the run. Renewal runs on its own thread so a long task on the inline executor cannot
starve it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

LEASE_S = 30.0
RENEW_EVERY_S = 5.0


class Heartbeats:
    def __init__(self, renew_every_s: float = RENEW_EVERY_S) -> None:
        self._held: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.renew_every_s = renew_every_s

    @contextmanager
    def holding(self, store: Any, run_id: str, driver_id: str) -> Iterator[None]:
        with self._lock:
            self._held[run_id] = (store, driver_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cadenza-heartbeat",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(run_id, None)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.renew_every_s)
            with self._lock:
                held = list(self._held.items())
            for run_id, (store, driver_id) in held:
                try:
                    if not store.renew_lease(run_id, driver_id):
                        log.warning("run %s: lease taken by another driver", run_id)
                except Exception as exc:  # noqa: BLE001 - retried at the next beat
                    log.warning("run %s: could not renew lease: %s", run_id, exc)


_heartbeats = Heartbeats()


def heartbeats() -> Heartbeats:
    return _heartbeats
