"""Cancel requests: runs.cancel_requested_at.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Must stay equivalent to the schema in `tables.py` at this revision (a test compares them).
Purely additive: one nullable column. Any process records a cancel request here
(`cadenza runs cancel`); the process driving the run notices it on its heartbeat thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cadenza.store.tables import UTCDateTime

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("cancel_requested_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "cancel_requested_at")
