"""The store's schema constants agree with its Alembic scripts (no database needed)."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from cadenza.store.db import MIGRATIONS_DIR, mask_url
from cadenza.store.models import Base
from cadenza.store.tables import SCHEMA_REVISION


def test_schema_revision_is_alembics_single_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(cfg)
    assert script.get_heads() == [SCHEMA_REVISION]


def test_every_table_is_there() -> None:
    assert set(Base.metadata.tables) == {
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
    }


def test_mask_url_hides_the_password() -> None:
    masked = mask_url("postgresql+psycopg://u:hunter2@db.example:5433/cadenza")
    assert "hunter2" not in masked
    assert masked == "postgresql+psycopg://u:***@db.example:5433/cadenza"


def test_every_table_has_its_row_class_mapped_onto_it() -> None:
    """models.py maps one `*Row` class onto each Core table, with an annotation per column."""
    from sqlalchemy import inspect

    from cadenza.store import tables

    mapped = {m.local_table.name: m for m in Base.registry.mappers}
    assert set(mapped) == set(tables.metadata.tables)
    for name, mapper in mapped.items():
        table = tables.metadata.tables[name]
        assert mapper.local_table is table
        annotated = set(mapper.class_.__annotations__)
        assert annotated == {c.name for c in table.columns}, name
        assert inspect(mapper.class_).primary_key == tuple(table.primary_key.columns)


def test_a_run_never_imports_the_orm(tmp_path) -> None:
    """The store's queries use Core tables: running a pipeline must not import
    `sqlalchemy.orm` (~0.1 s of every cold start)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from cadenza import pipeline, task

        @task
        def one() -> int:
            return 1

        @pipeline
        def p():
            one()

        assert p.run(executor="inline").ok
        print(sorted(m for m in sys.modules if m.startswith("sqlalchemy.orm")))
    """)
    env = {"CADENZA_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env)
    assert out.stdout.strip() == "[]"


def test_sqlite_datetimes_are_stored_as_naive_utc_text_in_sqlalchemys_format() -> None:
    """tables._sqlite_bind cuts the '+00:00' off the aware UTC datetime's ISO text instead
    of formatting a naive copy: the stored text must stay exactly what SQLAlchemy's SQLite
    DATETIME writes ('YYYY-MM-DD HH:MM:SS.ffffff', UTC), whatever the zone given."""
    from datetime import UTC, datetime, timedelta, timezone

    import pytest
    from sqlalchemy.dialects import sqlite

    from cadenza.store.tables import UTCDateTime

    bind = UTCDateTime().bind_processor(sqlite.dialect())
    assert bind is not None
    cases = [
        datetime(2026, 12, 6, 18, 0, 0, tzinfo=UTC),
        datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=UTC),
        datetime(1999, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2))),
    ]
    for value in cases:
        expected = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        assert bind(value) == expected
    assert bind(cases[0]) == "2026-12-06 18:00:00.000000"
    assert bind(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        bind(datetime(2026, 1, 1))
