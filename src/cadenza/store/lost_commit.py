"""A write whose connection was lost mid-commit: did it land, and may it be sent again?

PostgreSQL's writer sends a whole transaction in one round trip (store/pgwrite.py: the
statements and a Sync, committed at the Sync; in BEGIN ... COMMIT when synchronous). When the
connection dies during that trip (the server restarted, a `pg_terminate_backend`, a proxy or
network cut), the client cannot tell whether the commit happened. Failing the run for it (as before) threw away a run for a transient fault; sending
the batch again blindly could insert it twice. `RunStore.write` instead asks the database,
on a new connection, whether the batch's first inserted row exists (`landed`):

- it exists: the commit happened (a transaction is atomic: all of it landed);
- it does not: nothing of the batch landed, and it is written again, once;
- a batch that inserts nothing is updates of whole rows by key, which are the same when
  applied twice: written again;
- a batch whose only inserts have no natural key (metrics, asset events without attempts)
  cannot be told apart: the error is raised as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, select

from cadenza.core.records import WriteBatch
from cadenza.store.tables import attempts_table, runs_table, task_instances_table


def probe(batch: WriteBatch) -> Any | None:
    """A SELECT EXISTS(...) of the batch's first inserted row with a natural key; None when
    the batch inserts no such row."""
    if batch.attempts:
        a = batch.attempts[0]
        t = attempts_table.c
        where = and_(t.run_id == a.run_id, t.task_id == a.task_id,
                     t.map_index == a.map_index, t.attempt == a.attempt)
        return select(exists().where(where))
    if batch.new_task_instances:
        ti = batch.new_task_instances[0]
        c = task_instances_table.c
        where = and_(c.run_id == ti.run_id, c.task_id == ti.task_id,
                     c.map_index == ti.map_index)
        return select(exists().where(where))
    if batch.new_runs:
        return select(exists().where(runs_table.c.run_id == batch.new_runs[0].run_id))
    return None


def idempotent(batch: WriteBatch) -> bool:
    """True when writing `batch` twice leaves the same rows as writing it once: only
    updates of whole rows by key (and artifacts, which keep their first record)."""
    return not (batch.new_runs or batch.new_task_instances or batch.attempts
                or batch.metrics or batch.asset_events)
