"""Engines, connection set-up, schema bootstrap and error translation for the metadata store.

What belongs here: everything about *talking to a database* (URLs, pragmas, transactions,
first-use schema creation, Alembic upgrades, turning SQLAlchemy errors into `StoreError`).
What does not: queries (`runs.py`, `scheduling.py`), row <-> record conversion
(`codec.py`), table definitions (`tables.py`).

SQLite is configured for several writer processes on one file: WAL, synchronous=NORMAL,
busy_timeout 30 s, and every write transaction starts with `BEGIN IMMEDIATE`, so a transaction
takes the write lock up front instead of upgrading a read lock later (the upgrade is what
returns "database is locked" without waiting on the busy handler). Reads use a deferred
`BEGIN` and never block writers in WAL mode.

Alembic is imported only when a database is older than `SCHEMA_REVISION`; opening an
up-to-date database costs one SELECT.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from cadenza.core.errors import StoreError
from cadenza.store import sqlite_conn
from cadenza.store.failures import SQLITE_BUSY_TIMEOUT_S, mask_url, store_error
from cadenza.store.failures import hint_for as _hint_for

# The store of each (url, pid) lives in store/opening.py; importable from here as before.
from cadenza.store.opening import store_cache  # noqa: F401
from cadenza.store.tables import (
    SCHEMA_REVISION,
    metadata,
    use_dialect,
    version_metadata,
    version_table,
)

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

POSTGRES_CONNECT_TIMEOUT_S = 5
# Execution option that marks a read-only connection (deferred BEGIN on SQLite).
READ_OPTION = "cadenza_read"
# pg_advisory_xact_lock key serialising schema creation and migrations ("cadenza" in ASCII).
_PG_SCHEMA_LOCK = 0x63_61_64_65_6E_7A_61

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# ---------------------------------------------------------------------------------------------
# Engines


class _HasUrl(Protocol):
    url: str


def translated(action: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn SQLAlchemy errors raised by a store method (its first argument has `url`) into
    StoreError."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def method(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except exc.SQLAlchemyError as e:
                store: _HasUrl = args[0]  # type: ignore[assignment]
                raise store_error(e, store.url, action) from e

        return method

    return wrap


def _sqlite_connect_args(u: URL) -> dict[str, Any]:
    return {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}


def _is_memory(u: URL) -> bool:
    return u.database in (None, "", ":memory:") or (u.database or "").startswith("file::memory:")


def create_store_engine(url: str) -> Engine:
    """An Engine configured for the store: pragmas, BEGIN IMMEDIATE, connect timeouts.

    Raises StoreError for a malformed URL, a missing driver or an uncreatable SQLite folder.
    Does not connect.
    """
    try:
        u = make_url(url)
    except exc.ArgumentError as e:
        raise StoreError(f"invalid database URL {url!r}: {e}", hint=_hint_for(url)) from e
    backend = u.get_backend_name()
    try:
        if backend == "sqlite":
            use_dialect("sqlite")
            return _create_sqlite_engine(u)
        if backend == "postgresql":
            use_dialect("postgresql")
            args: dict[str, Any] = {}
            if "connect_timeout" not in u.query:
                args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
            loads = _fast_json_loads()
            extra: dict[str, Any] = {"json_deserializer": loads} if loads else {}
            return create_engine(u, connect_args=args, pool_pre_ping=False, **extra)
        return create_engine(u)
    except exc.NoSuchModuleError as e:
        raise StoreError(
            f"no database driver for {mask_url(u)}: {e}",
            hint="use postgresql+psycopg://... and install it: pip install 'cadenza[postgres]'",
        ) from e
    except ImportError as e:
        raise StoreError(
            f"the database driver for {mask_url(u)} is not installed: {e}",
            hint="pip install 'cadenza[postgres]'",
        ) from e


# Integers of 19 digits or more may not fit 64 bits, which orjson would read as floats.
_LONG_DIGITS = re.compile(rb"\d{19}")


def _fast_json_loads() -> Callable[[Any], Any] | None:
    """psycopg's JSON/JSONB decoder for PostgreSQL: orjson when it is installed (the server
    extra), None (psycopg's json.loads) otherwise. One C call a document instead of ~5
    Python calls: a 50-run page reads 100 documents (params, tags). A document holding a
    run of 19+ digits goes through json.loads, which keeps integers beyond 64 bits exact.
    (A module-level function: psycopg warns that a closure may leak its loader cache.)"""
    try:
        import orjson
    except ImportError:
        return None
    global _orjson_loads
    _orjson_loads = orjson.loads
    return _json_loads


_orjson_loads: Callable[[Any], Any] = json.loads


def _json_loads(data: Any) -> Any:
    if _LONG_DIGITS.search(data):
        return json.loads(bytes(data))
    return _orjson_loads(data)


def _create_sqlite_engine(u: URL) -> Engine:
    sqlite_conn.bind_none_directly()
    memory = _is_memory(u)
    if not memory:
        assert u.database is not None
        sqlite_conn.make_folder(u.database)
    kwargs: dict[str, Any] = {"connect_args": _sqlite_connect_args(u)}
    if memory:
        # One shared connection, or every thread would see its own empty database.
        kwargs["poolclass"] = StaticPool
    engine = create_engine(u, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below); pysqlite's own transaction handling would
        # start deferred transactions behind our back.
        sqlite_conn.configure(dbapi_conn, memory=memory)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# ---------------------------------------------------------------------------------------------
# Schema


def _read_revision(conn: Connection) -> str | None:
    """The alembic_version row, or None when the table is missing or empty."""
    if not conn.dialect.has_table(conn, version_table.name):
        return None
    return conn.execute(select(version_table.c.version_num)).scalar()


def lock_schema(conn: Connection) -> None:
    """Serialise schema work between processes (SQLite: BEGIN IMMEDIATE already did)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})


