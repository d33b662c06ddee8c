"""What an attempt's end writes besides its state: attempt rows, lineage, asset events and
the hooks to call after commit.

Mixed into RunDriver (engine/driver.py), which hands the rows to the store in its next
commit. What does not belong here: deciding the state (engine/active.py).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from cadenza.core.logfiles import attempt_log_path
from cadenza.core.records import ArtifactRecord, AssetEventRecord, AttemptRecord, WriteBatch
from cadenza.core.states import TaskState
from cadenza.engine.active import Instance, NodeState
from cadenza.engine.callbacks import CallbackContext, CallbackQueue
from cadenza.executors.base import TaskOutcome
from cadenza.graph.model import PipelineGraph, TaskOutput, iter_markers

log = logging.getLogger(__name__)

S = TaskState


class OutcomeWrites:
    """Mixed into RunDriver: the rows and hooks of an attempt's end."""

    if TYPE_CHECKING:
        run_id: str
        graph: PipelineGraph
        logs_dir: str
        nodes: dict[str, NodeState]
        batch: WriteBatch
        callbacks: CallbackQueue
        _code_prints: dict[int, str]

    def _attempt_done(self, inst: Instance, state: TaskState, out: TaskOutcome | None) -> None:
        self.batch.attempts.append(
            AttemptRecord(
                run_id=self.run_id, task_id=inst.node.id, map_index=inst.map_index,
                attempt=inst.attempt, state=state, started_at=inst.started_at,
                ended_at=inst.ended_at, worker=inst.worker,
                error=out.error if out is not None else inst.error,
                log_path=out.log_path if out is not None else self._existing_log(inst),
            )
        )

    def _existing_log(self, inst: Instance) -> str | None:
        """The attempt's log file when no outcome says where it is (cancelled, timed out)."""
        path = attempt_log_path(self.logs_dir, self.run_id, inst.node.id, inst.map_index,
                                inst.attempt)
        return path if os.path.exists(path) else None

    def _succeeded(self, inst: Instance) -> None:
        """An attempt succeeded: its lineage, asset events and on_success hooks."""
        out = inst.output
        if out is not None and out.kind == "artifact":  # checked here: most outputs are not
            self._record_lineage(inst)
        hooks = inst.node.options.on_success
        if hooks:  # most tasks have none: no context to build
            self.callbacks.add(hooks, self._cb_ctx(inst, S.SUCCESS))
        for asset in inst.node.options.outlets:
            self.batch.asset_events.append(AssetEventRecord(
                asset=asset, run_id=self.run_id, task_id=inst.node.id,
                map_index=inst.map_index, attempt=inst.attempt,
                artifact_sha256=inst.output.sha256 if inst.output is not None else None,
                created_at=inst.ended_at,
            ))

    def _on_failed(self, inst: Instance) -> None:
        log.info("run %s: %s failed: %s", self.run_id, inst.label,
                 inst.error.first_line() if inst.error is not None else "")
        self.callbacks.add(inst.node.options.on_failure, self._cb_ctx(inst, S.FAILED))

    def _record_lineage(self, inst: Instance) -> None:
        """An artifact remembers the task instance that made it and the artifacts it read."""
        out = inst.output
        if out is None or out.kind != "artifact" or not out.sha256:
            return
        from cadenza.graph.fingerprint import code_fingerprint

        inputs: list[str] = []
        for value in inst.node.args.values():
            for marker in iter_markers(value):
                if type(marker) is TaskOutput:
                    up = self.nodes[marker.task_id]
                    for src in (up.children if up.node.is_mapped else [up.summary]):
                        if src.output is not None and src.output.sha256:
                            inputs.append(src.output.sha256)
        if inst.map_index >= 0 and inst.inputs:
            for name in inst.node.mapped:
                sha = getattr(inst.inputs.get(name), "sha256", None)
                if sha:
                    inputs.append(sha)
        fingerprint = (inst.cache_detail or {}).get("fingerprint")
        if not fingerprint:
            # Once per function per run: the walk over its project code is ~20 us, and a
            # mapped task would otherwise pay it for every instance.
            fingerprint = self._code_prints.get(id(inst.node.fn))
            if fingerprint is None:
                fingerprint = self._code_prints[id(inst.node.fn)] = code_fingerprint(
                    inst.node.fn)
        self.batch.artifacts.append(ArtifactRecord(
            sha256=out.sha256, uri=out.uri or "", size=out.size, serializer=out.serializer,
            type_name=out.type_name, run_id=self.run_id, task_id=inst.node.id,
            map_index=inst.map_index, attempt=inst.attempt, code_fingerprint=fingerprint,
            input_sha256s=tuple(dict.fromkeys(inputs)), created_at=inst.ended_at,
        ))

    def _cb_ctx(self, inst: Instance, state: TaskState) -> CallbackContext:
        return CallbackContext(
            pipeline=self.graph.name, run_id=self.run_id, task_id=inst.node.id,
            map_index=inst.map_index, attempt=inst.attempt, state=state, error=inst.error,
        )
