"""The store's schema constants agree with its Alembic scripts (no database needed)."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from cadenza.store.db import MIGRATIONS_DIR, mask_url
from cadenza.store.models import SCHEMA_REVISION, Base


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
    }


def test_mask_url_hides_the_password() -> None:
    masked = mask_url("postgresql+psycopg://u:hunter2@db.example:5433/cadenza")
    assert "hunter2" not in masked
    assert masked == "postgresql+psycopg://u:***@db.example:5433/cadenza"
