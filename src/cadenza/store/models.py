"""The metadata store's tables, as SQLAlchemy 2 `Mapped[...]` classes named `*Row`.

Data only: no behaviour, no conversion to records (that is `runs.py`), no engine setup (that
is `db.py`). `*Row` classes never leave `cadenza.store`; the rest of Cadenza sees the core
dataclasses in `cadenza.core.records`.

`SCHEMA_REVISION` must always equal the newest Alembic revision in `migrations/versions/`
(a unit test checks it). When you change a table here, add a migration and bump it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The newest Alembic revision. Opening a database whose alembic_version row equals this
# does no migration work at all (see db.ensure_schema).
SCHEMA_REVISION = "0003"

# Alembic's own version table, as Alembic creates it, so that a schema made by
# `create_all` is indistinguishable from one made by `alembic upgrade head`.
VERSION_TABLE = "alembic_version"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """UTC-aware datetimes in and out, on every backend.

    PostgreSQL stores `timestamptz`. SQLite has no time zones, so the value is stored as naive
    UTC text and made aware again on the way out. A naive datetime going in is a bug in the
    caller (the engine only uses `core.clock.now()`), so it is refused rather than guessed at.

    On SQLite the conversion to and from text is done here in one step, in exactly the format
    SQLAlchemy's SQLite DATETIME uses ('YYYY-MM-DD HH:MM:SS.ffffff'): going through
    `process_bind_param` and then DATETIME's own %-formatting cost ~4x more per value, and a
    task instance row carries four datetimes (measured with cProfile on `RunStore.write`).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_bind
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_result
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        tz = value.tzinfo
        if tz is None:
            raise ValueError(f"naive datetime {value!r}: the store needs UTC-aware datetimes")
        return value if tz is UTC else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        tz = value.tzinfo
        if tz is None:
            return value.replace(tzinfo=UTC)
        return value if tz is UTC else value.astimezone(UTC)


def _sqlite_bind(value: datetime | None) -> str | None:
    if value is None:
        return None
    tz = value.tzinfo
    if tz is None:
        raise ValueError(f"naive datetime {value!r}: the store needs UTC-aware datetimes")
    if tz is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_result(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# Tables keyed by text columns are WITHOUT ROWID on SQLite: one b-tree instead of a rowid table
# plus a primary-key index, so a task instance update and an attempt insert dirty fewer pages
# (~130 -> ~105 us per commit of one of each, measured with plain sqlite3 on the CI VM).
_CLUSTERED = {"sqlite_with_rowid": False}

class _JSONDoc(TypeDecorator[Any]):
    """JSON documents; JSONB on PostgreSQL. A Python None is stored as SQL NULL, not JSON
    'null'. The PostgreSQL type is looked up only on PostgreSQL: importing its dialect
    costs ~80 ms of every cold start on SQLite (measured with -X importtime)."""

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))


JSONDoc = _JSONDoc()
# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it once, at class creation
        datetime: UTCDateTime(),
        str: String(),
        dict[str, Any]: JSONDoc,
        list[str]: JSONDoc,
    }


class RunRow(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    pipeline: Mapped[str]
    state: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    executor: Mapped[str]
    trigger: Mapped[str]
    logical_date: Mapped[datetime | None]
    data_interval_start: Mapped[datetime | None]
    data_interval_end: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(Text)
    driver_id: Mapped[str | None]
    heartbeat_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]]
    extra: Mapped[dict[str, Any]]

    __table_args__ = (
        PrimaryKeyConstraint("run_id"),
        Index(None, "created_at"),
        Index(None, "pipeline", "created_at"),
        Index(None, "state", "created_at"),
        _CLUSTERED,
    )


class TaskInstanceRow(Base):
    __tablename__ = "task_instances"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    task_id: Mapped[str] = mapped_column(primary_key=True)
    map_index: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int]
    pool: Mapped[str]
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    next_retry_at: Mapped[datetime | None]
    output: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    cache_key: Mapped[str | None]
    cache_origin: Mapped[dict[str, Any] | None]
    worker: Mapped[str | None]
    map_count: Mapped[int | None]
    reason: Mapped[str] = mapped_column(Text)
    # The parts of cache_key (fingerprint, functions, version, inputs): `cadenza plan` compares
    # them to say why a key changed. Last column: added by revision 0002.
    cache_detail: Mapped[dict[str, Any] | None]

    __table_args__ = (
        PrimaryKeyConstraint("run_id", "task_id", "map_index"),
        ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        # find_cached: newest success for a cache key.
        Index(None, "cache_key", "state", "ended_at"),
        _CLUSTERED,
    )


class AttemptRow(Base):
    __tablename__ = "attempts"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    task_id: Mapped[str] = mapped_column(primary_key=True)
    map_index: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    attempt: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    worker: Mapped[str | None]
    error: Mapped[dict[str, Any] | None]
    log_path: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        PrimaryKeyConstraint("run_id", "task_id", "map_index", "attempt"),
        ForeignKeyConstraint(
            ["run_id", "task_id", "map_index"],
            [
                "task_instances.run_id",
                "task_instances.task_id",
                "task_instances.map_index",
            ],
            ondelete="CASCADE",
        ),
        _CLUSTERED,
    )


