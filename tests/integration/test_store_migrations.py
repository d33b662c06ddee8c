"""Schema creation and Alembic migrations on SQLite and PostgreSQL.

`open_store` creates a new schema with `create_all` (fast) and stamps the head revision; the
migrations must produce exactly that schema, and an older revision is upgraded on open."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from cadenza.core.errors import StoreError
from cadenza.store import db as store_db
from cadenza.store import open_store, sqlite_sql, upgrade_database
from cadenza.store.db import alembic_config, create_store_engine
from cadenza.store.models import Base
from cadenza.store.tables import SCHEMA_REVISION

TABLES = {
    "runs",
    "task_instances",
    "attempts",
    "pools",
    "metrics",
    "artifacts",
    "artifact_inputs",
    "asset_events",
    "schedule_states",
    "run_keys",
    "trigger_events",
    "sla_misses",
    "users",
    "api_tokens",
    "secrets",
    "audit",
    "alembic_version",
}


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def _revision(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [v for (v,) in conn.execute(text("SELECT version_num FROM alembic_version"))]


def _schema(engine: Engine) -> dict[str, object]:
    """Tables; columns (name, type, nullable, server default, in order); primary keys;
    indexes (with uniqueness); unique and check constraints; foreign keys (both sides)."""
    insp = inspect(engine)
    out: dict[str, object] = {}
    for t in sorted(insp.get_table_names()):
        out[t] = (
            [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
             for c in insp.get_columns(t)],
            insp.get_pk_constraint(t)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                   for i in insp.get_indexes(t)),
            sorted((u["name"] or "", tuple(u["column_names"]))
                   for u in insp.get_unique_constraints(t)),
            sorted((c["name"] or "", " ".join(c["sqltext"].split()))
                   for c in insp.get_check_constraints(t)),
            sorted(
                (
                    f["name"] or "",
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    (f.get("options") or {}).get("ondelete"),
                )
                for f in insp.get_foreign_keys(t)
            ),
            _storage_options(engine, t),
        )
    return out


def _storage_options(engine: Engine, table: str) -> list[str]:
    """PostgreSQL: the table's storage parameters (fillfactor, ...)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        options = conn.execute(
            text("SELECT c.reloptions FROM pg_class c "
                 "WHERE c.oid = to_regclass(:t)"), {"t": table}).scalar()
    return sorted(options or [])


