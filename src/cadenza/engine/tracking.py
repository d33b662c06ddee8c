"""Experiment tracking of a run (MLflow and the like): open it at the start, close it at
the end, and keep what failed as a warning on the run instead of failing it (unless the
tracker asks to fail). Mixed into RunDriver (engine/driver.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cadenza.core.records import RunRecord, WriteBatch
from cadenza.core.states import RunState
from cadenza.graph.model import PipelineGraph

log = logging.getLogger(__name__)


class RunTracking:
    """Mixed into RunDriver: the run's experiment tracking and its warnings."""

    if TYPE_CHECKING:
        run: RunRecord
        run_id: str
        graph: PipelineGraph
        batch: WriteBatch
        tracker: Any
        _tracker_config: Any
        tracking_info: dict[str, Any]

    def _warn(self, message: str) -> None:

        extra = dict(self.run.extra)
        extra["warnings"] = [*extra.get("warnings", []), message]
        self.run = replace(self.run, extra=extra)
        self.batch.run_updates.append(self.run)
        log.warning("run %s: %s", self.run_id, message)

    def _start_tracking(self) -> bool:
        """Open the tracking run. False when it failed and the tracker asks to fail."""
        if self.tracker is None:
            return True
        previous = self.run.extra.get("tracking")
        try:
            if previous:  # resumed: keep writing to the same tracking run
                self.tracking_info = dict(previous)
            else:
                self.tracking_info = dict(self.tracker.start_run(
                    pipeline=self.graph.name, run_id=self.run_id, params=dict(self.run.params),
                    tags=tuple(self.run.tags)))
        except Exception as exc:  # noqa: BLE001 - reported on the run
            self._warn(f"experiment tracking is off for this run: {exc}")
            self.tracker = None
            return not bool(getattr(self._tracker_config, "fail_on_error", False))

        self.run = replace(self.run, extra={**self.run.extra, "tracking": self.tracking_info})
        self.batch.run_updates.append(self.run)
        return True

    def _end_tracking(self, state: RunState) -> None:
        if self.tracker is None:
            return
        try:
            self.tracker.end_run(run_id=self.run_id, state=str(state), info=self.tracking_info)
        except Exception as exc:  # noqa: BLE001 - the run's outcome stands
            self._warn(f"experiment tracking could not close the run: {exc}")
