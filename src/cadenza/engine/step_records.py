"""Where a cluster step (`cadenza task-run`) records its run: the metadata store, or records
in the artifact store that `cadenza runs import` loads later.

What belongs here: the two books (`StoreBook` on the metadata store, `ObjectBook` on
`<artifact root>/_cadenza_records/<run id>/`), the JSON form of the records they keep, and
choosing between them. What does not: running a step or deciding states
(engine/task_run.py).

A step of a compiled Kubeflow pipeline runs in its own pod. When the pod can reach the
metadata store (`CADENZA_DATABASE_URL` set and answering), each step writes its run row (the
first one to arrive creates it), its task instance, attempt and metrics there, and the run
shows in `cadenza runs list` while it runs. Otherwise each step writes one JSON file per task
instance next to the artifacts (object storage is shared by every pod); `cadenza runs import
RUN_ID --artifact-root s3://...` copies them into any metadata store afterwards.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from cadenza.core.errors import CadenzaError, RunNotFound
from cadenza.core.records import (
    AttemptRecord,
    ErrorInfo,
    ErrorKind,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
    WriteBatch,
)
from cadenza.core.settings import Settings
from cadenza.core.states import RunState, TaskState

log = logging.getLogger(__name__)

RECORDS_DIR = "_cadenza_records"


@dataclass(slots=True, kw_only=True)
class StepRecord:
    """What one step wrote about one task instance: the row, its attempts and metrics."""

    instance: TaskInstanceRecord
    attempts: list[AttemptRecord] = field(default_factory=list)
    metrics: list[MetricRecord] = field(default_factory=list)


# -- JSON form ----------------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, ValueRef):
        return {"$ref": value.to_json()}
    if isinstance(value, ErrorInfo):
        return {"$error": {"kind": value.kind.value, "type": value.type,
                           "message": value.message, "traceback": value.traceback,
                           "type_mro": list(value.type_mro)}}
    if isinstance(value, (TaskState, RunState)):
        return value.value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
        if "$ref" in value:
            return ValueRef.from_json(value["$ref"])
        if "$error" in value:
            e = value["$error"]
            return ErrorInfo(kind=ErrorKind(e["kind"]), type=e["type"], message=e["message"],
                             traceback=e.get("traceback", ""),
                             type_mro=tuple(e.get("type_mro", ())))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _record_dict(record: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(record, f.name)) for f in fields(record)}


def _record_from(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    values = {k: _decode(v) for k, v in data.items() if k in names}
    if "state" in values:
        values["state"] = (RunState if cls is RunRecord else TaskState)(values["state"])
    if "tags" in values:
        values["tags"] = tuple(values["tags"])
    if cls is MetricRecord and isinstance(values.get("value"), list):
        values["value"] = str(values["value"])
    return cls(**values)


def dump_step(record: StepRecord) -> bytes:
    return json.dumps({"instance": _record_dict(record.instance),
                       "attempts": [_record_dict(a) for a in record.attempts],
                       "metrics": [_record_dict(m) for m in record.metrics]},
                      sort_keys=True).encode()


def load_step(data: bytes) -> StepRecord:
    raw = json.loads(data)
    return StepRecord(instance=_record_from(TaskInstanceRecord, raw["instance"]),
                      attempts=[_record_from(AttemptRecord, a) for a in raw["attempts"]],
                      metrics=[_record_from(MetricRecord, m) for m in raw["metrics"]])


def dump_run(run: RunRecord) -> bytes:
    return json.dumps(_record_dict(run), sort_keys=True).encode()


def load_run(data: bytes) -> RunRecord:
    record: RunRecord = _record_from(RunRecord, json.loads(data))
    return record


# -- the books ----------------------------------------------------------------------------------
class StoreBook:
    """Records on the metadata store (every pod writes its own rows)."""

    kind = "metadata store"

    def __init__(self, store: Any) -> None:
        self.store = store

    def get_run(self, run_id: str) -> RunRecord | None:
        try:
            run: RunRecord = self.store.get_run(run_id)
        except RunNotFound:
            return None
        return run

    def ensure_run(self, run: RunRecord) -> RunRecord:
        """The run's row, created by the first step that gets here."""
        found = self.get_run(run.run_id)
        if found is not None:
            return found
        try:
            self.store.create_run(run, [])
        except CadenzaError:  # another step created it at the same moment
            found = self.get_run(run.run_id)
            if found is None:
                raise
            return found
        return run

    def update_run(self, run: RunRecord) -> None:
        self.store.write(WriteBatch(run_updates=[run]))

    def instances(self, run_id: str) -> list[TaskInstanceRecord]:
        rows: list[TaskInstanceRecord] = self.store.get_task_instances(run_id)
        return rows

    def write(self, record: StepRecord, *, exists: bool) -> None:
        batch = WriteBatch(attempts=list(record.attempts), metrics=list(record.metrics))
        (batch.task_instance_updates if exists else batch.new_task_instances).append(
            record.instance)
        self.store.write(batch)

    def attempts_of(self, run_id: str, task_id: str, map_index: int) -> list[AttemptRecord]:
        rows: list[AttemptRecord] = self.store.get_attempts(run_id, task_id, map_index)
        return rows

    def renew(self, run_id: str, driver_id: str) -> bool:
        """Refresh the run's heartbeat (its steps share one driver id); True when someone
        asked to cancel the run."""
        self.store.renew_lease(run_id, driver_id)
        return run_id in self.store.cancel_requests([run_id])


