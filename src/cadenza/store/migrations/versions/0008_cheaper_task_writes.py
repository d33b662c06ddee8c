"""Cheaper chained-step writes: no attempts -> task_instances foreign key; the cache-key
index on (cache_key, run_id), columns no update changes; task_instances with fillfactor 50 on PostgreSQL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Must stay equivalent to the schema in `tables.py` at this revision (a test compares them).
Why: a chained step writes one task instance update and one attempt insert, and waits for
them before the next task starts. On PostgreSQL (EXPLAIN (ANALYZE, WAL) per statement, 400
steps) the attempt insert's foreign-key trigger was about 60% of the insert; the update
was never HOT (a heap-only tuple: no index entry written) because `state` and `ended_at`
were columns of the cache-key index (now on cache_key and run_id: `find_cached` takes
the newest run's success first, as run ids sort by creation), and pages filled to 100% left no room for the new row
version on its page. With the three changes every such update is HOT: WAL per update 276 ->
220 bytes, 2.5 -> 1.9 records.

Integrity without the foreign key: attempts are only ever deleted with their run, and the
two places that delete runs (`RunStore.delete_run`, `retention.delete_runs`) delete the
run's attempts explicitly, before its task instances (tests check that no attempt is left
without its task instance). `fillfactor` applies to pages written from now on; existing
pages fill up as before.

SQLite: the same foreign key and index change (SQLite checks a foreign key per inserted
row too, and a state change of a row with a cache key no longer rewrites its index
entry); `attempts` is rebuilt without the constraint (SQLite cannot drop one), still
WITHOUT ROWID. SQLite has no fillfactor.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cadenza.store.tables import JSONDoc, UTCDateTime

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_attempts_run_id_task_instances"
_OLD_INDEX = "ix_task_instances_cache_key_state_ended_at"
_NEW_INDEX = "ix_task_instances_cache_key_run_id"
_PREDICATE = "cache_key IS NOT NULL"
_TI_KEY = ["run_id", "task_id", "map_index"]


def _attempts(*, with_fk: bool) -> sa.Table:
    """The attempts table as revision 0007 (with_fk) or 0008 has it, for SQLite's rebuild."""
    constraints: list[sa.Constraint] = [
        sa.PrimaryKeyConstraint("run_id", "task_id", "map_index", "attempt", name="pk_attempts"),
    ]
    if with_fk:
        constraints.append(sa.ForeignKeyConstraint(
            _TI_KEY, [f"task_instances.{c}" for c in _TI_KEY], name=_FK, ondelete="CASCADE"))
    return sa.Table(
        "attempts", sa.MetaData(),
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
        *constraints,
        sqlite_with_rowid=False,
    )


def _cache_index(name: str, columns: list[str]) -> None:
    op.create_index(name, "task_instances", columns,
                    sqlite_where=sa.text(_PREDICATE), postgresql_where=sa.text(_PREDICATE))


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # Rebuilt from the 0007 definition (reflection would lose WITHOUT ROWID).
        with op.batch_alter_table("attempts", copy_from=_attempts(with_fk=True),
                                  recreate="always") as batch:
            batch.drop_constraint(_FK, type_="foreignkey")
    else:
        op.drop_constraint(_FK, "attempts", type_="foreignkey")
        op.execute("ALTER TABLE task_instances SET (fillfactor = 50)")
    op.drop_index(_OLD_INDEX, table_name="task_instances")
    _cache_index(_NEW_INDEX, ["cache_key", "run_id"])


def downgrade() -> None:
    # Attempts whose task instance is gone (none, unless rows were deleted by hand) would
    # fail the restored constraint.
    op.execute("DELETE FROM attempts WHERE NOT EXISTS (SELECT 1 FROM task_instances t "
               "WHERE t.run_id = attempts.run_id AND t.task_id = attempts.task_id "
               "AND t.map_index = attempts.map_index)")
    op.drop_index(_NEW_INDEX, table_name="task_instances")
    _cache_index(_OLD_INDEX, ["cache_key", "state", "ended_at"])
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("attempts", copy_from=_attempts(with_fk=False),
                                  recreate="always") as batch:
            batch.create_foreign_key(_FK, "task_instances", _TI_KEY, _TI_KEY,
                                     ondelete="CASCADE")
    else:
        op.execute("ALTER TABLE task_instances RESET (fillfactor)")
        op.create_foreign_key(_FK, "attempts", "task_instances", _TI_KEY, _TI_KEY,
                              ondelete="CASCADE")
