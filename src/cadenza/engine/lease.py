"""Driver leases and cancel requests: a run is driven by one driver at a time, which proves
it is alive, and hears a cancel asked for from any process.

One daemon thread per process serves every run this process drives:
- it renews each run's lease every `renew_every_s(lease_s)` (5 s for the default 30 s
  lease). A driver killed with `kill -9` stops renewing; after the lease (CADENZA_LEASE_S,
  default 30 s) its run shows `crashed` (`is_orphaned`) and another driver (resume, a
  scheduler) may claim it;
- every CANCEL_POLL_S it asks the store which of its runs someone asked to cancel (one
  indexed read for all of them: `RunStore.cancel_requests`) and calls their `on_cancel`
  (`RunDriver.cancel`). The engine's loop never pays for this: no store round trip per task.
Both run on this thread so a long task on the inline executor cannot starve them.

What does not belong here: what cancelling does (`RunDriver.cancel`, `engine/cancel.py`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cadenza.core import clock
from cadenza.core.records import RunRecord
from cadenza.core.states import RunState

log = logging.getLogger(__name__)

LEASE_S = 30.0  # the default; settings.lease_s (CADENZA_LEASE_S) decides
RENEW_EVERY_S = 5.0
# How often a driving process looks for cancel requests: a cancel lands within about this
# (plus the time to stop the running attempts). One small read per process per poll.
CANCEL_POLL_S = 0.5


def lease_s() -> float:
    """The lease length of this process's settings (CADENZA_LEASE_S, default 30 s)."""
    from cadenza.core.settings import get_settings

    return get_settings().lease_s


def renew_every_s(lease: float) -> float:
    """Renew well within the lease: a third of it, at most RENEW_EVERY_S."""
    return min(RENEW_EVERY_S, lease / 3)


@dataclass(slots=True, eq=False)
class _Held:
    store: Any
    driver_id: str
    renew_every_s: float
    next_renew: float
    on_cancel: Callable[[], None] | None
    on_taken: Callable[[str], None] | None = None
    lease_s: float = LEASE_S
    renewed_at: float = 0.0  # monotonic: the lease's last renewal (or its taking)
    warned_end: bool = False  # said in this outage that the lease is about to end


