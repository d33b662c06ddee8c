"""Plain records shared by the engine, the store, the executors and the surfaces.

The store takes and returns these (never ORM rows, never graph objects). Frozen, slotted,
keyword-only: cheap to build on the hot path and picklable across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from cadenza.core.frozen import fast_init
from cadenza.core.results import ErrorInfo, ErrorKind, ValueRef
from cadenza.core.states import RunState, TaskState

# ValueRef, ErrorKind and ErrorInfo live in core/results.py (what a worker process imports
# without the rest of these records) and are re-exported here.
__all__ = [
    "RERUN", "TASK_ORDER", "ArtifactRecord", "AssetEventRecord", "AssetSummary",
    "AttemptRecord", "ErrorInfo", "ErrorKind", "MetricRecord", "PoolRecord", "RunRecord",
    "Slice", "TaskInstanceRecord", "ValueRef", "WriteBatch",
]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    run_id: str
    pipeline: str
    state: RunState
    params: dict[str, Any] = field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    executor: str = ""
    trigger: str = "manual"  # manual | schedule | backfill | event | asset | test
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    source: str = ""  # "path/to/file.py:pipeline" so a run can be resumed from the CLI
    driver_id: str | None = None
    heartbeat_at: datetime | None = None
    error: str | None = None
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # When someone asked to cancel the run (`cadenza runs cancel`). Written only by
    # RunStore.request_cancel / claim_run(clear_cancel=True): run updates never touch it.
    cancel_requested_at: datetime | None = None

    @property
    def task_order(self) -> list[str]:
        """The pipeline's task ids in graph order (upstreams first), as recorded when the
        run was created; empty for runs recorded before it was."""
        return list(self.extra.get(TASK_ORDER, ()))


# Key of RunRecord.extra holding the task ids in graph order (engine.api.new_run writes it).
TASK_ORDER = "task_order"
# Key of RunRecord.extra on a run requeued by a retry or resume (engine/rerun.py): {"tasks":
# [task ids to run again]} or {"tasks": None} (everything not finished well, as resume does).
# The driver that claims the run replays its rows with it and drops the key.
RERUN = "rerun"


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInstanceRecord:
    """One task instance: run id + task id + map index (-1 when not mapped).

    A mapped task has a summary row at map index -1 whose `map_count` says how many
    instances it expanded to; its state summarises theirs.
    """

    run_id: str
    task_id: str
    map_index: int = -1
    state: TaskState = TaskState.PENDING
    attempt: int = 0  # attempts started so far
    pool: str = "default"
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    next_retry_at: datetime | None = None
    output: ValueRef | None = None
    error: ErrorInfo | None = None
    cache_key: str | None = None
    cache_origin: dict[str, Any] | None = None
    worker: str | None = None
    map_count: int | None = None
    reason: str = ""
    # What the cache key was made of (fingerprint, functions, version, input digests), so
    # `cadenza plan` can say why a later run would miss the cache.
    cache_detail: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.map_index)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    state: TaskState  # success | failed | up_for_retry | cancelled | ...
    started_at: datetime | None
    ended_at: datetime | None
    worker: str | None = None
    error: ErrorInfo | None = None
    log_path: str | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PoolRecord:
    name: str
    slots: int
    description: str = ""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRecord:
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    name: str
    value: float | str
    kind: str = "metric"  # metric | param
    at: datetime | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRecord:
    """Lineage of one artifact: the task instance that produced it and what it read."""

    sha256: str
    uri: str
    size: int | None
    serializer: str | None
    type_name: str | None
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    code_fingerprint: str | None
    input_sha256s: tuple[str, ...] = ()
    created_at: datetime | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AssetEventRecord:
    """A new version of an asset: a successful instance of a task with it in `outlets`.

    `version` is assigned by the store (1, 2, ... per asset) when the event is written."""

    asset: str
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    artifact_sha256: str | None = None
    created_at: datetime | None = None
    version: int | None = None


@dataclass(slots=True, kw_only=True)
class WriteBatch:
    """Everything one engine step changed, written by the store in one transaction.

    `synchronous=False` lets the commit return before the database has flushed it to disk
    (PostgreSQL: `synchronous_commit = off` for this transaction; SQLite in WAL with
    synchronous=NORMAL never waits for the disk at commit anyway). Such a commit is atomic,
    visible to every reader at once, and kept through any crash of the writing process
    (kill -9); only a crash of the database server or its machine within ~0.6 s can undo
    it, together with every later transaction (the WAL is replayed as a prefix, so nothing
    that depended on it survives without it). The next synchronous commit on the server
    flushes it. The engine uses it only for batches it may re-run after a crash anyway
    (see `RunDriver._should_flush`)."""

    new_runs: list[RunRecord] = field(default_factory=list)
    run_updates: list[RunRecord] = field(default_factory=list)
    new_task_instances: list[TaskInstanceRecord] = field(default_factory=list)
    task_instance_updates: list[TaskInstanceRecord] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    metrics: list[MetricRecord] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    asset_events: list[AssetEventRecord] = field(default_factory=list)
    synchronous: bool = True
    # (run_id, driver_id): the batch lands only if the run's row still names this driver,
    # checked in the batch's own transaction (RunTakenOver otherwise): a driver stopped
    # (SIGSTOP, a VM pause) past its lease while another took the run over must not write.
    fence: tuple[str, str] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.new_runs
            or self.run_updates
            or self.new_task_instances
            or self.task_instance_updates
            or self.attempts
            or self.metrics
            or self.artifacts
            or self.asset_events
        )


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Slice(Generic[_T]):
    """One page of a keyset-paginated list (store/browse.py): the items, and the sort key
    after which the next page starts (None: this is the last page)."""

    items: list[_T]
    after: tuple[Any, ...] | None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AssetSummary:
    """An asset with at least one version: how many, the newest, and when it was made."""

    name: str
    latest_version: int
    versions: int
    updated_at: datetime | None
