"""The lease heartbeat warns of a taken lease only when another driver holds the run: a
renewal racing the run's own end (its final commit releases the lease) says nothing."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from cadenza.engine.lease import Heartbeats


@dataclass
class Row:
    driver_id: str | None


@dataclass
class Store:
    """The two calls the heartbeat makes, on a dict of rows; `during_renew` runs inside
    renew_lease, where a real run's final commit can land."""

    rows: dict[str, Row]
    during_renew: Any = None
    renewed: list[str] = field(default_factory=list)

    def renew_lease(self, run_id: str, driver_id: str) -> bool:
        if self.during_renew is not None:
            self.during_renew()
        self.renewed.append(run_id)
        return self.rows[run_id].driver_id == driver_id

    def get_run(self, run_id: str) -> Row:
        return self.rows[run_id]


WARNING = "lease taken by another driver"


def beat_while(beats: Heartbeats, store: Store, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.WARNING, logger="cadenza"), beats.holding(store, "r1", "d1"):
        beats._held["r1"].next_renew = 0.0  # due now
        beats._beat()
    return caplog.text


def test_a_run_that_ends_during_the_renewal_is_not_called_taken(caplog) -> None:
    beats = Heartbeats(renew_every_s=3600)
    store = Store({"r1": Row("d1")})

    def run_ends() -> None:  # the final commit releases the lease; the run lets go
        store.rows["r1"].driver_id = None
        beats._held.pop("r1")

    store.during_renew = run_ends
    assert WARNING not in beat_while(beats, store, caplog)
    assert store.renewed == ["r1"]


def test_a_released_run_still_held_here_is_not_called_taken(caplog) -> None:
    beats = Heartbeats(renew_every_s=3600)
    store = Store({"r1": Row(None)})  # final commit done, holding() not yet left
    assert WARNING not in beat_while(beats, store, caplog)


def test_a_run_another_driver_holds_is_called_taken(caplog) -> None:
    beats = Heartbeats(renew_every_s=3600)
    store = Store({"r1": Row("d2")})
    assert f"{WARNING} (d2)" in beat_while(beats, store, caplog)


@dataclass
class GoneStore(Store):
    """A store that does not answer while `down`."""

    down: bool = True

    def renew_lease(self, run_id: str, driver_id: str) -> bool:
        if self.down:
            raise ConnectionError("connection refused")
        return super().renew_lease(run_id, driver_id)

    def cancel_requests(self, run_ids: list[str]) -> set[str]:
        if self.down:
            raise ConnectionError("connection refused")
        return set()


def test_a_store_that_stops_answering_is_warned_about_once_per_outage(caplog) -> None:
    beats = Heartbeats(renew_every_s=3600)
    store = GoneStore({"r1": Row("d1")})
    with caplog.at_level(logging.INFO, logger="cadenza"), \
            beats.holding(store, "r1", "d1", on_cancel=lambda: None):
        for down in (True,) * 10 + (False,) + (True,) * 3:
            store.down = down
            beats._held["r1"].next_renew = 0.0  # due now
            beats._beat()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Two outages: each says once that renewing and reading cancels failed.
    assert sum("could not renew lease" in w for w in warnings) == 2, warnings
    assert sum("could not read cancel requests" in w for w in warnings) == 2, warnings
    assert len(warnings) == 4, warnings
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "run r1: the store answers again; lease renewed" in infos
    assert "cancel requests are read again" in infos
    assert not beats._failing  # holding() left: nothing is remembered for the run


def test_an_outage_reaching_the_end_of_the_lease_is_warned_about_again(caplog) -> None:
    """The outage's first warning may be long past when the lease is about to end, which is
    when another process may take the run over: that is said once more, per outage."""
    beats = Heartbeats(renew_every_s=5.0)
    beats._loop = lambda: None  # type: ignore[method-assign]  # the test beats, not a thread
    store = GoneStore({"r1": Row("d1")})

    def beat(down: bool, since_renewal: float) -> None:
        store.down = down
        h = beats._held["r1"]
        if down:  # the clock: `since_renewal` seconds after the last renewal
            h.renewed_at = time.monotonic() - since_renewal
        h.next_renew = 0.0
        beats._beat()

    with caplog.at_level(logging.INFO, logger="cadenza"), beats.holding(store, "r1", "d1"):
        lease = beats._held["r1"].lease_s
        for t in (5.0, 10.0, lease - 11.0):  # more than two tries left: the outage said once
            beat(True, t)
        ending = [r.getMessage() for r in caplog.records if "could not be renewed for" in
                  r.getMessage()]
        assert ending == []
        beat(True, lease - 9.0)
        beat(True, lease - 4.0)
        beat(True, lease + 1.0)
        beat(False, 0.0)  # it answers: the next outage is warned about again
        beat(True, lease - 1.0)
    ending = [r for r in caplog.records if "could not be renewed for" in r.getMessage()]
    assert len(ending) == 2 and all(r.levelno == logging.WARNING for r in ending)
    left = [float(re.search(r"and ends in (\d+) s;", r.getMessage())[1]) for r in ending]
    assert 7 <= left[0] <= 9 and 0 <= left[1] <= 1, ending  # a loaded machine: a second or two
    assert "cadenza resume" in ending[0].getMessage()
