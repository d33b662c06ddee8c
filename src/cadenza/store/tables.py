"""The metadata store's tables, in SQLAlchemy Core.

Data only: no behaviour, no conversion to records (that is `runs.py`), no engine setup (that
is `db.py`). The store's queries use these `Table`s; `models.py` maps its `*Row` classes onto
the same tables for the ORM's users (Alembic autogenerate, tests, ad-hoc sessions).

Why Core here and not declarative `mapped_column()`s: the store is on every run's cold
path, and importing `sqlalchemy.orm` and building declarative classes cost about as much
again as SQLAlchemy Core itself (callgrind: ~480 M instructions on top of Core's ~860 M,
~0.1-0.15 s on the 2-core CI machine). A run never imports the ORM.

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
    Boolean,
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
    text,
)

from cadenza.store import sqlite_conn

_sqlite_bind = sqlite_conn.bind_time
_sqlite_result = sqlite_conn.load_time

# The newest Alembic revision. Opening a database whose alembic_version row equals this
# does no migration work at all (see db.ensure_schema).
SCHEMA_REVISION = "0008"

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
        if (dialect.name == "postgresql" and self.impl_instance.dialect_impl(dialect)
                .result_processor(dialect, coltype) is None):
            # psycopg gives aware datetimes in the session's zone: one call a value, not
            # TypeDecorator's two (a 50-run page reads ~350 of them).
            return _aware_result
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


def _aware_result(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    tz = value.tzinfo
    if tz is None:
        return value.replace(tzinfo=UTC)
    return value if tz is UTC else value.astimezone(UTC)


# Tables keyed by text columns are WITHOUT ROWID on SQLite: one b-tree instead of a rowid table
# plus a primary-key index, so a task instance update and an attempt insert dirty fewer pages
# (~130 -> ~105 us per commit of one of each, measured with plain sqlite3 on the CI VM).
_CLUSTERED: dict[str, Any] = {"sqlite_with_rowid": False}


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



metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _str(name: str, *, nullable: bool = False, length: int | None = None) -> Column[Any]:
    return Column(name, String(length), nullable=nullable)


def _text(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, Text(), nullable=nullable)


def _int(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, Integer(), nullable=nullable)


def _key_int(name: str) -> Column[Any]:
    """An integer part of a composite primary key: never autoincremented."""
    return Column(name, Integer(), nullable=False, autoincrement=False)


def _time(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, UTCDateTime(), nullable=nullable)


def _json(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, JSONDoc, nullable=nullable)


def _state(name: str = "state") -> Column[Any]:
    return _str(name, length=32)


runs_table = Table(
    "runs", metadata,
    _str("run_id"),
    _str("pipeline"),
    _state(),
    _json("params"),
    _time("created_at"),
    _time("started_at", nullable=True),
    _time("ended_at", nullable=True),
    _str("executor"),
    _str("trigger"),
    _time("logical_date", nullable=True),
    _time("data_interval_start", nullable=True),
    _time("data_interval_end", nullable=True),
    _text("source"),
    _str("driver_id", nullable=True),
    _time("heartbeat_at", nullable=True),
    _text("error", nullable=True),
    _json("tags"),
    _json("extra"),
    # Set by `cadenza runs cancel` (any process); the run's driver polls it (engine/lease.py).
    _time("cancel_requested_at", nullable=True),
    PrimaryKeyConstraint("run_id"),
    # Runs lists (newest first by (created_at, run_id), optionally by pipeline or state)
    # read and page straight off these: revision 0007 added run_id and logical_date.
    Index(None, "created_at", "run_id"),
    Index(None, "pipeline", "created_at", "run_id"),
    Index(None, "state", "created_at", "run_id"),
    Index(None, "logical_date"),
    **_CLUSTERED,
)

# find_cached: newest success for a cache key. Partial, WHERE cache_key IS NOT NULL (revision
# 0006): most task instances have no cache key, and then their state changes write no entry
# here (SQLite, chained step: 5.15 -> 2.23 WAL pages per commit). On cache_key alone
# (revision 0008): with `state` or `ended_at` in it, no update of a task instance's state
# could be HOT on PostgreSQL (an update that changes an indexed column writes a new entry in
# every index, the primary key's included); find_cached filters and orders the few rows of
# one key. The predicate is a dialect option, attached by `use_dialect` when a store engine
# for that dialect is made: naming `postgresql_where` here would import SQLAlchemy's
# PostgreSQL dialect (~80 ms) into every SQLite cold start.
# On (cache_key, run_id): both never change once a row has its key, so a state update stays
# HOT on PostgreSQL, and `find_cached` walks a key's rows newest run first (run ids sort by
# creation), stopping at the first success instead of reading every row with that key.
_cache_key_index = Index(None, "cache_key", "run_id")
CACHE_KEY_PREDICATE = "cache_key IS NOT NULL"
# PostgreSQL: task instance pages are filled to half, so a row's updates (a chained step
# updates each row once or twice) find room on its own page and stay HOT (revision 0008).
TASK_INSTANCES_FILLFACTOR = 50


def use_dialect(name: str) -> None:
    """Attach the dialect-specific parts of the schema for dialect `name` (idempotent)."""
    if name in ("sqlite", "postgresql"):
        options = _cache_key_index.dialect_options[name]
        if options.get("where") is None:
            options["where"] = text(CACHE_KEY_PREDICATE)
    if name == "postgresql":
        table_options = task_instances_table.dialect_options[name]
        if not table_options.get("with"):
            table_options["with"] = {"fillfactor": TASK_INSTANCES_FILLFACTOR}


task_instances_table = Table(
    "task_instances", metadata,
    _str("run_id"),
    _str("task_id"),
    _key_int("map_index"),
    _state(),
    _int("attempt"),
    _str("pool"),
    _time("queued_at", nullable=True),
    _time("started_at", nullable=True),
    _time("ended_at", nullable=True),
    _time("next_retry_at", nullable=True),
    _json("output", nullable=True),
    _json("error", nullable=True),
    _str("cache_key", nullable=True),
    _json("cache_origin", nullable=True),
    _str("worker", nullable=True),
    _int("map_count", nullable=True),
    _text("reason"),
    # The parts of cache_key (fingerprint, functions, version, inputs): `cadenza plan` compares
    # them to say why a key changed. Last column: added by revision 0002.
    _json("cache_detail", nullable=True),
    PrimaryKeyConstraint("run_id", "task_id", "map_index"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    _cache_key_index,
    **_CLUSTERED,
)

attempts_table = Table(
    "attempts", metadata,
    _str("run_id"),
    _str("task_id"),
    _key_int("map_index"),
    _key_int("attempt"),
    _state(),
    _time("started_at", nullable=True),
    _time("ended_at", nullable=True),
    _str("worker", nullable=True),
    _json("error", nullable=True),
    _text("log_path", nullable=True),
    PrimaryKeyConstraint("run_id", "task_id", "map_index", "attempt"),
    # No foreign key to task_instances (revision 0008): checking it was ~60% of the attempt
    # insert each chained step waits for on PostgreSQL. Attempts are deleted with their run,
    # explicitly, by the two places that delete runs (RunStore.delete_run,
    # retention.delete_runs), before the run's task instances.
    **_CLUSTERED,
)

pools_table = Table(
    "pools", metadata,
    _str("name"),
    _int("slots"),
    _text("description"),
    PrimaryKeyConstraint("name"),
)

metrics_table = Table(
    "metrics", metadata,
    Column("id", BigId, nullable=False, autoincrement=True),
    _str("run_id"),
    _str("task_id"),
    _int("map_index"),
    _int("attempt"),
    _str("name"),
    _str("kind", length=32),
    # A metric is a number or a string: one of the two columns is set.
    Column("value_num", Float(), nullable=True),
    _text("value_text", nullable=True),
    _time("at", nullable=True),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    Index(None, "run_id"),
)

# Lineage of one artifact: the first task instance that produced these bytes. Keyed by
# content: the same bytes produced again (another run, a cache miss on the same inputs) keep
# their first producer. No foreign key to `runs`: an artifact outlives the run that made it
# (it stays in the artifact store, and later runs may read it through the cache).
artifacts_table = Table(
    "artifacts", metadata,
    _str("sha256", length=64),
    _text("uri"),
    Column("size", BigInteger(), nullable=True),
    _str("serializer", nullable=True),
    _str("type_name", nullable=True),
    _str("run_id"),
    _str("task_id"),
    _int("map_index"),
    _int("attempt"),
    _str("code_fingerprint", nullable=True),
    _time("created_at"),
    PrimaryKeyConstraint("sha256"),
    # artifacts_produced_by(run_id, task_id)
    Index(None, "run_id", "task_id"),
    **_CLUSTERED,
)

# An edge of the lineage graph: artifact `artifact_sha256` was computed from `input_sha256`.
# The primary key walks upstream (inputs of an artifact); the index on input_sha256 walks
# downstream (consumers of an artifact). `position` keeps the producer's argument order.
artifact_inputs_table = Table(
    "artifact_inputs", metadata,
    _str("artifact_sha256", length=64),
    _str("input_sha256", length=64),
    _int("position"),
    PrimaryKeyConstraint("artifact_sha256", "input_sha256"),
    ForeignKeyConstraint(["artifact_sha256"], ["artifacts.sha256"], ondelete="CASCADE"),
    Index(None, "input_sha256"),
    **_CLUSTERED,
)

# A new version of an asset. `version` is 1, 2, ... per asset, assigned by the store in the
# writing transaction (see runs.RunStore.write).
asset_events_table = Table(
    "asset_events", metadata,
    Column("id", BigId, nullable=False, autoincrement=True),
    _str("asset"),
    _int("version"),
    _str("run_id"),
    _str("task_id"),
    _int("map_index"),
    _int("attempt"),
    _str("artifact_sha256", nullable=True, length=64),
    _time("created_at"),
    PrimaryKeyConstraint("id"),
    # Also the index of "newest versions of an asset" and of the next version number.
    UniqueConstraint("asset", "version"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    Index(None, "run_id"),
)

# Rows of `select(*RUN_COLUMNS)` etc. are what codec.py's `*_from_row` functions unpack.
RUN_COLUMNS = tuple(runs_table.columns)
TI_COLUMNS = tuple(task_instances_table.columns)
ATTEMPT_COLUMNS = tuple(attempts_table.columns)

# Kept out of `metadata`: Alembic owns this table and leaves it out of comparisons.
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

# Per pipeline: paused or not, the newest scheduled logical date created, the asset versions
# its last asset-triggered run consumed. The row is also the lock that serialises the
# schedulers' decisions for one pipeline (SELECT ... FOR UPDATE on PostgreSQL).
schedule_states_table = Table(
    "schedule_states", metadata,
    _str("pipeline"),
    Column("paused", Boolean(), nullable=False),
    _time("last_logical_date", nullable=True),
    _json("asset_versions", nullable=True),
    _time("updated_at"),
    PrimaryKeyConstraint("pipeline"),
)

# At most one run per (pipeline, key): "interval:<logical date>" for scheduled and backfilled
# runs, "assets:<versions>" for asset-triggered ones, "sensor:..." for sensors. The primary
# key is what makes "exactly one run per interval" hold with many schedulers.
run_keys_table = Table(
    "run_keys", metadata,
    _str("pipeline"),
    _str("key"),
    _str("run_id"),
    _time("created_at"),
    PrimaryKeyConstraint("pipeline", "key"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    Index(None, "run_id"),
    **_CLUSTERED,
)

# A message (or other trigger) a scheduler processed: the run it created, or why it created
# none. UNIQUE(pipeline, source, message_id) dedupes redeliveries. No foreign key to `runs`:
# the record of a processed message outlives its run.
trigger_events_table = Table(
    "trigger_events", metadata,
    Column("id", BigId, nullable=False, autoincrement=True),
    _str("pipeline"),
    _text("source"),
    _str("message_id"),
    _str("status", length=32),  # run | invalid
    _str("run_id", nullable=True),
    _text("error", nullable=True),
    _json("payload", nullable=True),
    _time("received_at"),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("pipeline", "source", "message_id"),
    Index(None, "received_at"),
)

# A run that did not finish within its pipeline's `sla` (one row per run: the callback fires
# once, whichever scheduler notices first).
sla_misses_table = Table(
    "sla_misses", metadata,
    _str("run_id"),
    _str("pipeline"),
    Column("sla_s", Float(), nullable=False),
    _time("deadline_at"),
    _time("detected_at"),
    PrimaryKeyConstraint("run_id"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    Index(None, "pipeline", "detected_at"),
)


# ---------------------------------------------------------------------------------------------
# Security (revision 0005): users, API tokens, secrets, audit. Written through
# `store/security.py` by the CLI (`cadenza users|tokens|secrets`) and the API.

# A person or a service that calls the API. `password_hash` is argon2id (None: token-only).
users_table = Table(
    "users", metadata,
    _str("name", length=64),
    _str("role", length=16),
    _text("password_hash", nullable=True),
    _time("created_at"),
    Column("disabled", Boolean(), nullable=False),
    PrimaryKeyConstraint("name"),
)

# An API token: its SHA-256, never the token. `id` is its short public name (list, revoke).
api_tokens_table = Table(
    "api_tokens", metadata,
    _str("id", length=32),
    _str("user", length=64),
    _str("token_hash", length=64),
    _time("created_at"),
    _time("expires_at", nullable=True),
    _time("revoked_at", nullable=True),
    _time("last_used_at", nullable=True),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["user"], ["users.name"], ondelete="CASCADE"),
    UniqueConstraint("token_hash"),
    Index(None, "user"),
)

# A secret a task reads with get_context().secrets[name]: Fernet ciphertext of its value.
secrets_table = Table(
    "secrets", metadata,
    _str("name", length=128),
    _text("ciphertext"),
    _time("updated_at"),
    PrimaryKeyConstraint("name"),
)

# Every mutating API call (POST/PUT/PATCH/DELETE under /api/v1): who, what, how it ended.
audit_table = Table(
    "audit", metadata,
    Column("id", BigId, nullable=False, autoincrement=True),
    _time("at"),
    _str("who", length=64),
    _str("method", length=16),
    _text("path"),
    _int("status"),
    _text("detail", nullable=True),
    PrimaryKeyConstraint("id"),
    Index(None, "at"),
)