class Heartbeats:
    def __init__(self, renew_every_s: float | None = None) -> None:
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._nap = threading.Event()  # never set: the loop's timed wait
        self._thread: threading.Thread | None = None
        self.renew_every_s = renew_every_s  # None: from each run's lease
        # What failed at the last try ("renew <run>", "cancels"): warned once per outage, not
        # at every beat (a store gone for a few seconds was ~18 lines), and said when it ends.
        self._failing: set[str] = set()

    @contextmanager
    def holding(self, store: Any, run_id: str, driver_id: str, *,
                on_cancel: Callable[[], None] | None = None,
                on_taken: Callable[[str], None] | None = None) -> Iterator[None]:
        """Renew the run's lease while inside; call `on_cancel` (once, from this module's
        thread) if someone asks to cancel the run (`RunStore.request_cancel`), and
        `on_taken(holder)` (once) if another driver took the run over."""
        lease = lease_s()
        every = self.renew_every_s or renew_every_s(lease)
        now = time.monotonic()
        with self._lock:
            self._held[run_id] = _Held(store=store, driver_id=driver_id, renew_every_s=every,
                                       next_renew=now + every, on_cancel=on_cancel,
                                       on_taken=on_taken, lease_s=lease, renewed_at=now)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cadenza-heartbeat",
                                                daemon=True)
                self._thread.start()
            self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(run_id, None)
                if self._held:
                    self._failing.discard(f"renew {run_id}")
                else:  # the next run's trouble is a new outage, warned about again
                    self._failing.clear()

    def _loop(self) -> None:
        # This frame lives as long as the process: it must hold no reference to a run's
        # records or driver (see _beat), so it keeps numbers only.
        while True:
            with self._lock:
                tick = min([CANCEL_POLL_S, *(h.renew_every_s for h in self._held.values())])
                idle = not self._held
                if idle:
                    self._wake.clear()
            if idle:
                self._wake.wait()
                continue
            self._nap.wait(tick)  # wait first: a run shorter than one poll costs no query
            self._beat()

    def _beat(self) -> None:
        """One round: renew due leases, look for cancel requests. Its own frame, so that
        nothing it touched (a driver, through on_cancel; the user's module, through the
        driver's graph) stays referenced once the run is over: a user object in that module
        must still be finalised at exit."""
        with self._lock:
            held = list(self._held.items())
        now = time.monotonic()
        for run_id, h in held:
            if now >= h.next_renew:
                h.next_renew = now + h.renew_every_s
                self._renew(run_id, h)
        self._check_cancels(held)

    def _renew(self, run_id: str, h: _Held) -> None:
        """Renew one lease. A renewal that matches no row is not always a lost lease: the
        run may have ended (its final commit releases it) while this beat was on its way.
        Only a run still held here whose row names another driver was taken."""
        what = f"renew {run_id}"
        try:
            if h.store.renew_lease(run_id, h.driver_id):
                h.renewed_at, h.warned_end = time.monotonic(), False
                self._recovered(what, "run %s: the store answers again; lease renewed", run_id)
                return
            with self._lock:
                if self._held.get(run_id) is not h:
                    return  # the run ended and let go of its lease after this beat began
            holder = h.store.get_run(run_id).driver_id
        except Exception as exc:  # noqa: BLE001 - retried at the next beat
            self._failed(what, "run %s: could not renew lease (retried every %.1f s; said "
                         "once): %s", run_id, h.renew_every_s, exc)
            self._lease_ending(run_id, h)
            return
        self._recovered(what, "run %s: the store answers again", run_id)
        if holder is not None and holder != h.driver_id:
            callback, h.on_taken = h.on_taken, None  # once
            if callback is None:
                log.warning("run %s: lease taken by another driver (%s)", run_id, holder)
            else:  # it says so itself
                try:
                    callback(holder)
                except Exception:
                    log.exception("run %s: stopping after the takeover failed", run_id)

    def _lease_ending(self, run_id: str, h: _Held) -> None:
        """Said once per outage, when two more tries at most (a third of the lease at most)
        are left before the lease ends; the outage's first warning may be long past by then.
        Past the lease, another process may take the run over (`cadenza resume`, a
        scheduler's recovery); this driver learns it at its next answer from the store."""
        since = time.monotonic() - h.renewed_at
        left = h.lease_s - since
        if h.warned_end or left > min(2 * h.renew_every_s, h.lease_s / 3):
            return
        h.warned_end = True
        when = f"ends in {left:.0f} s" if left > 0 else f"ended {-left:.0f} s ago"
        log.warning("run %s: its lease could not be renewed for %.0f s and %s; after that "
                    "the run shows as crashed and another process (cadenza resume, a "
                    "scheduler) may take it over; this driver stops its tasks when it next "
                    "reaches the store and sees that. Fix: bring the database back; if no one "
                    "has taken the run over by then, it goes on",
                    run_id, since, when)

    def _failed(self, what: str, msg: str, *args: Any) -> None:
        """A warning the first time `what` fails; debug while it goes on failing."""
        with self._lock:
            first = what not in self._failing
            self._failing.add(what)
        if first:
            log.warning(msg, *args)
        else:
            log.debug(msg, *args)

    def _recovered(self, what: str, msg: str, *args: Any) -> None:
        with self._lock:
            was = what in self._failing
            self._failing.discard(what)
        if was:
            log.info(msg, *args)

    def _check_cancels(self, held: list[tuple[str, _Held]]) -> None:
        by_store: dict[int, tuple[Any, list[tuple[str, _Held]]]] = {}
        for run_id, h in held:
            if h.on_cancel is not None:
                by_store.setdefault(id(h.store), (h.store, []))[1].append((run_id, h))
        for store, runs in by_store.values():
            try:
                asked = store.cancel_requests([run_id for run_id, _ in runs])
            except Exception as exc:  # noqa: BLE001 - asked again at the next poll
                self._failed(f"cancels {id(store)}", "could not read cancel requests "
                             "(asked again every %.1f s; said once): %s", CANCEL_POLL_S, exc)
                continue
            self._recovered(f"cancels {id(store)}", "cancel requests are read again")
            for run_id, h in runs:
                callback = h.on_cancel
                if run_id not in asked or callback is None:
                    continue
                h.on_cancel = None  # once
                log.info("run %s: cancel requested; cancelling", run_id)
                try:
                    callback()
                except Exception:
                    log.exception("run %s: cancelling failed", run_id)


