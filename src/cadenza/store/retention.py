"""Retention in the metadata store: which runs a policy deletes, deleting them in batches,
and which of their artifacts nothing references any more.

What belongs here: the SQL of `cadenza gc` and `cadenza runs delete`. What does not: the
files (the artifact store deletes artifacts, `core.logfiles` the logs; the CLI calls them
after our transaction has committed), the rules' wording (`core/retention.py`).

Deleting is one transaction per batch of runs (`delete_runs`): lock the runs, re-check that
each may go (finished, or crashed with --force; not the producer of an asset's newest
version), collect the artifacts their task instances and asset versions reference and the
log paths of their attempts, delete the rows (asset events, metrics, attempts, task
instances, run keys, SLA misses, runs), then, still in the transaction, keep only the
artifacts no remaining task instance or asset event references. The lineage records of those
artifacts are deleted later, by `forget_artifacts`, once the caller has deleted their files:
if the process dies between the two, the records stay, their producer run is gone, and the
next gc finds them again through `orphan_artifacts`.

Cost (bench/gc.py, 10,000 runs): each batch is a handful of statements with IN lists of up
to 500 ids, and one scan of the remaining task instances' output column for the re-check
(no index on a JSON field; the scan is ~tens of ms for 30,000 rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select

from cadenza.core import clock
from cadenza.core.errors import RunNotFound, UsageError
from cadenza.core.retention import RunsDeleted, RunSelection, StoredArtifact
from cadenza.core.states import RunState
from cadenza.store.failures import store_error
from cadenza.store.tables import (
    artifact_inputs_table,
    artifacts_table,
    asset_events_table,
    attempts_table,
    metrics_table,
    run_keys_table,
    runs_table,
    sla_misses_table,
    task_instances_table,
)

log = logging.getLogger(__name__)

_runs = runs_table
_tis = task_instances_table
_events = asset_events_table
_arts = artifacts_table

# IN lists stay far below SQLite's 32766 and PostgreSQL's 65535 host parameters.
BATCH = 500
_FINAL = tuple(s.value for s in RunState if s.is_final)


# Prebuilt statements; the id lists are expanding bind parameters, so building a statement
# does not coerce each id (that coercion was ~1.5 s of a 10,000-run gc; cProfile).
def _ids() -> Any:
    return bindparam("ids", expanding=True)


_out = _tis.c.output
_SHA_OF_OUTPUT = _out["sha256"].as_string()
_REFS_OF_RUNS = (
    select(_SHA_OF_OUTPUT, _out["uri"].as_string(), _out["size"].as_integer())
    .where(_tis.c.run_id.in_(_ids()), _out.is_not(None), _out["kind"].as_string() == "artifact")
    .distinct())
_EVENT_SHAS_OF_RUNS = select(_events.c.artifact_sha256).where(
    _events.c.run_id.in_(_ids()), _events.c.artifact_sha256.is_not(None))
_ARTIFACTS_BY_SHA = select(_arts.c.sha256, _arts.c.uri, _arts.c.size).where(
    _arts.c.sha256.in_(_ids()))
_ARTIFACTS_OF_RUNS = select(_arts.c.sha256, _arts.c.uri, _arts.c.size).where(
    _arts.c.run_id.in_(_ids()))
_REFERENCED_BY_OUTPUTS = select(_SHA_OF_OUTPUT).where(
    _out.is_not(None), _SHA_OF_OUTPUT.in_(_ids())).distinct()
_REFERENCED_BY_EVENTS = select(_events.c.artifact_sha256).where(
    _events.c.artifact_sha256.in_(_ids())).distinct()
_RUNS_TO_CHECK = select(_runs.c.run_id, _runs.c.state, _runs.c.driver_id,
                        _runs.c.heartbeat_at).where(_runs.c.run_id.in_(_ids()))
_LOGS_OF_RUNS = select(attempts_table.c.log_path).where(
    attempts_table.c.run_id.in_(_ids()), attempts_table.c.log_path.is_not(None))
# Children first (PostgreSQL checks the foreign keys per statement).
_DELETE_RUN_ROWS = tuple(
    delete(t).where(t.c.run_id.in_(_ids()))
    for t in (_events, metrics_table, attempts_table, _tis, run_keys_table, sla_misses_table,
              _runs))
_DELETE_EDGES = delete(artifact_inputs_table).where(
    artifact_inputs_table.c.artifact_sha256.in_(_ids()))
_DELETE_ARTIFACTS = delete(_arts).where(_arts.c.sha256.in_(_ids()))


def _chunks(items: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _wrap(store: Any, action: str, fn: Any) -> Any:
    from sqlalchemy import exc

    try:
        return fn()
    except exc.SQLAlchemyError as e:
        raise store_error(e, store.url, action) from e


def _newest_asset_producers(conn: Connection) -> dict[str, str]:
    """run id -> asset, for the runs that produced the newest version of an asset."""
    newest = (select(_events.c.asset, func.max(_events.c.version).label("v"))
              .group_by(_events.c.asset).subquery())
    q = select(_events.c.run_id, _events.c.asset).join(
        newest, (newest.c.asset == _events.c.asset) & (newest.c.v == _events.c.version))
    return {run_id: asset for run_id, asset in conn.execute(q)}


def select_runs(
    store: Any,
    *,
    older_than: timedelta | None = None,
    keep_last: int | None = None,
    pipeline: str | None = None,
) -> RunSelection:
    """The runs a retention policy deletes: created more than `older_than` ago (if given)
    and not among the `keep_last` newest of their pipeline (if given); at least one of the
    two is required. Unfinished runs and producers of an asset's newest version are kept and
    listed apart (they count toward `keep_last` like any run)."""
    if older_than is None and keep_last is None:
        raise UsageError("no retention policy given: this would delete nothing",
                         hint="say what to delete: --older-than 30d, --keep-last 10, or both")
    r = _runs.c
    rank = func.row_number().over(partition_by=r.pipeline,
                                  order_by=(r.created_at.desc(), r.run_id.desc())).label("rank")
    ranked = select(r.run_id, r.state, r.created_at, rank)
    if pipeline is not None:
        ranked = ranked.where(r.pipeline == pipeline)
    sub = ranked.subquery()
    q = select(sub.c.run_id, sub.c.state)
    if keep_last is not None:
        q = q.where(sub.c.rank > keep_last)
    if older_than is not None:
        q = q.where(sub.c.created_at < clock.now() - older_than)
    q = q.order_by(sub.c.created_at.desc(), sub.c.run_id.desc())

    def read() -> RunSelection:
        with store._read_engine.connect() as conn:
            rows = list(conn.execute(q))
            protected = _newest_asset_producers(conn)
        selection = RunSelection()
        for run_id, state in rows:
            if state not in _FINAL:
                selection.unfinished.append(run_id)
            elif run_id in protected:
                selection.newest_asset[run_id] = protected[run_id]
            else:
                selection.delete.append(run_id)
        return selection

    result: RunSelection = _wrap(store, "selecting runs to delete", read)
    return result


def _artifact_refs(conn: Connection, run_ids: Sequence[str]) -> dict[str, StoredArtifact]:
    """The artifacts these runs' task instances and asset versions reference."""
    found: dict[str, StoredArtifact] = {}
    # The output's fields are extracted by the database: decoding each output document in
    # Python was most of the time of a batch (cProfile, bench/gc.py).
    for sha, uri, size in conn.execute(_REFS_OF_RUNS, {"ids": run_ids}):
        if sha and uri:
            found[sha] = StoredArtifact(sha256=sha, uri=uri, size=size)
    shas = list(conn.scalars(_EVENT_SHAS_OF_RUNS, {"ids": run_ids}))
    missing = [s for s in shas if s not in found]
    if missing:
        for sha, uri, size in conn.execute(_ARTIFACTS_BY_SHA, {"ids": missing}):
            found[sha] = StoredArtifact(sha256=sha, uri=uri, size=size)
    # Lineage records credited to these runs: their artifacts may be referenced by nobody
    # (a run retried after writing them), and their records go with them.
    for sha, uri, size in conn.execute(_ARTIFACTS_OF_RUNS, {"ids": run_ids}):
        if sha not in found and uri:
            found[sha] = StoredArtifact(sha256=sha, uri=uri, size=size)
    return found