def test_alembic_upgrade_head_yields_the_models_schema(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        command.upgrade(alembic_config(engine), "head")
        assert set(inspect(engine).get_table_names()) == TABLES
        assert _diff(engine) == []
        assert _revision(engine) == [SCHEMA_REVISION]
    finally:
        engine.dispose()


def test_create_all_and_migrations_give_the_same_schema(db_url: str, tmp_path: Path) -> None:
    # open_store on one database (create_all), alembic on another of the same backend
    store = open_store(db_url)
    store.dispose()
    if db_url.startswith("sqlite"):
        other_url = f"sqlite:///{tmp_path / 'migrated.db'}"
        cleanup = None
    else:
        from tests.fixtures.store import drop_postgres_schema, new_postgres_schema

        other_url = new_postgres_schema(db_url.split("?", 1)[0])
        cleanup = other_url
    created = create_store_engine(db_url)
    migrated = create_store_engine(other_url)
    try:
        command.upgrade(alembic_config(migrated), "head")
        assert _diff(created) == []
        assert _schema(created) == _schema(migrated)
        assert _revision(created) == _revision(migrated) == [SCHEMA_REVISION]
    finally:
        created.dispose()
        migrated.dispose()
        if cleanup:
            drop_postgres_schema(cleanup)


def test_downgrade_to_base_then_open_recreates_the_schema(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        command.upgrade(alembic_config(engine), "head")
        command.downgrade(alembic_config(engine), "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    store = open_store(db_url)
    try:
        store.ensure_pool("default", 1)
        assert store.list_pools()[0].name == "default"
    finally:
        store.dispose()


def test_open_store_on_an_up_to_date_database_does_not_import_alembic(db_url: str) -> None:
    import subprocess
    import sys

    open_store(db_url).dispose()
    code = (
        "import sys\n"
        "from cadenza.store import open_store\n"
        f"s = open_store({db_url!r}); s.list_runs(); s.dispose()\n"
        "assert 'alembic' not in sys.modules, 'alembic was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_upgrade_database_creates_or_confirms_the_head(db_url: str) -> None:
    assert upgrade_database(db_url) == SCHEMA_REVISION  # empty database: created
    assert upgrade_database(db_url) == SCHEMA_REVISION  # already current
    store = open_store(db_url)
    store.dispose()


def test_an_older_revision_is_upgraded_with_alembic_on_open(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade_database(db_url)
    calls: list[str] = []
    real = store_db._upgrade_engine

    def spy(engine: Engine) -> str:
        calls.append(str(engine.url))
        return real(engine)

    # Pretend this Cadenza knows a newer revision than the database has.
    monkeypatch.setattr(store_db, "SCHEMA_REVISION", "9999")
    monkeypatch.setattr(sqlite_sql, "REVISION", "9999")  # the SQLite run path's copy
    monkeypatch.setattr(store_db, "_upgrade_engine", spy)
    store = open_store(db_url)
    store.dispose()
    assert len(calls) == 1


def test_a_database_from_a_newer_cadenza_is_refused_with_a_hint(db_url: str) -> None:
    upgrade_database(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'zz_future'"))
    engine.dispose()
    with pytest.raises(StoreError) as err:
        open_store(db_url)
    assert "zz_future" in str(err.value)
    assert err.value.hint and "newer Cadenza" in err.value.hint


def test_tables_without_a_version_row_are_refused(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match="alembic_version"):
        open_store(db_url)


def test_0008_drops_the_attempts_foreign_key_and_keeps_the_rows(db_url: str) -> None:
    """Revision 0008 on a database with rows, and back: the attempts keep their rows (SQLite
    rebuilds the table, still WITHOUT ROWID); the foreign key goes and comes back; the
    cache-key index is on cache_key alone, partial; PostgreSQL's task_instances get
    fillfactor 50 and lose it again."""
    engine = create_store_engine(db_url)
    cfg = alembic_config(engine)
    postgres = engine.dialect.name == "postgresql"

    def foreign_keys() -> list[str]:
        return [f["referred_table"] for f in inspect(engine).get_foreign_keys("attempts")]

    def cache_index() -> list[str]:
        return [c for i in inspect(engine).get_indexes("task_instances")
                if i["name"].startswith("ix_task_instances_cache_key")
                for c in i["column_names"]]

    def attempts() -> list[tuple[object, ...]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT run_id, task_id, map_index, attempt, state FROM attempts "
                "ORDER BY attempt"))]

    def without_rowid() -> bool:
        with engine.connect() as conn:
            ddl = conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE name = 'attempts'")).scalar()
        return "WITHOUT ROWID" in str(ddl).upper()

    try:
        command.upgrade(cfg, "0007")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO runs (run_id, pipeline, state, params, created_at, executor, "
                "trigger, source, tags, extra) VALUES ('r1', 'p', 'success', '{}', "
                "'2026-01-01 00:00:00', 'inline', 'manual', '', '[]', '{}')"))
            conn.execute(text(
                "INSERT INTO task_instances (run_id, task_id, map_index, state, attempt, pool, "
                "reason) VALUES ('r1', 't', -1, 'success', 2, 'default', '')"))
            for n in (1, 2):
                conn.execute(text(
                    "INSERT INTO attempts (run_id, task_id, map_index, attempt, state) "
                    f"VALUES ('r1', 't', -1, {n}, 'failed')"))
        rows = attempts()
        assert foreign_keys() == ["task_instances"]
        assert cache_index() == ["cache_key", "state", "ended_at"]

        command.upgrade(cfg, "0008")
        assert attempts() == rows
        assert foreign_keys() == []
        assert cache_index() == ["cache_key", "run_id"]
        assert _storage_options(engine, "task_instances") == (
            ["fillfactor=50"] if postgres else [])
        if not postgres:
            assert without_rowid()

        command.downgrade(cfg, "0007")
        assert attempts() == rows
        assert foreign_keys() == ["task_instances"]
        assert cache_index() == ["cache_key", "state", "ended_at"]
        assert _storage_options(engine, "task_instances") == []
        if not postgres:
            assert without_rowid()
    finally:
        engine.dispose()
