"""Alembic environment for the metadata store.

Run programmatically by `cadenza.store.db` (no alembic.ini): the caller puts a configured
Engine in `config.attributes["engine"]`, so migrations get the same pragmas and
`BEGIN IMMEDIATE` as the store. With the `alembic` command line, set CADENZA_DATABASE_URL
(or sqlalchemy.url) instead.

All revisions run in one transaction under a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock), so several processes upgrading at once apply each revision exactly once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from cadenza.store.db import create_store_engine, lock_schema
from cadenza.store.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> tuple[Engine, bool]:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine, False
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from cadenza.core.settings import get_settings

        url = get_settings().database_url
    return create_store_engine(url), True


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine, owned = _engine()
    try:
        with engine.connect() as conn:
            context.configure(
                connection=conn,
                target_metadata=target_metadata,
                render_as_batch=conn.dialect.name == "sqlite",
                transactional_ddl=True,
            )
            with context.begin_transaction():
                lock_schema(conn)
                context.run_migrations()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
