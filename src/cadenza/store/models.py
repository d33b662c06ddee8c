"""The metadata store's tables, as SQLAlchemy 2 `Mapped[...]` classes named `*Row`.

Data only: no behaviour, no conversion to records (that is `runs.py`), no engine setup (that
is `db.py`). `*Row` classes never leave `cadenza.store`; the rest of Cadenza sees the core
dataclasses in `cadenza.core.records`.

`SCHEMA_REVISION` must always equal the newest Alembic revision in `migrations/versions/`
(a unit test checks it). When you change a table here, add a migration and bump it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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
    Column,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The newest Alembic revision. Opening a database whose alembic_version row equals this
# does no migration work at all (see db.ensure_schema).
SCHEMA_REVISION = "0001"

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
    UTC and made aware again on the way out. A naive datetime going in is a bug in the caller
    (the engine only uses `core.clock.now()`), so it is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        tz = value.tzinfo
        if tz is None:
            raise ValueError(f"naive datetime {value!r}: the store needs UTC-aware datetimes")
        if tz is not UTC:
            value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        tz = value.tzinfo
        if tz is None:
            return value.replace(tzinfo=UTC)
        if tz is not UTC:
            return value.astimezone(UTC)
        return value


# JSON documents; JSONB on PostgreSQL. A Python None is stored as SQL NULL, not JSON 'null'.
JSONDoc = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
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

    __table_args__ = (
        PrimaryKeyConstraint("run_id", "task_id", "map_index"),
        ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        # find_cached: newest success for a cache key.
        Index(None, "cache_key", "state", "ended_at"),
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


runs_table: Table = RunRow.__table__  # type: ignore[assignment]
task_instances_table: Table = TaskInstanceRow.__table__  # type: ignore[assignment]
attempts_table: Table = AttemptRow.__table__  # type: ignore[assignment]
pools_table: Table = PoolRow.__table__  # type: ignore[assignment]
metrics_table: Table = MetricRow.__table__  # type: ignore[assignment]

# Kept out of Base.metadata: Alembic owns this table and leaves it out of comparisons.
version_metadata = MetaData()
version_table = Table(
    VERSION_TABLE,
    version_metadata,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)