class ObjectBook:
    """Records as JSON files in the artifact store, one per task instance."""

    kind = "artifact store"

    def __init__(self, root: str) -> None:
        from cadenza.artifacts.records import RecordFiles

        self.files = RecordFiles(root, RECORDS_DIR)

    def get_run(self, run_id: str) -> RunRecord | None:
        data = self.files.read(run_id, "run.json")
        return None if data is None else load_run(data)

    def ensure_run(self, run: RunRecord) -> RunRecord:
        found = self.get_run(run.run_id)
        if found is not None:
            return found
        self.files.write(run.run_id, "run.json", dump_run(run))
        return run

    def update_run(self, run: RunRecord) -> None:
        self.files.write(run.run_id, "run.json", dump_run(run))

    def steps(self, run_id: str) -> list[StepRecord]:
        return [load_step(data) for name, data in self.files.read_all(run_id).items()
                if name.startswith("ti-")]

    def instances(self, run_id: str) -> list[TaskInstanceRecord]:
        return [s.instance for s in self.steps(run_id)]

    def write(self, record: StepRecord, *, exists: bool) -> None:
        ti = record.instance
        if exists:  # a retried step keeps the attempts of the earlier ones
            old = self.files.read(ti.run_id, _name(ti))
            if old is not None:
                before = load_step(old)
                seen = {a.attempt for a in record.attempts}
                record = replace(record, attempts=[a for a in before.attempts
                                                   if a.attempt not in seen] + record.attempts,
                                 metrics=before.metrics + record.metrics)
        self.files.write(ti.run_id, _name(ti), dump_step(record))

    def attempts_of(self, run_id: str, task_id: str, map_index: int) -> list[AttemptRecord]:
        data = self.files.read(run_id, f"ti-{task_id}.{map_index}.json")
        return [] if data is None else load_step(data).attempts

    def renew(self, run_id: str, driver_id: str) -> bool:
        """No store to show liveness in or to ask for a cancel: nothing to do."""
        return False


def _name(ti: TaskInstanceRecord) -> str:
    return f"ti-{ti.task_id}.{ti.map_index}.json"


def open_book(settings: Settings) -> StoreBook | ObjectBook:
    """The metadata store when `CADENZA_DATABASE_URL` is set and answers, else the records
    next to the artifacts (with one warning saying why)."""
    url = os.environ.get("CADENZA_DATABASE_URL")
    if url:
        from cadenza.store import open_store

        try:
            store = open_store(settings.database_url)
            store.ping()
            return StoreBook(store)
        except CadenzaError as exc:
            log.warning("the metadata store %s cannot be reached (%s): recording this step "
                        "in the artifact store; load it later with `cadenza runs import`",
                        url.split("@")[-1], exc.message)
    return ObjectBook(settings.artifact_root)


def import_run(run_id: str, *, artifact_root: str, store: Any) -> tuple[RunRecord, int]:
    """Copy the records a compiled pipeline's steps left in the artifact store into `store`
    (the run, its task instances, attempts and metrics). Rows already there are replaced,
    so importing twice changes nothing. Returns (the run, how many task instances)."""
    book = ObjectBook(artifact_root)
    run = book.get_run(run_id)
    if run is None:
        raise RunNotFound(
            f"no records of run {run_id} under {artifact_root.rstrip('/')}/{RECORDS_DIR}/",
            hint="give the artifact root the pipeline's steps wrote to (--artifact-root "
            "s3://bucket/prefix) and the KFP run id the steps were given")
    steps = book.steps(run_id)
    try:
        existing = store.get_run(run_id)
    except RunNotFound:
        existing = None
    known: set[tuple[str, int]] = set()
    if existing is None:
        store.create_run(run, [])
    else:
        store.write(WriteBatch(run_updates=[run]))
        known = {(t.task_id, t.map_index) for t in store.get_task_instances(run_id)}
        had = {(a.task_id, a.map_index, a.attempt) for t in known
               for a in store.get_attempts(run_id, t[0], t[1])}
    batch = WriteBatch()
    for step in sorted(steps, key=lambda s: (s.instance.task_id, s.instance.map_index)):
        ti = step.instance
        key = (ti.task_id, ti.map_index)
        (batch.task_instance_updates if key in known else batch.new_task_instances).append(ti)
        for a in step.attempts:
            if existing is None or (a.task_id, a.map_index, a.attempt) not in had:
                batch.attempts.append(a)
        if key not in known:
            batch.metrics.extend(step.metrics)
    store.write(batch)
    return run, len(steps)


__all__ = ["ObjectBook", "StepRecord", "StoreBook", "import_run", "open_book"]