_heartbeats = Heartbeats()


def heartbeats() -> Heartbeats:
    return _heartbeats


# --- is a run's driver alive? -----------------------------------------------------------------
# The one liveness rule (issue 12): a run is held by a live driver when it names one, the
# driver renewed its lease within `lease` seconds, and the driver's process is not known dead
# on this host. `is_orphaned` (surfaces show `crashed`), the scheduler's takeover, cancel and
# gc (`store.retention.delete_runs` is handed `is_held`) all decide by it. It lives in the
# engine because the process check needs psutil, which core may not import (STYLE §1); the
# store decides nothing about liveness, it is handed this rule.


class DriverLiveness(StrEnum):
    """What this host can tell about a driver's process from its driver id."""

    ALIVE = "alive"  # a process with that pid runs here (not a zombie)
    DEAD = "dead"  # it ran here and is gone, or is a zombie
    UNKNOWN = "unknown"  # another host, or not a "host:pid:token" id: only the lease tells


def driver_liveness(driver_id: str) -> DriverLiveness:
    """Whether `driver_id` ("host:pid:token", `core.ids.new_driver_id`) names a live process
    on this host. A pid reused by a later process reads as alive: the id does not record the
    process's start time, so the lease decides then (`is_held`)."""
    host, _, rest = driver_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return DriverLiveness.UNKNOWN
    pid = int(pid_text)
    if pid == os.getpid():
        return DriverLiveness.ALIVE
    import psutil  # type: ignore[import-untyped,unused-ignore]

    try:
        zombie = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return DriverLiveness.DEAD
    except psutil.AccessDenied:
        return DriverLiveness.ALIVE  # it exists; we may not look at it
    return DriverLiveness.DEAD if zombie else DriverLiveness.ALIVE


def driver_is_dead(driver_id: str | None) -> bool:
    """True when there is no driver, or `driver_id` names a process on this host that no
    longer exists (or is a zombie). A driver on another host is never known dead here: its
    lease says so instead."""
    return not driver_id or driver_liveness(driver_id) is DriverLiveness.DEAD


def heartbeat_expired(heartbeat_at: datetime | None, *, now: datetime | None = None,
                      lease: float | None = None) -> bool:
    """No lease renewal within `lease` seconds (default: settings' lease_s), or none ever."""
    if heartbeat_at is None:
        return True
    now = now or clock.now()
    return heartbeat_at <= now - timedelta(seconds=lease_s() if lease is None else lease)


def lease_expired(run: RunRecord, *, now: datetime | None = None,
                  lease: float | None = None) -> bool:
    """The run's driver has not renewed its lease for `lease` seconds (or never did)."""
    return heartbeat_expired(run.heartbeat_at, now=now, lease=lease)


def is_held(driver_id: str | None, heartbeat_at: datetime | None, *,
            now: datetime | None = None, lease: float | None = None) -> bool:
    """A live driver holds the run: it names one, whose lease is current and whose process
    is not known dead. The one liveness rule (see above)."""
    return (driver_id is not None and not heartbeat_expired(heartbeat_at, now=now, lease=lease)
            and not driver_is_dead(driver_id))


def is_orphaned(run: RunRecord, *, now: datetime | None = None,
                lease: float | None = None) -> bool:
    """An unfinished run that nobody drives any more: its driver died (its process on this
    host is gone, or its lease expired), or it is `running` with no driver at all. A queued
    run nobody has claimed yet is waiting, not orphaned. Computed, never stored: surfaces
    show such a run as `crashed` until `cadenza resume` (or a scheduler) takes it over."""
    if run.state.is_final:
        return False
    if run.driver_id is None:
        return run.state is RunState.RUNNING
    return not is_held(run.driver_id, run.heartbeat_at, now=now, lease=lease)
