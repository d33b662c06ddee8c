"""RunStore: the batched commands and the queries the engine and the surfaces need.

What belongs here: the public store API, prebuilt statements.
What does not: engine/pragma/schema set-up (`db.py`), row <-> record conversion (`codec.py`),
table definitions (`tables.py`),
decisions about states (the engine's `rules.py`; the store persists what it is handed).

Performance notes (`write()` is called once per scheduler step, usually with 1-3 rows):
- The DML is built once at import time and compiled once per engine (`dml.PreparedDml`);
  `write()` and `create_run()` run it with executemany on the pooled DBAPI connection, one
  transaction per call (see `dml.py` for why, with the measurement). Queries use Core.
- Records become parameter dicts through plain functions (no ORM unit of work, no
  pydantic), and rows become records by tuple unpacking.
- Run updates write the whole record, driver_id included (the engine releases a run by
  writing driver_id=None), but never move heartbeat_at backwards and never touch
  cancel_requested_at (another process may set it at any time: `request_cancel`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)

from cadenza.core import clock
from cadenza.core.errors import RunNotFound, StoreError, UsageError
from cadenza.core.records import (
    ArtifactRecord,
    AssetEventRecord,
    AttemptRecord,
    MetricRecord,
    PoolRecord,
    RunRecord,
    TaskInstanceRecord,
    WriteBatch,
)
from cadenza.core.states import RunState, TaskState
from cadenza.core.task_secrets import Secrets
from cadenza.store import lineage
from cadenza.store.codec import (
    attempt_from_row,
    attempt_params,
    metric_params,
    run_from_row,
    run_params,
    run_update_params,
    ti_from_row,
    ti_params,
    ti_update_params,
)
from cadenza.store.db import (
    READ_OPTION,
    create_store_engine,
    dialect_insert,
    ensure_schema,
    translated,
)
from cadenza.store.dml import PreparedDml, Step, Writer
from cadenza.store.failures import mask_url
from cadenza.store.opening import open_store  # noqa: F401 - its home before opening.py
from cadenza.store.tables import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    TI_COLUMNS,
    UTCDateTime,
    asset_events_table,
    attempts_table,
    metrics_table,
    pools_table,
    runs_table,
    task_instances_table,
)

log = logging.getLogger(__name__)

_runs = runs_table
_tis = task_instances_table
_attempts = attempts_table
_pools = pools_table
_metrics = metrics_table

_TI_PK = ("run_id", "task_id", "map_index")

# ---------------------------------------------------------------------------------------------
# Prebuilt statements


def _insert_all(table: Table, skip: tuple[str, ...] = ()) -> Insert:
    return table.insert().values(
        {c.name: bindparam(c.name) for c in table.columns if c.name not in skip}
    )


_INSERT_RUN = _insert_all(_runs)
# Whole record by run_id, except that heartbeat_at never moves backwards: the lease thread
# renews it while the driver's in-memory record still holds the time the run started, and
# writing that back would make a live driver's lease look expired to other claimers.
_HEARTBEAT = bindparam("hb_at", type_=UTCDateTime())
_UPDATE_RUN = (
    update(_runs)
    .where(_runs.c.run_id == bindparam("k_run_id"))
    .values(
        {
            **{
                c.name: bindparam(c.name)
                for c in _runs.columns
                if c.name not in ("run_id", "heartbeat_at", "cancel_requested_at")
            },
            "heartbeat_at": case(
                (
                    or_(_runs.c.heartbeat_at.is_(None), _runs.c.heartbeat_at < _HEARTBEAT),
                    _HEARTBEAT,
                ),
                else_=_runs.c.heartbeat_at,
            ),
        }
    )
)
_INSERT_TI = _insert_all(_tis)
_UPDATE_TI = (
    update(_tis)
    .where(
        _tis.c.run_id == bindparam("k_run_id"),
        _tis.c.task_id == bindparam("k_task_id"),
        _tis.c.map_index == bindparam("k_map_index"),
    )
    .values({c.name: bindparam(c.name) for c in _tis.columns if c.name not in _TI_PK})
)
_INSERT_ATTEMPT = _insert_all(_attempts)
_INSERT_METRIC = _insert_all(_metrics, skip=("id",))

_SELECT_RUN = select(*RUN_COLUMNS).where(_runs.c.run_id == bindparam("run_id"))
_SELECT_TIS = (
    select(*TI_COLUMNS)
    .where(_tis.c.run_id == bindparam("run_id"))
    .order_by(_tis.c.task_id, _tis.c.map_index)
)
_SELECT_TI = select(*TI_COLUMNS).where(
    _tis.c.run_id == bindparam("run_id"),
    _tis.c.task_id == bindparam("task_id"),
    _tis.c.map_index == bindparam("map_index"),
)
_RUN_EXISTS = select(_runs.c.run_id).where(_runs.c.run_id == bindparam("run_id"))
_FINAL_RUN_STATES = tuple(s.value for s in RunState if s.is_final)
# Polled by every driving process's heartbeat thread (engine/lease.py): built once.
_SELECT_CANCEL_REQUESTS = select(_runs.c.run_id).where(
    _runs.c.run_id.in_(bindparam("run_ids", expanding=True)),
    _runs.c.cancel_requested_at.is_not(None),
)

_POOL_COLUMNS = (_pools.c.name, _pools.c.slots, _pools.c.description)
_SELECT_POOL = select(*_POOL_COLUMNS).where(_pools.c.name == bindparam("name"))
_LIST_POOLS = select(*_POOL_COLUMNS).order_by(_pools.c.name)
# Every driving process's heartbeat thread renews its runs' leases with this (engine/lease.py).
_RENEW_LEASE = (
    update(_runs)
    .where(_runs.c.run_id == bindparam("k_run_id"), _runs.c.driver_id == bindparam("k_driver_id"))
    .values(heartbeat_at=bindparam("heartbeat_at"))
)


def ensure_pool_insert(dialect: str) -> Insert:
    """INSERT a pool (name, slots, description) unless one by that name exists."""
    ins: Insert = (
        dialect_insert(dialect, _pools)
        .values(name=bindparam("name"), slots=bindparam("slots"),
                description=bindparam("description"))
        .on_conflict_do_nothing(index_elements=[_pools.c.name])
    )
    return ins


def find_cached_query(*, not_before: bool) -> Select[Any]:
    """`RunStore.find_cached`'s query: parameters cache_key, state (success) and, with
    `not_before`, not_before."""
    t = _tis.c
    q = select(*TI_COLUMNS).where(
        t.cache_key == bindparam("cache_key"),
        t.state == bindparam("state", type_=t.state.type),
        t.ended_at.is_not(None),
    )
    if not_before:
        q = q.where(t.ended_at >= bindparam("not_before", type_=t.ended_at.type))
    # Newest run first (run ids sort by creation time): the order of the cache-key index, so
    # the lookup stops at the first success of the newest run instead of sorting them all.
    return q.order_by(t.run_id.desc()).limit(1)


_FIND_CACHED = find_cached_query(not_before=False)
_FIND_CACHED_NOT_BEFORE = find_cached_query(not_before=True)


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


def _check_slots(name: str, slots: int) -> None:
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
        raise UsageError(
            f"pool '{name}': slots must be a whole number >= 0, got {slots!r}",
            hint="give the pool a whole number of slots, 0 or more (0 pauses the pool)",
        )


class RunStore:
    """The metadata store: runs, task instances, attempts, pools, metrics, artifact lineage
    and asset versions.

    Get one with `open_store()`; it is shared by every thread of a process. All methods take
    and return the records of `cadenza.core.records`. Every SQLAlchemy error is re-raised as
    `StoreError` naming the (password-masked) URL and a fix.

    Example:
        >>> store = open_store("sqlite:////tmp/cadenza.db")
        >>> run = RunRecord(run_id="r1", pipeline="training", state=RunState.QUEUED,
        ...                 created_at=clock.now())
        >>> store.create_run(run, [TaskInstanceRecord(run_id="r1", task_id="train")])
        >>> store.get_run("r1").state
        <RunState.QUEUED: 'queued'>
    """

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self._engine = engine
        self._read_engine = engine.execution_options(**{READ_OPTION: True})
        self._dialect = engine.dialect.name
        self._insert_run = PreparedDml(_INSERT_RUN, engine, "runs")
        self._update_run = PreparedDml(_UPDATE_RUN, engine, "runs")
        self._insert_ti = PreparedDml(_INSERT_TI, engine, "task instances")
        self._update_ti = PreparedDml(_UPDATE_TI, engine, "task instances")
        self._insert_attempt = PreparedDml(_INSERT_ATTEMPT, engine, "attempts")
        self._insert_metric = PreparedDml(_INSERT_METRIC, engine, "metrics")
        self._lineage = lineage.LineageDml(engine)
        self._writer = Writer(engine, url)

    def __repr__(self) -> str:
        return f"RunStore({mask_url(self.url)!r})"

    # -- writes -----------------------------------------------------------------------------

    def create_run(self, run: RunRecord, task_instances: list[TaskInstanceRecord]) -> None:
        """Insert a run and its task instances in one transaction."""
        steps: list[Step] = [(self._insert_run, [run_params(run)], False)]
        if task_instances:
            steps.append((self._insert_ti, [ti_params(t) for t in task_instances], False))
        self._writer.run(steps, "creating a run")

    def write(self, batch: WriteBatch, *, meanwhile: Callable[[], object] | None = None
              ) -> None:
        """Write everything one engine step changed, in ONE transaction.

        Order: new runs, run updates, new task instances, task instance updates, attempts,
        metrics, artifacts (with their input edges), asset events; each kind is one
        executemany of a prebuilt statement (see `dml.py` for why it runs on the DBAPI
        cursor). Updates replace the whole record by primary key (a run's heartbeat_at only
        ever moves forward). Updating a row that does not exist is a bug in the caller: the
        transaction is rolled back and StoreError raised. With `batch.fence` (run_id,
        driver_id) nothing is written unless the run's row names that driver, read in the
        same transaction: RunTakenOver.

        An artifact already recorded keeps its first producer (the new record is ignored).
        Asset events get their `version` here: the asset's previous newest version + 1, in
        this transaction, correct with concurrent writers (see `store/lineage.py`). Asset
        events come last so PostgreSQL holds an asset's lock for as short a time as possible.

        Example:
            >>> store.write(WriteBatch(
            ...     task_instance_updates=[replace(ti, state=TaskState.RUNNING, attempt=1)],
            ...     attempts=[AttemptRecord(run_id=ti.run_id, task_id=ti.task_id,
            ...                             map_index=-1, attempt=1, state=TaskState.RUNNING,
            ...                             started_at=clock.now(), ended_at=None)],
            ... ))

        `meanwhile`: a call to make, at most once, while the commit is on its way (on
        PostgreSQL, between sending it and reading the answer; on SQLite before it), for a
        caller with work that does not depend on the commit's outcome (the driver admits and
        builds its next calls). It may not be called at all (an empty batch, an error).
        """
        if not batch:
            return
        try:
            self._writer.run(self._steps(batch), "writing a batch",
                             synchronous=batch.synchronous, meanwhile=meanwhile,
                             fence=batch.fence)
        except StoreError:
            if not self._writer.lost or not self._write_again(batch):
                raise

    def _steps(self, batch: WriteBatch) -> list[Step]:
        """The statements of `write(batch)`, with their parameters (built anew each time:
        a write consumes them)."""
        steps: list[Step] = []
        if batch.new_runs:
            steps.append((self._insert_run, [run_params(r) for r in batch.new_runs], False))
        if batch.run_updates:
            steps.append(
                (self._update_run, [run_update_params(r) for r in batch.run_updates], True)
            )
        if batch.new_task_instances:
            steps.append(
                (self._insert_ti, [ti_params(t) for t in batch.new_task_instances], False)
            )
        if batch.task_instance_updates:
            steps.append(
                (
                    self._update_ti,
                    [ti_update_params(t) for t in batch.task_instance_updates],
                    True,
                )
            )
        if batch.attempts:
            steps.append(
                (self._insert_attempt, [attempt_params(a) for a in batch.attempts], False)
            )
        if batch.metrics:
            steps.append((self._insert_metric, [metric_params(m) for m in batch.metrics], False))
        if batch.artifacts or batch.asset_events:
            steps.extend(self._lineage.steps(batch.artifacts, batch.asset_events, clock.now()))
        return steps

    def _write_again(self, batch: WriteBatch) -> bool:
        """The connection was lost during `batch`'s commit (store/lost_commit.py): True once
        the batch is known written (it had landed, or it was written again on a new
        connection); False when that cannot be known safely (the caller raises)."""
        from cadenza.store import lost_commit

        query = lost_commit.probe(batch)
        if query is None and not lost_commit.idempotent(batch):
            return False
        if query is not None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                with self._engine.connect() as conn:
                    landed = bool(conn.execute(query).scalar())
            except SQLAlchemyError:
                return False  # the database is still out of reach: the caller raises
            if landed:
                log.warning("metadata store: the connection was lost during a commit, "
                            "which had landed")
                return True
        log.warning("metadata store: the connection was lost during a commit, which had not "
                    "landed; writing it again on a new connection")
        self._writer.run(self._steps(batch), "writing a batch again", synchronous=True,
                         fence=batch.fence)
        return True

    @translated("deleting a run")
    def delete_run(self, run_id: str) -> None:
        """Delete a run with its task instances, attempts, metrics and asset events.

        RunNotFound if absent. The lineage of artifacts it produced is kept: an artifact
        outlives its run (the bytes stay in the artifact store, and other runs may use them).
        """
        with self._engine.begin() as conn:
            conn.execute(delete(asset_events_table).where(asset_events_table.c.run_id == run_id))
            conn.execute(delete(_metrics).where(_metrics.c.run_id == run_id))
            conn.execute(delete(_attempts).where(_attempts.c.run_id == run_id))
            conn.execute(delete(_tis).where(_tis.c.run_id == run_id))
            if conn.execute(delete(_runs).where(_runs.c.run_id == run_id)).rowcount == 0:
                raise _run_not_found(run_id)

    # -- runs ---------------------------------------------------------------------------------

    @translated("reading a run")
    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id; RunNotFound if there is none."""
        with self._read_engine.connect() as conn:
            row = conn.execute(_SELECT_RUN, {"run_id": run_id}).first()
        if row is None:
            raise _run_not_found(run_id)
        return run_from_row(row)

    @translated("looking up a run id")
    def resolve_run_id(self, prefix: str) -> str:
        """The one run id starting with `prefix` (an exact id always wins).

        RunNotFound if none matches; UsageError listing candidates if several do.
        """
        if not prefix:
            raise UsageError("empty run id", hint="list run ids with `cadenza runs list`")
        with self._read_engine.connect() as conn:
            if conn.execute(_RUN_EXISTS, {"run_id": prefix}).first() is not None:
                return prefix
            # LIKE alone is case-insensitive on SQLite; substr() makes the match exact.
            found = list(
                conn.scalars(
                    select(_runs.c.run_id)
                    .where(
                        _runs.c.run_id.startswith(prefix, autoescape=True),
                        func.substr(_runs.c.run_id, 1, len(prefix)) == prefix,
                    )
                    .order_by(_runs.c.run_id)
                    .limit(6)
                )
            )
        if not found:
            raise _run_not_found(prefix)
        if len(found) > 1:
            more = ", ..." if len(found) > 5 else ""
            raise UsageError(
                f"run id prefix '{prefix}' is ambiguous: it matches {', '.join(found[:5])}{more}",
                hint="type more characters of the run id (see `cadenza runs list`)",
            )
        return str(found[0])

    @translated("listing runs")
    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        state: RunState | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first (by created_at, then run id), optionally filtered."""
        q = select(*RUN_COLUMNS)
        if pipeline is not None:
            q = q.where(_runs.c.pipeline == pipeline)
        if state is not None:
            q = q.where(_runs.c.state == RunState(state).value)
        q = q.order_by(_runs.c.created_at.desc(), _runs.c.run_id.desc()).limit(limit).offset(offset)
        with self._read_engine.connect() as conn:
            return [run_from_row(r) for r in conn.execute(q)]

    # -- task instances, attempts, metrics -----------------------------------------------------

    @translated("reading task instances")
    def get_task_instances(self, run_id: str) -> list[TaskInstanceRecord]:
        """The run's task instances, ordered by task id then map index."""
        with self._read_engine.connect() as conn:
            return [ti_from_row(r) for r in conn.execute(_SELECT_TIS, {"run_id": run_id})]

    @translated("reading a task instance")
    def get_task_instance(
        self, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskInstanceRecord | None:
        with self._read_engine.connect() as conn:
            row = conn.execute(
                _SELECT_TI, {"run_id": run_id, "task_id": task_id, "map_index": map_index}
            ).first()
        return None if row is None else ti_from_row(row)

    @translated("reading attempts")
    def get_attempts(
        self, run_id: str, task_id: str | None = None, map_index: int | None = None
    ) -> list[AttemptRecord]:
        """Attempts of a run, optionally of one task (and map index), in order."""
        q = select(*ATTEMPT_COLUMNS).where(_attempts.c.run_id == run_id)
        if task_id is not None:
            q = q.where(_attempts.c.task_id == task_id)
        if map_index is not None:
            q = q.where(_attempts.c.map_index == map_index)
        q = q.order_by(_attempts.c.task_id, _attempts.c.map_index, _attempts.c.attempt)
        with self._read_engine.connect() as conn:
            return [attempt_from_row(r) for r in conn.execute(q)]

    @translated("reading metrics")
    def get_metrics(self, run_id: str) -> list[MetricRecord]:
        """The run's metrics and params, in the order they were written."""
        m = _metrics
        q = (
            select(
                m.c.run_id,
                m.c.task_id,
                m.c.map_index,
                m.c.attempt,
                m.c.name,
                m.c.kind,
                m.c.value_num,
                m.c.value_text,
                m.c.at,
            )
            .where(m.c.run_id == run_id)
            .order_by(m.c.id)
        )
        with self._read_engine.connect() as conn:
            return [
                MetricRecord(
                    run_id=r[0],
                    task_id=r[1],
                    map_index=r[2],
                    attempt=r[3],
                    name=r[4],
                    kind=r[5],
                    value=r[6] if r[7] is None else r[7],
                    at=r[8],
                )
                for r in conn.execute(q)
            ]

    @translated("looking up the cache")
    def find_cached(
        self, cache_key: str, *, not_before: datetime | None = None
    ) -> TaskInstanceRecord | None:
        """The newest successful task instance (any run) with this cache key.

        Newest by run (run ids sort by creation); with `not_before`, only those that ended at
        or after it.
        """
        params: dict[str, Any] = {"cache_key": cache_key, "state": TaskState.SUCCESS.value}
        if not_before is None:
            q = _FIND_CACHED
        else:
            q, params["not_before"] = _FIND_CACHED_NOT_BEFORE, not_before
        with self._read_engine.connect() as conn:
            row = conn.execute(q, params).first()
        return None if row is None else ti_from_row(row)

    @translated("reading the latest task instance")
    def latest_task_instance(
        self,
        pipeline: str,
        task_id: str,
        *,
        with_cache_detail: bool = True,
        map_index: int | None = None,
        successful: bool = False,
    ) -> TaskInstanceRecord | None:
        """The task instance of `task_id` in the newest run of `pipeline` that has one.

        With `with_cache_detail` (the default), only instances whose cache key parts were
        recorded count; with `map_index`, only that instance (otherwise the lowest map index
        of the newest run); with `successful`, only `success` or `cached` ones. What
        `cadenza plan` compares a new cache key with to explain a miss.
        """
        t = _tis.c
        q = (
            select(*TI_COLUMNS)
            .join(_runs, _runs.c.run_id == t.run_id)
            .where(_runs.c.pipeline == pipeline, t.task_id == task_id)
        )
        if with_cache_detail:
            q = q.where(t.cache_detail.is_not(None))
        if map_index is not None:
            q = q.where(t.map_index == map_index)
        if successful:
            q = q.where(t.state.in_((TaskState.SUCCESS.value, TaskState.CACHED.value)))
        q = q.order_by(_runs.c.created_at.desc(), _runs.c.run_id.desc(), t.map_index).limit(1)
        with self._read_engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else ti_from_row(row)

    # -- lineage and assets ---------------------------------------------------------------------

    @translated("reading an artifact")
    def get_artifact(self, sha_or_prefix: str) -> ArtifactRecord:
        """The lineage record of an artifact, by SHA-256 or a unique prefix of it.

        ArtifactNotFound if none matches; UsageError listing candidates if several do.

        Example:
            >>> store.get_artifact("3f2a9c").task_id
            'train'
        """
        with self._read_engine.connect() as conn:
            return lineage.get_artifact(conn, sha_or_prefix)

    @translated("reading artifacts")
    def get_artifacts(self, sha256s: Sequence[str]) -> dict[str, ArtifactRecord]:
        """Lineage records of these exact SHA-256s (those not recorded are left out)."""
        with self._read_engine.connect() as conn:
            return lineage.get_artifacts(conn, sha256s)

    @translated("reading artifacts")
    def artifacts_produced_by(
        self, run_id: str, task_id: str | None = None
    ) -> list[ArtifactRecord]:
        """Artifacts whose recorded (first) producer is this run (and task), in task and map
        index order. An output that earlier bytes already had is credited to the earlier run."""
        with self._read_engine.connect() as conn:
            return lineage.artifacts_produced_by(conn, run_id, task_id)

    @translated("reading artifact consumers")
    def consumers_of(self, sha256: str, *, limit: int | None = None) -> list[ArtifactRecord]:
        """Artifacts computed from this one (that list it among their inputs), oldest first."""
        with self._read_engine.connect() as conn:
            return lineage.consumers_of(conn, sha256, limit)

    @translated("listing asset events")
    def list_asset_events(self, asset: str, *, limit: int = 50) -> list[AssetEventRecord]:
        """Versions of an asset, newest first."""
        with self._read_engine.connect() as conn:
            return lineage.list_asset_events(conn, asset, limit)

    @translated("reading an asset version")
    def get_asset_event(self, asset: str, version: int) -> AssetEventRecord | None:
        """One version of an asset, or None."""
        with self._read_engine.connect() as conn:
            return lineage.get_asset_event(conn, asset, version)

    @translated("reading an asset version")
    def latest_asset_version(self, asset: str) -> AssetEventRecord | None:
        """The newest version of an asset, or None if it has none yet."""
        with self._read_engine.connect() as conn:
            events = lineage.list_asset_events(conn, asset, 1)
        return events[0] if events else None

    @translated("listing assets")
    def asset_names(self) -> list[str]:
        """Every asset with at least one version, sorted."""
        with self._read_engine.connect() as conn:
            return lineage.asset_names(conn)

    # -- pools ----------------------------------------------------------------------------------

    @translated("listing pools")
    def list_pools(self) -> list[PoolRecord]:
        with self._read_engine.connect() as conn:
            return [PoolRecord(name=n, slots=s, description=d)
                    for n, s, d in conn.execute(_LIST_POOLS)]

    @translated("reading a pool")
    def get_pool(self, name: str) -> PoolRecord | None:
        with self._read_engine.connect() as conn:
            return self._get_pool(conn, name)

    @staticmethod
    def _get_pool(conn: Connection, name: str) -> PoolRecord | None:
        row = conn.execute(_SELECT_POOL, {"name": name}).first()
        return None if row is None else PoolRecord(name=row[0], slots=row[1], description=row[2])

    def _insert_pool(self) -> Any:
        return dialect_insert(self._dialect, _pools)

    @translated("setting a pool")
    def set_pool(self, name: str, slots: int, description: str = "") -> PoolRecord:
        """Create or replace a pool. `slots` must be >= 0 (0 pauses the pool)."""
        _check_slots(name, slots)
        ins = self._insert_pool().values(name=name, slots=slots, description=description)
        ins = ins.on_conflict_do_update(
            index_elements=[_pools.c.name],
            set_={"slots": ins.excluded.slots, "description": ins.excluded.description},
        )
        with self._engine.begin() as conn:
            conn.execute(ins)
        return PoolRecord(name=name, slots=slots, description=description)

    @translated("creating a pool")
    def ensure_pool(self, name: str, slots: int) -> PoolRecord:
        """Create the pool if it is missing; otherwise return it unchanged."""
        _check_slots(name, slots)
        with self._engine.begin() as conn:
            conn.execute(ensure_pool_insert(self._dialect),
                         {"name": name, "slots": slots, "description": ""})
            pool = self._get_pool(conn, name)
        assert pool is not None  # inserted or already there, in this transaction
        return pool

    def load_secrets(self, key: bytes | None | Callable[[], bytes | None],
                     names: Sequence[str] | None = None) -> Secrets:
        """The stored secrets, decrypted: `SecurityStore.load_secrets` (what a run hands its
        tasks; with no secrets stored, `key` is not read)."""
        from cadenza.store.security import security_store

        return security_store(self).load_secrets(key, names)

    # -- driver leases --------------------------------------------------------------------------

    @translated("claiming a run")
    def claim_run(
        self,
        run_id: str,
        driver_id: str,
        *,
        lease_s: float,
        expected_driver: str | None | _Unset = _UNSET,
        clear_cancel: bool = False,
    ) -> bool:
        """Make `driver_id` the run's driver; True if it now holds the run.

        The claim succeeds when the run has no driver, is already ours, or its holder's
        heartbeat is `lease_s` seconds old or older. With `expected_driver` (None meaning "no
        driver"), it also requires the run's driver to still be that one (or us): resume
        passes the driver it saw dead, so two resumes racing cannot both take over.

        One conditional UPDATE, so of two concurrent claimers exactly one wins. Sets
        heartbeat_at to now. RunNotFound if the run does not exist. `clear_cancel` (resume:
        the user wants the run to go on) also forgets a cancel request.
        """
        now = clock.now()
        r = _runs.c
        cond = [
            r.run_id == run_id,
            or_(
                r.driver_id.is_(None),
                r.driver_id == driver_id,
                r.heartbeat_at.is_(None),
                r.heartbeat_at <= now - timedelta(seconds=lease_s),
            ),
        ]
        if not isinstance(expected_driver, _Unset):
            seen = (
                r.driver_id.is_(None) if expected_driver is None else r.driver_id == expected_driver
            )
            cond.append(or_(seen, r.driver_id == driver_id))
        values: dict[str, Any] = {"driver_id": driver_id, "heartbeat_at": now}
        if clear_cancel:
            values["cancel_requested_at"] = None
        stmt = update(_runs).where(*cond).values(values)
        with self._engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return True
            if conn.execute(_RUN_EXISTS, {"run_id": run_id}).first() is None:
                raise _run_not_found(run_id)
        return False

    @translated("renewing a run lease")
    def renew_lease(self, run_id: str, driver_id: str) -> bool:
        """Refresh the heartbeat; False if the run is no longer ours (another driver took it)."""
        params = {"k_run_id": run_id, "k_driver_id": driver_id, "heartbeat_at": clock.now()}
        with self._engine.begin() as conn:
            return bool(conn.execute(_RENEW_LEASE, params).rowcount == 1)

    @translated("releasing a run")
    def release_run(self, run_id: str, driver_id: str) -> None:
        """Give the run up if we still hold it (a no-op otherwise)."""
        stmt = (
            update(_runs)
            .where(and_(_runs.c.run_id == run_id, _runs.c.driver_id == driver_id))
            .values(driver_id=None)
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    @translated("requeueing a run")
    def requeue_run(self, run: RunRecord, *, expected: RunState) -> bool:
        """Write `run` (the engine's requeued record: state queued, no driver) over the
        stored run if that is still in state `expected` (a final one); True if it was.

        One conditional UPDATE, so of two concurrent retries of one run exactly one wins.
        Clears heartbeat_at and cancel_requested_at: a cancel asked of the run's previous
        life must not stop the new one. RunNotFound if there is no such run.
        """
        r = _runs.c
        values = run_update_params(run)
        values.pop("k_run_id", None)
        values.pop("hb_at", None)
        values.update(heartbeat_at=None, cancel_requested_at=None)
        stmt = (update(_runs)
                .where(r.run_id == run.run_id, r.state == RunState(expected).value)
                .values(**values))
        with self._engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return True
            if conn.execute(_RUN_EXISTS, {"run_id": run.run_id}).first() is None:
                raise _run_not_found(run.run_id)
        return False

    # -- cancel requests ------------------------------------------------------------------------

    @translated("requesting a cancel")
    def request_cancel(self, run_id: str) -> bool:
        """Record that someone asked to cancel the run; True if the run is unfinished.

        Any process may call it (the CLI, the API). It changes no state: the run's driver
        sees the request (`cancel_requests`, polled by its heartbeat thread) and cancels
        through the engine. A second request keeps the first one's time. False, changing
        nothing, when the run has already ended; RunNotFound when there is no such run.
        """
        r = _runs.c
        stmt = (
            update(_runs)
            .where(r.run_id == run_id, r.state.not_in(_FINAL_RUN_STATES),
                   r.cancel_requested_at.is_(None))
            .values(cancel_requested_at=clock.now())
        )
        with self._engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return True
            row = conn.execute(select(r.state).where(r.run_id == run_id)).first()
        if row is None:
            raise _run_not_found(run_id)
        return not RunState(row[0]).is_final

    @translated("reading cancel requests")
    def cancel_requests(self, run_ids: Sequence[str]) -> set[str]:
        """Which of `run_ids` someone asked to cancel (one indexed read; no write lock)."""
        if not run_ids:
            return set()
        with self._read_engine.connect() as conn:
            return {str(v) for v in conn.scalars(_SELECT_CANCEL_REQUESTS,
                                                 {"run_ids": list(run_ids)})}

    # -- lifecycle ------------------------------------------------------------------------------

    @translated("reaching the store")
    def ping(self) -> None:
        """Round-trip to the database (what a server's /readyz asks); StoreError if it
        does not answer."""
        with self._read_engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close pooled connections and forget this store in the process cache.

        A later `open_store()` with the same URL builds a new one.
        """
        from cadenza.store.opening import store_cache

        store_cache.discard(self.url, self)
        self._writer.close()
        self._engine.dispose()


def _run_not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run with id '{run_id}'", hint="list run ids with `cadenza runs list`")


def build_run_store(url: str) -> RunStore:
    """A new RunStore on `url`, its schema made current (`open_store` caches it)."""
    engine = create_store_engine(url)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return RunStore(url, engine)