class PoolRow(Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(primary_key=True)
    slots: Mapped[int]
    description: Mapped[str] = mapped_column(Text)

    __table_args__ = (PrimaryKeyConstraint("name"),)


class MetricRow(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    name: Mapped[str]
    kind: Mapped[str] = mapped_column(String(32))
    # A metric is a number or a string: one of the two columns is set.
    value_num: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime | None]

    __table_args__ = (
        PrimaryKeyConstraint("id"),
        ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        Index(None, "run_id"),
    )


class ArtifactRow(Base):
    """Lineage of one artifact: the first task instance that produced these bytes.

    Keyed by content: the same bytes produced again (another run, a cache miss on the same
    inputs) keep their first producer. No foreign key to `runs`: an artifact outlives the run
    that made it (it stays in the artifact store, and later runs may read it through the cache).
    """

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    serializer: Mapped[str | None]
    type_name: Mapped[str | None]
    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    code_fingerprint: Mapped[str | None]
    created_at: Mapped[datetime]

    __table_args__ = (
        PrimaryKeyConstraint("sha256"),
        # artifacts_produced_by(run_id, task_id)
        Index(None, "run_id", "task_id"),
        _CLUSTERED,
    )


class ArtifactInputRow(Base):
    """Edge of the lineage graph: artifact `artifact_sha256` was computed from `input_sha256`.

    The primary key walks upstream (inputs of an artifact); the index on input_sha256 walks
    downstream (consumers of an artifact). `position` keeps the producer's argument order.
    """

    __tablename__ = "artifact_inputs"

    artifact_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    input_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int]

    __table_args__ = (
        PrimaryKeyConstraint("artifact_sha256", "input_sha256"),
        ForeignKeyConstraint(["artifact_sha256"], ["artifacts.sha256"], ondelete="CASCADE"),
        Index(None, "input_sha256"),
        _CLUSTERED,
    )


class AssetEventRow(Base):
    """A new version of an asset. `version` is 1, 2, ... per asset, assigned by the store in
    the writing transaction (see runs.RunStore.write)."""

    __tablename__ = "asset_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    asset: Mapped[str]
    version: Mapped[int]
    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]

    __table_args__ = (
        PrimaryKeyConstraint("id"),
        # Also the index of "newest versions of an asset" and of the next version number.
        UniqueConstraint("asset", "version"),
        ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        Index(None, "run_id"),
    )


runs_table: Table = RunRow.__table__  # type: ignore[assignment]
task_instances_table: Table = TaskInstanceRow.__table__  # type: ignore[assignment]
attempts_table: Table = AttemptRow.__table__  # type: ignore[assignment]
pools_table: Table = PoolRow.__table__  # type: ignore[assignment]
metrics_table: Table = MetricRow.__table__  # type: ignore[assignment]
artifacts_table: Table = ArtifactRow.__table__  # type: ignore[assignment]
artifact_inputs_table: Table = ArtifactInputRow.__table__  # type: ignore[assignment]
asset_events_table: Table = AssetEventRow.__table__  # type: ignore[assignment]

# Kept out of Base.metadata: Alembic owns this table and leaves it out of comparisons.
version_metadata = MetaData()
version_table = Table(
    VERSION_TABLE,
    version_metadata,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)


# ---------------------------------------------------------------------------------------------
# Scheduling (revision 0003): schedule state, run keys, trigger events, SLA misses.
# Written by the scheduler and backfill through `store/scheduling.py`.


class ScheduleStateRow(Base):
    """Per pipeline: paused or not, the newest scheduled logical date created, the asset
    versions its last asset-triggered run consumed. The row is also the lock that serialises
    the schedulers' decisions for one pipeline (SELECT ... FOR UPDATE on PostgreSQL)."""

    __tablename__ = "schedule_states"

    pipeline: Mapped[str] = mapped_column(primary_key=True)
    paused: Mapped[bool]
    last_logical_date: Mapped[datetime | None]
    asset_versions: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]

    __table_args__ = (PrimaryKeyConstraint("pipeline"),)


class RunKeyRow(Base):
    """At most one run per (pipeline, key): "interval:<logical date>" for scheduled and
    backfilled runs, "assets:<versions>" for asset-triggered ones, "sensor:..." for sensors.
    The primary key is what makes "exactly one run per interval" hold with many schedulers."""

    __tablename__ = "run_keys"

    pipeline: Mapped[str] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(primary_key=True)
    run_id: Mapped[str]
    created_at: Mapped[datetime]

    __table_args__ = (
        PrimaryKeyConstraint("pipeline", "key"),
        ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        Index(None, "run_id"),
        _CLUSTERED,
    )


class TriggerEventRow(Base):
    """A message (or other trigger) a scheduler processed: the run it created, or why it
    created none. UNIQUE(pipeline, source, message_id) dedupes redeliveries. No foreign key
    to `runs`: the record of a processed message outlives its run."""

    __tablename__ = "trigger_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pipeline: Mapped[str]
    source: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str]
    status: Mapped[str] = mapped_column(String(32))  # run | invalid
    run_id: Mapped[str | None]
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]
    received_at: Mapped[datetime]

    __table_args__ = (
        PrimaryKeyConstraint("id"),
        UniqueConstraint("pipeline", "source", "message_id"),
        Index(None, "received_at"),
    )


class SlaMissRow(Base):
    """A run that did not finish within its pipeline's `sla` (one row per run: the callback
    fires once, whichever scheduler notices first)."""

    __tablename__ = "sla_misses"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    pipeline: Mapped[str]
    sla_s: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[datetime]
    detected_at: Mapped[datetime]

    __table_args__ = (
        PrimaryKeyConstraint("run_id"),
        ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        Index(None, "pipeline", "detected_at"),
    )


schedule_states_table: Table = ScheduleStateRow.__table__  # type: ignore[assignment]
run_keys_table: Table = RunKeyRow.__table__  # type: ignore[assignment]
trigger_events_table: Table = TriggerEventRow.__table__  # type: ignore[assignment]
sla_misses_table: Table = SlaMissRow.__table__  # type: ignore[assignment]
