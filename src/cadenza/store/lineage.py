"""Artifact lineage and asset versions in the metadata store: statements, row conversion, queries.

What belongs here: the DML `RunStore.write` runs for `WriteBatch.artifacts` and
`WriteBatch.asset_events`, and the read queries behind RunStore's lineage/asset methods.
What does not: walking the lineage graph or printing it (`cadenza.artifacts.lineage`), the
transaction machinery (`dml.py`), table definitions (`tables.py`).

Three rules the statements implement, on SQLite and PostgreSQL alike:
1. The same bytes produced twice keep their FIRST producer: artifacts are inserted with
   ON CONFLICT DO NOTHING, and an input edge is only inserted when the artifact row's
   producer is the instance writing it (INSERT ... SELECT ... WHERE producer matches), so two
   producers' inputs never mix.
2. An asset's versions are 1, 2, 3 ... without gaps or duplicates: the version is computed as
   MAX(version) + 1 by the INSERT itself, in the writer's transaction. SQLite serialises writers
   with BEGIN IMMEDIATE. PostgreSQL (READ COMMITTED) takes a transaction-scoped advisory lock
   per asset first, in sorted key order (no deadlock between two writers of several assets);
   the next statement's snapshot then sees the version the previous holder committed.
   UNIQUE(asset, version) backs this up: a bug shows as an error, never as a duplicate.
3. Artifact rows are inserted in sha256 order, so that two PostgreSQL writers inserting the
   same artifacts wait on each other in one order instead of deadlocking.

These rows are rare (one per artifact output, one per outlet), so the cost that matters is
the one of a batch without them: nothing (no statement is added).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Insert,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
)

from cadenza.core.errors import ArtifactNotFound, UsageError
from cadenza.core.records import ArtifactRecord, AssetEventRecord
from cadenza.store.codec import (
    artifact_input_params,
    artifact_params,
    asset_event_params,
    by_sha,
)
from cadenza.store.db import dialect_insert
from cadenza.store.dml import PreparedDml, Step
from cadenza.store.tables import (
    artifact_inputs_table,
    artifacts_table,
    asset_events_table,
)

_a = artifacts_table
_ai = artifact_inputs_table
_e = asset_events_table

# SQLite allows 32766 host parameters per statement, PostgreSQL 65535; IN lists stay far below.
_IN_CHUNK = 500


# ---------------------------------------------------------------------------------------------
# Write statements (built per dialect: ON CONFLICT is dialect-specific)


def _dialect_insert(dialect: str, table: Any) -> Any:
    return dialect_insert(dialect, table)


def _insert_artifact(dialect: str) -> Insert:
    ins = _dialect_insert(dialect, _a).values({c.name: bindparam(c.name) for c in _a.columns})
    stmt: Insert = ins.on_conflict_do_nothing(index_elements=[_a.c.sha256])
    return stmt


def _insert_artifact_input(dialect: str) -> Insert:
    # The edge goes in only if this instance is the artifact's recorded (first) producer.
    source = select(
        _a.c.sha256,
        bindparam("input_sha256", type_=String()),
        bindparam("position", type_=Integer()),
    ).where(
        _a.c.sha256 == bindparam("artifact_sha256"),
        _a.c.run_id == bindparam("run_id"),
        _a.c.task_id == bindparam("task_id"),
        _a.c.map_index == bindparam("map_index"),
        _a.c.attempt == bindparam("attempt"),
    )
    ins = _dialect_insert(dialect, _ai).from_select(
        ["artifact_sha256", "input_sha256", "position"], source
    )
    stmt: Insert = ins.on_conflict_do_nothing(
        index_elements=[_ai.c.artifact_sha256, _ai.c.input_sha256]
    )
    return stmt


def _insert_asset_event() -> Insert:
    next_version = (
        select(func.coalesce(func.max(_e.c.version), literal_column("0")) + literal_column("1"))
        .where(_e.c.asset == bindparam("asset", type_=String()))
        .scalar_subquery()
    )
    values: dict[str, Any] = {
        c.name: bindparam(c.name) for c in _e.columns if c.name not in ("id", "version")
    }
    values["version"] = next_version
    return _e.insert().values(values)


# pg_advisory_xact_lock(bigint): held until the transaction ends.
_LOCK_ASSET: Select[Any] = select(
    func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger()))
)


def asset_lock_key(asset: str) -> int:
    """A signed 64-bit advisory lock key for an asset name (a collision only serialises two
    assets' writers, it never breaks correctness)."""
    digest = hashlib.sha256(b"cadenza.asset:" + asset.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LineageDml:
    """The prebuilt statements for one engine."""

    __slots__ = ("insert_artifact", "insert_artifact_input", "insert_asset_event", "lock_asset")

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name
        self.insert_artifact = PreparedDml(_insert_artifact(dialect), engine, "artifacts")
        self.insert_artifact_input = PreparedDml(
            _insert_artifact_input(dialect), engine, "artifact inputs"
        )
        self.insert_asset_event = PreparedDml(_insert_asset_event(), engine, "asset events")
        self.lock_asset = (
            PreparedDml(_LOCK_ASSET, engine, "asset locks") if dialect == "postgresql" else None
        )

    def steps(
        self,
        artifacts: Sequence[ArtifactRecord],
        asset_events: Sequence[AssetEventRecord],
        now: datetime,
    ) -> list[Step]:
        """The steps that write these records (none for empty lists)."""
        steps: list[Step] = []
        if artifacts:
            ordered = sorted(artifacts, key=by_sha)  # rule 3 of the module docstring
            steps.append((self.insert_artifact, [artifact_params(a, now) for a in ordered], False))
            edges = artifact_input_params(ordered)
            if edges:
                steps.append((self.insert_artifact_input, edges, False))
        if asset_events:
            if self.lock_asset is not None:
                keys = sorted({asset_lock_key(e.asset) for e in asset_events})
                steps.append((self.lock_asset, [{"lock_key": k} for k in keys], False))
            steps.append(
                (self.insert_asset_event, [asset_event_params(e, now) for e in asset_events],
                 False)
            )
        return steps


# ---------------------------------------------------------------------------------------------
# Reads

_ARTIFACT_COLUMNS = (
    _a.c.sha256,
    _a.c.uri,
    _a.c.size,
    _a.c.serializer,
    _a.c.type_name,
    _a.c.run_id,
    _a.c.task_id,
    _a.c.map_index,
    _a.c.attempt,
    _a.c.code_fingerprint,
    _a.c.created_at,
)
_EVENT_COLUMNS = (
    _e.c.asset,
    _e.c.version,
    _e.c.run_id,
    _e.c.task_id,
    _e.c.map_index,
    _e.c.attempt,
    _e.c.artifact_sha256,
    _e.c.created_at,
)


def _artifact_from_row(row: Sequence[Any], inputs: tuple[str, ...]) -> ArtifactRecord:
    (sha, uri, size, serializer, type_name, run_id, task_id, map_index, attempt, fp, created) = row
    return ArtifactRecord(
        sha256=sha,
        uri=uri,
        size=size,
        serializer=serializer,
        type_name=type_name,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        attempt=attempt,
        code_fingerprint=fp,
        input_sha256s=inputs,
        created_at=created,
    )


def _event_from_row(row: Sequence[Any]) -> AssetEventRecord:
    asset, version, run_id, task_id, map_index, attempt, sha, created_at = row
    return AssetEventRecord(
        asset=asset,
        version=version,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        attempt=attempt,
        artifact_sha256=sha,
        created_at=created_at,
    )


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _inputs_of(conn: Connection, shas: Sequence[str]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for chunk in _chunks(shas):
        q = (
            select(_ai.c.artifact_sha256, _ai.c.input_sha256)
            .where(_ai.c.artifact_sha256.in_(chunk))
            .order_by(_ai.c.artifact_sha256, _ai.c.position)
        )
        for artifact, input_sha in conn.execute(q):
            found.setdefault(artifact, []).append(input_sha)
    return {k: tuple(v) for k, v in found.items()}


def _with_inputs(conn: Connection, rows: Sequence[Sequence[Any]]) -> list[ArtifactRecord]:
    inputs = _inputs_of(conn, list(dict.fromkeys(r[0] for r in rows))) if rows else {}
    return [_artifact_from_row(r, inputs.get(r[0], ())) for r in rows]


def _not_found(what: str) -> ArtifactNotFound:
    return ArtifactNotFound(
        f"no artifact with SHA-256 {what!r} in the lineage records",
        hint="copy the SHA-256 from `cadenza runs show RUN_ID` (a unique prefix is enough), "
        "or give an asset name; only outputs stored in the artifact store have lineage",
    )


def get_artifact(conn: Connection, sha_or_prefix: str) -> ArtifactRecord:
    wanted = sha_or_prefix.strip().lower()
    if not wanted:
        raise UsageError("empty artifact SHA-256", hint="give a SHA-256 or a unique prefix")
    row = conn.execute(select(*_ARTIFACT_COLUMNS).where(_a.c.sha256 == wanted)).first()
    if row is None:
        # LIKE alone is case-insensitive on SQLite; substr() makes the match exact.
        rows = conn.execute(
            select(*_ARTIFACT_COLUMNS)
            .where(
                _a.c.sha256.startswith(wanted, autoescape=True),
                func.substr(_a.c.sha256, 1, len(wanted)) == wanted,
            )
            .order_by(_a.c.sha256)
            .limit(6)
        ).all()
        if not rows:
            raise _not_found(sha_or_prefix)
        if len(rows) > 1:
            shown = ", ".join(str(r[0])[:16] for r in rows[:5])
            more = ", ..." if len(rows) > 5 else ""
            raise UsageError(
                f"artifact prefix '{sha_or_prefix}' is ambiguous: it matches {shown}{more}",
                hint="type more characters of the SHA-256",
            )
        row = rows[0]
    return _with_inputs(conn, [row])[0]


def get_artifacts(conn: Connection, shas: Sequence[str]) -> dict[str, ArtifactRecord]:
    wanted = list(dict.fromkeys(shas))
    rows: list[Sequence[Any]] = []
    for chunk in _chunks(wanted):
        rows.extend(conn.execute(select(*_ARTIFACT_COLUMNS).where(_a.c.sha256.in_(chunk))))
    return {a.sha256: a for a in _with_inputs(conn, rows)}


def artifacts_produced_by(
    conn: Connection, run_id: str, task_id: str | None
) -> list[ArtifactRecord]:
    q = select(*_ARTIFACT_COLUMNS).where(_a.c.run_id == run_id)
    if task_id is not None:
        q = q.where(_a.c.task_id == task_id)
    q = q.order_by(_a.c.task_id, _a.c.map_index, _a.c.attempt, _a.c.sha256)
    return _with_inputs(conn, conn.execute(q).all())


def consumers_of(conn: Connection, sha256: str, limit: int | None = None) -> list[ArtifactRecord]:
    q = (
        select(*_ARTIFACT_COLUMNS)
        .join(_ai, _ai.c.artifact_sha256 == _a.c.sha256)
        .where(_ai.c.input_sha256 == sha256)
        .order_by(_a.c.created_at, _a.c.sha256)
    )
    if limit is not None:
        q = q.limit(limit)
    return _with_inputs(conn, conn.execute(q).all())


def list_asset_events(conn: Connection, asset: str, limit: int) -> list[AssetEventRecord]:
    q = select(*_EVENT_COLUMNS).where(_e.c.asset == asset).order_by(_e.c.version.desc())
    return [_event_from_row(r) for r in conn.execute(q.limit(limit))]


def get_asset_event(conn: Connection, asset: str, version: int) -> AssetEventRecord | None:
    q = select(*_EVENT_COLUMNS).where(_e.c.asset == asset, _e.c.version == version)
    row = conn.execute(q).first()
    return None if row is None else _event_from_row(row)


def asset_names(conn: Connection) -> list[str]:
    return [str(n) for n in conn.scalars(select(_e.c.asset).distinct().order_by(_e.c.asset))]
