"""Scheduling: schedule_states, run_keys, trigger_events, sla_misses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-02-10

Must stay equivalent to `Base.metadata` at this revision (a test compares them). Purely
additive: new tables only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cadenza.store.tables import JSONDoc, UTCDateTime

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedule_states",
        sa.Column("pipeline", sa.String(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("last_logical_date", UTCDateTime(), nullable=True),
        sa.Column("asset_versions", JSONDoc, nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", name="pk_schedule_states"),
    )

    op.create_table(
        "run_keys",
        sa.Column("pipeline", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name="fk_run_keys_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pipeline", "key", name="pk_run_keys"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_run_keys_run_id", "run_keys", ["run_id"])

    op.create_table(
        "trigger_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pipeline", sa.String(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("payload", JSONDoc, nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_events"),
        sa.UniqueConstraint(
            "pipeline", "source", "message_id",
            name="uq_trigger_events_pipeline_source_message_id",
        ),
    )
    op.create_index("ix_trigger_events_received_at", "trigger_events", ["received_at"])

    op.create_table(
        "sla_misses",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("pipeline", sa.String(), nullable=False),
        sa.Column("sla_s", sa.Float(), nullable=False),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name="fk_sla_misses_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name="pk_sla_misses"),
    )
    op.create_index(
        "ix_sla_misses_pipeline_detected_at", "sla_misses", ["pipeline", "detected_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_sla_misses_pipeline_detected_at", table_name="sla_misses")
    op.drop_table("sla_misses")
    op.drop_index("ix_trigger_events_received_at", table_name="trigger_events")
    op.drop_table("trigger_events")
    op.drop_index("ix_run_keys_run_id", table_name="run_keys")
    op.drop_table("run_keys")
    op.drop_table("schedule_states")