def _still_referenced(conn: Connection, shas: Sequence[str]) -> set[str]:
    """Which of `shas` a task instance output or an asset event references, as `conn` sees
    the store now (inside the deleting transaction: after its own deletes)."""
    referenced: set[str] = set()
    for part in _chunks(list(shas)):
        referenced.update(conn.scalars(_REFERENCED_BY_OUTPUTS, {"ids": list(part)}))
        referenced.update(conn.scalars(_REFERENCED_BY_EVENTS, {"ids": list(part)}))
    return referenced


def delete_runs(
    store: Any,
    run_ids: Sequence[str],
    *,
    is_held: Callable[[str | None, datetime | None], bool],
    force: bool = False,
    dry_run: bool = False,
    on_batch: Callable[[RunsDeleted], None] | None = None,
) -> RunsDeleted:
    """Delete these runs and everything under them, `BATCH` runs per transaction.

    Cases, re-checked under each transaction's lock (a run may have changed since it was
    selected):
    1. A run that does not exist (any more) is skipped: "not found".
    2. An unfinished run is skipped, unless `force` and no live driver holds it: a crashed
       or never-claimed run. `is_held(driver_id, heartbeat_at)` is the engine's liveness rule
       (`engine.lease.is_held`: a driver, a current lease, a process not known dead); the
       store decides nothing about liveness, it is handed the rule.
    3. A run that produced the newest version of an asset is skipped.
    4. Everything else is deleted. The result lists the artifacts that no remaining row
       references (the caller deletes their files, then calls `forget_artifacts`) and the
       log files of the deleted attempts.
    `on_batch` is called after each batch has committed, with what that batch deleted: the
    moment to delete its files. With `dry_run` every batch runs in ONE transaction that is
    rolled back at the end: the report is exactly what a real run would do (an artifact
    shared by runs of two batches is freed by the second), and nothing changes; on SQLite
    the write lock is held meanwhile, as during a real gc.
    """
    ids = list(dict.fromkeys(run_ids))
    total = RunsDeleted()

    def add(part: RunsDeleted) -> None:
        total.run_ids.extend(part.run_ids)
        total.skipped.update(part.skipped)
        total.unreferenced.extend(part.unreferenced)
        total.log_paths.extend(part.log_paths)
        if on_batch is not None:
            on_batch(part)

    def work() -> None:
        if dry_run:
            with store._engine.connect() as conn:
                txn = conn.begin()
                try:
                    for part in _chunks(ids):
                        add(_delete_in(conn, list(part), force=force, is_held=is_held))
                finally:
                    txn.rollback()
            return
        for part in _chunks(ids):
            with store._engine.begin() as conn:
                done = _delete_in(conn, list(part), force=force, is_held=is_held)
            add(done)  # committed: now the files may go

    _wrap(store, "deleting runs", work)
    return total


