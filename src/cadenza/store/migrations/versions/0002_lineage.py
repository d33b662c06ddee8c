"""Lineage and assets: task_instances.cache_detail, artifacts, artifact_inputs, asset_events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01

Must stay equivalent to `Base.metadata` at this revision (a test compares them). Purely
additive: existing rows keep their values and get cache_detail NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cadenza.store.tables import JSONDoc, UTCDateTime

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN on both backends (no batch copy of the table on SQLite:
    # a nullable column without default is a metadata-only change there too).
    op.add_column("task_instances", sa.Column("cache_detail", JSONDoc, nullable=True))

    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("serializer", sa.String(), nullable=True),
        sa.Column("type_name", sa.String(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("code_fingerprint", sa.String(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_artifacts"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_artifacts_run_id_task_id", "artifacts", ["run_id", "task_id"])

    op.create_table(
        "artifact_inputs",
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_sha256"],
            ["artifacts.sha256"],
            name="fk_artifact_inputs_artifact_sha256_artifacts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_sha256", "input_sha256", name="pk_artifact_inputs"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_artifact_inputs_input_sha256", "artifact_inputs", ["input_sha256"])

    op.create_table(
        "asset_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("asset", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name="fk_asset_events_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_asset_events"),
        sa.UniqueConstraint("asset", "version", name="uq_asset_events_asset_version"),
    )
    op.create_index("ix_asset_events_run_id", "asset_events", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_asset_events_run_id", table_name="asset_events")
    op.drop_table("asset_events")
    op.drop_index("ix_artifact_inputs_input_sha256", table_name="artifact_inputs")
    op.drop_table("artifact_inputs")
    op.drop_index("ix_artifacts_run_id_task_id", table_name="artifacts")
    op.drop_table("artifacts")
    # Native DROP COLUMN (SQLite >= 3.35): a batch copy would lose WITHOUT ROWID.
    op.drop_column("task_instances", "cache_detail")