def ensure_schema(engine: Engine) -> str:
    """Make the database's schema current; return its revision.

    1. alembic_version says SCHEMA_REVISION -> nothing to do (the common case: one SELECT).
    2. No Cadenza tables at all -> `create_all` and stamp SCHEMA_REVISION, in one
       transaction under a lock, so processes opening a new database together don't race.
    3. An older revision -> `alembic upgrade head`.
    4. Our tables without a version row -> refuse: we cannot tell what schema it has.
    """
    url = engine.url
    try:
        with engine.connect() as conn:
            conn.execution_options(**{READ_OPTION: True})
            rev = _read_revision(conn)
        if rev == SCHEMA_REVISION:
            return rev
        if rev is None:
            with engine.begin() as conn:
                lock_schema(conn)
                rev = _read_revision(conn)
                if rev is None:
                    if conn.dialect.has_table(conn, "runs"):
                        raise StoreError(
                            f"metadata store {mask_url(url)} has Cadenza tables but no "
                            "alembic_version row, so its schema revision is unknown",
                            hint="point CADENZA_DATABASE_URL at a fresh database, or stamp it "
                            "with `alembic stamp` after checking its schema",
                        )
                    metadata.create_all(conn, checkfirst=True)
                    version_metadata.create_all(conn, checkfirst=True)
                    conn.execute(version_table.insert(), {"version_num": SCHEMA_REVISION})
                    log.info("created the metadata store schema in %s", mask_url(url))
                    return SCHEMA_REVISION
            if rev == SCHEMA_REVISION:
                return rev
    except exc.SQLAlchemyError as e:
        raise store_error(e, url, "opening the store") from e
    return _upgrade_engine(engine)


def alembic_config(engine: Engine) -> Any:
    """A programmatic Alembic Config (no alembic.ini) that migrates through `engine`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def _upgrade_engine(engine: Engine) -> str:
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(engine), "head")
        with engine.connect() as conn:
            rev = _read_revision(conn)
    except CommandError as e:
        raise StoreError(
            f"cannot migrate the metadata store {mask_url(engine.url)}: {e}",
            hint="the database may come from a newer Cadenza; upgrade Cadenza "
            "(pip install -U cadenza) or use another CADENZA_DATABASE_URL",
        ) from e
    except exc.SQLAlchemyError as e:
        raise store_error(e, engine.url, "migrating the schema") from e
    log.info("migrated the metadata store %s to revision %s", mask_url(engine.url), rev)
    return rev or ""


def upgrade_database(url: str | None = None) -> str:
    """Bring the database at `url` (default: the configured one) to the newest schema.

    Creates the schema on an empty database. Returns the revision now current. What
    `cadenza db upgrade` runs.

    Example:
        >>> upgrade_database("sqlite:////tmp/cadenza.db")
        '0001'
    """
    if url is None:
        from cadenza.core.settings import get_settings

        url = get_settings().database_url
    engine = create_store_engine(url)
    try:
        return ensure_schema(engine)
    finally:
        engine.dispose()


def dialect_insert(dialect: str, table: Any) -> Any:
    """An INSERT of `table` that knows ON CONFLICT on `dialect` ("postgresql" or "sqlite").

    The PostgreSQL dialect module is imported only on PostgreSQL: it costs ~80 ms of a
    cold start, which a SQLite user should not pay."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)