def _delete_in(conn: Connection, ids: list[str], *, force: bool,
               is_held: Callable[[str | None, datetime | None], bool]) -> RunsDeleted:
    q = _RUNS_TO_CHECK
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()  # a concurrent claim (resume) waits for us, then finds none
    rows = {run_id: (state, driver, hb)
            for run_id, state, driver, hb in conn.execute(q, {"ids": ids})}
    protected = _newest_asset_producers(conn)
    result = RunsDeleted()
    for run_id in ids:
        if run_id not in rows:
            result.skipped[run_id] = "not found"
            continue
        state, driver, hb = rows[run_id]
        if state not in _FINAL:
            if not force:
                result.skipped[run_id] = (f"it is {state}: wait for it to end (or cancel it); "
                                          "--force deletes a crashed run no driver holds")
                continue
            if is_held(driver, hb):
                result.skipped[run_id] = (f"it is {state} and its driver {driver} is alive "
                                          f"(heartbeat {hb:%Y-%m-%d %H:%M:%S})")
                continue
        if run_id in protected:
            result.skipped[run_id] = (f"it produced the newest version of asset "
                                      f"'{protected[run_id]}'")
            continue
        result.run_ids.append(run_id)
    gone = result.run_ids
    if not gone:
        return result
    candidates = _artifact_refs(conn, gone)
    result.log_paths.extend(conn.scalars(_LOGS_OF_RUNS, {"ids": gone}))
    for stmt in _DELETE_RUN_ROWS:
        conn.execute(stmt, {"ids": gone})
    keep = _still_referenced(conn, list(candidates))
    result.unreferenced.extend(a for sha, a in sorted(candidates.items()) if sha not in keep)
    return result


def resolve_run_ids(store: Any, run_ids: Sequence[str]) -> list[str]:
    """Resolve ids or unique prefixes to run ids (RunNotFound naming the first unknown)."""
    out: list[str] = []
    for rid in run_ids:
        try:
            out.append(store.resolve_run_id(rid))
        except RunNotFound:
            raise RunNotFound(f"no run with id '{rid}'",
                              hint="list run ids with `cadenza runs list`") from None
    return out


def orphan_artifacts(store: Any) -> list[StoredArtifact]:
    """Lineage records whose producer run is gone and that nothing references: left by an
    earlier gc that stopped before it finished, or by `RunStore.delete_run`."""

    def read() -> list[StoredArtifact]:
        with store._read_engine.connect() as conn:
            rows = list(conn.execute(
                select(_arts.c.sha256, _arts.c.uri, _arts.c.size).where(
                    ~select(_runs.c.run_id).where(_runs.c.run_id == _arts.c.run_id).exists())))
            keep = _still_referenced(conn, [sha for sha, _, _ in rows])
        return [StoredArtifact(sha256=sha, uri=uri, size=size)
                for sha, uri, size in rows if sha not in keep and uri]

    result: list[StoredArtifact] = _wrap(store, "finding unreferenced artifacts", read)
    return result


def forget_artifacts(store: Any, shas: Sequence[str]) -> int:
    """Delete the lineage records (and input edges) of artifacts whose files are gone, in one
    transaction per batch; a record that something references again is kept. How many."""

    def work() -> int:
        count = 0
        for part in _chunks(list(shas)):
            with store._engine.begin() as conn:
                keep = _still_referenced(conn, part)
                drop = [sha for sha in part if sha not in keep]
                if not drop:
                    continue
                conn.execute(_DELETE_EDGES, {"ids": drop})
                count += conn.execute(_DELETE_ARTIFACTS, {"ids": drop}).rowcount
        return count

    result: int = _wrap(store, "forgetting deleted artifacts", work)
    return result


__all__ = ["BATCH", "delete_runs", "forget_artifacts", "orphan_artifacts", "resolve_run_ids",
           "select_runs"]
