"""The initial schema: runs, task_instances, attempts, pools, metrics.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Must stay equivalent to `Base.metadata` at this revision (a test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cadenza.store.tables import JSONDoc, UTCDateTime

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("pipeline", sa.String(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("params", JSONDoc, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("executor", sa.String(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("logical_date", UTCDateTime(), nullable=True),
        sa.Column("data_interval_start", UTCDateTime(), nullable=True),
        sa.Column("data_interval_end", UTCDateTime(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("driver_id", sa.String(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tags", JSONDoc, nullable=False),
        sa.Column("extra", JSONDoc, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_index("ix_runs_pipeline_created_at", "runs", ["pipeline", "created_at"])
    op.create_index("ix_runs_state_created_at", "runs", ["state", "created_at"])

    op.create_table(
        "task_instances",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("map_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("next_retry_at", UTCDateTime(), nullable=True),
        sa.Column("output", JSONDoc, nullable=True),
        sa.Column("error", JSONDoc, nullable=True),
        sa.Column("cache_key", sa.String(), nullable=True),
        sa.Column("cache_origin", JSONDoc, nullable=True),
        sa.Column("worker", sa.String(), nullable=True),
        sa.Column("map_count", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
            name="fk_task_instances_run_id_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "task_id", "map_index", name="pk_task_instances"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_task_instances_cache_key_state_ended_at",
        "task_instances",
        ["cache_key", "state", "ended_at"],
    )

    op.create_table(
        "attempts",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("map_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("worker", sa.String(), nullable=True),
        sa.Column("error", JSONDoc, nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id", "task_id", "map_index"],
            ["task_instances.run_id", "task_instances.task_id", "task_instances.map_index"],
            name="fk_attempts_run_id_task_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "task_id", "map_index", "attempt", name="pk_attempts"),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "pools",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pools"),
    )

    op.create_table(
        "metrics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name="fk_metrics_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
    )
    op.create_index("ix_metrics_run_id", "metrics", ["run_id"])


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_table("pools")
    op.drop_table("attempts")
    op.drop_index("ix_task_instances_cache_key_state_ended_at", table_name="task_instances")
    op.drop_table("task_instances")
    op.drop_index("ix_runs_state_created_at", table_name="runs")
    op.drop_index("ix_runs_pipeline_created_at", table_name="runs")
    op.drop_index("ix_runs_created_at", table_name="runs")
    op.drop_table("runs")
