"""Sensor steps, polled by the engine: the driver's part that pokes, waits and times out.

A sensor step is one attempt that spans all its pokes: each "not yet" schedules the next
poke after `poke_interval_s` on the driver's retry heap, holds no executor or pool slot and
writes nothing; after `timeout_s` (counted from the first poke) the attempt fails with
SensorTimeout. Pokes run on a small thread pool of their own (`executors.base.sensor_poller`).
What belongs here: that polling. What does not: the state moves (engine/active.py) and the
loop (engine/driver.py), which mixes this class in.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from cadenza.core import clock
from cadenza.core.errors import SENSOR_NOT_READY, SENSOR_TIMEOUT
from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.core.states import TaskState
from cadenza.engine.active import ActiveRun, Instance
from cadenza.executors.base import Executor, Outcomes, TaskCall, TaskOutcome

log = logging.getLogger(__name__)

S = TaskState
_DEADLINE_SLACK_S = 0.05


class SensorSteps:
    """Mixed into RunDriver: poking sensor steps (the attributes below are the driver's)."""

    if TYPE_CHECKING:
        run_id: str
        active: ActiveRun

        @property
        def executor(self) -> Executor: ...
        in_flight: dict[tuple[str, int], Instance]
        retry_heap: list[tuple[float, int, Instance]]
        outcomes: Outcomes
        dirty: dict[int, Instance]
        _seq: itertools.count[int]
        _dirty_since: float | None
        _must_flush: bool
        _poller: Executor | None
        _deadlines: list[tuple[float, int, Instance, int]]

        def _attempt_done(self, inst: Instance, state: TaskState,
                          out: TaskOutcome | None) -> None: ...
        def _existing_log(self, inst: Instance) -> str | None: ...
        def _build_call(self, inst: Instance) -> TaskCall: ...
        def _submit(self, inst: Instance, call: TaskCall, *,
                    first_poke: bool = True) -> None: ...

    def _submit_sensor(self, inst: Instance, call: TaskCall, *, first_poke: bool) -> None:
        """Hand one poke to the poller, no longer than the sensor may still wait."""
        left = self._sensor_time_left(inst)
        if left is not None and left <= 0:  # a retry that starts after the wait ran out
            self.in_flight.pop((inst.node.id, inst.map_index), None)
            self._sensor_timed_out(inst, None)
            return
        if left is not None:
            # A poke may not outlive the sensor's timeout; if it sits in a call that cannot
            # be interrupted, the attempt's deadline entry fails the step on time anyway.
            limit = max(left, 0.001)
            call = replace(call, timeout_s=min(call.timeout_s or limit, limit))
            if first_poke:
                heapq.heappush(self._deadlines,
                               (time.monotonic() + limit, next(self._seq), inst, inst.attempt))
        self._executor_of(inst).submit(call, self.outcomes.put)

    def _executor_of(self, inst: Instance) -> Executor:
        if inst.node.options.sensor is None:
            return self.executor
        if self._poller is None:
            from cadenza.executors.base import sensor_poller

            self._poller = sensor_poller()
        return self._poller

    def _sensor_waits(self, inst: Instance, out: TaskOutcome) -> bool:
        """A poke came back. True when the sensor keeps waiting (poked again later).

        One attempt spans all pokes, from the first to the one that finds the condition
        true: waiting writes nothing to the store and holds no slot. After `timeout_s`
        (counted from the first poke) the attempt fails with SensorTimeout naming the
        condition. A poke that raises anything else is an ordinary failure (retries apply).
        """
        spec = inst.node.options.sensor
        assert spec is not None
        if out.ok or out.error is None:
            return False
        left = self._sensor_time_left(inst)
        # A poke stopped by the executor at the sensor's deadline comes back as a timeout
        # a hair before it (clock granularity): that is the sensor timing out too.
        stopped = out.error.kind == ErrorKind.TIMEOUT
        out_of_time = left is not None and left <= (_DEADLINE_SLACK_S if stopped else 0.0)
        if out.error.type != SENSOR_NOT_READY and not (stopped and out_of_time):
            return False  # the poke itself failed: an ordinary failure
        if out_of_time:
            self._sensor_timed_out(inst, out)
            return True
        delay = spec.poke_interval_s if left is None else min(spec.poke_interval_s, left)
        heapq.heappush(self.retry_heap, (time.monotonic() + delay, next(self._seq), inst))
        waiting = f"waiting for {spec.condition}"
        if inst.reason != waiting:  # the first "not yet": show the wait (one write, not per poke)
            inst.reason = waiting
            self.dirty[id(inst)] = inst
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
        log.debug("run %s: sensor %s not ready, next poke in %.3g s", self.run_id,
                  inst.label, delay)
        return True

    def _sensor_time_left(self, inst: Instance) -> float | None:
        """Seconds until the sensor step times out (from its first poke); None: never."""
        spec = inst.node.options.sensor
        if spec is None or spec.timeout_s is None:
            return None
        since = inst.wait_since or inst.started_at
        if since is None:
            return spec.timeout_s
        waited: float = (clock.now() - since).total_seconds()
        return spec.timeout_s - waited

    def _sensor_timed_out(self, inst: Instance, out: TaskOutcome | None) -> None:
        spec = inst.node.options.sensor
        assert spec is not None and spec.timeout_s is not None
        error = ErrorInfo(
            kind=ErrorKind.TIMEOUT, type=SENSOR_TIMEOUT,
            type_mro=(SENSOR_TIMEOUT, "cadenza.core.errors.CadenzaError"),
            message=f"sensor '{inst.label}' timed out after {spec.timeout_s:g} s waiting for "
            f"{spec.condition}")
        inst.ended_at = (out.ended_at if out is not None else None) or clock.now()
        if out is not None:
            inst.worker = out.worker
            out = replace(out, started_at=inst.started_at, error=error,
                          log_path=out.log_path or self._existing_log(inst))
        self._must_flush = True
        if out is None:
            inst.error = error
        self._attempt_done(inst, S.FAILED, out)
        self.active.fail(inst, error)

    def _poke_again(self, inst: Instance) -> None:
        self.in_flight[(inst.node.id, inst.map_index)] = inst
        self._submit(inst, self._build_call(inst), first_poke=False)

