"""The cache-key index covers only task instances that have a cache key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Must stay equivalent to the schema in `tables.py` at this revision (a test compares them).
`ix_task_instances_cache_key_state_ended_at` (find_cached: the newest success for a cache
key) becomes partial, `WHERE cache_key IS NOT NULL`: most task instances have no cache key,
and every state change of one rewrote its entry (SQLite: an index b-tree page in each
chained step's commit; PostgreSQL: an index insert per row update). find_cached's
`cache_key = ?` implies the predicate, so both databases still use the index for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_task_instances_cache_key_state_ended_at"
_COLUMNS = ["cache_key", "state", "ended_at"]


def upgrade() -> None:
    op.drop_index(_NAME, table_name="task_instances")
    op.create_index(_NAME, "task_instances", _COLUMNS,
                    sqlite_where=sa.text("cache_key IS NOT NULL"),
                    postgresql_where=sa.text("cache_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_index(_NAME, table_name="task_instances")
    op.create_index(_NAME, "task_instances", _COLUMNS)
