"""The metadata store's tables as ORM classes: SQLAlchemy 2 `Mapped[...]` classes named `*Row`.

Each class is mapped onto its Core table in `tables.py`, which is the one definition of the
schema. Data only: no behaviour, no conversion to records, no engine setup. The store's own
queries use the Core tables and never import this module (nor `sqlalchemy.orm`), so a run
does not pay for the ORM; Alembic's autogenerate (`migrations/env.py`) and ad-hoc sessions
use these classes. `*Row` classes never leave `cadenza.store`; the rest of Cadenza sees the
core dataclasses in `cadenza.core.records`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped

from cadenza.store import tables


class Base(DeclarativeBase):
    metadata = tables.metadata


class RunRow(Base):
    __table__ = tables.runs_table

    run_id: Mapped[str]
    pipeline: Mapped[str]
    state: Mapped[str]
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    executor: Mapped[str]
    trigger: Mapped[str]
    logical_date: Mapped[datetime | None]
    data_interval_start: Mapped[datetime | None]
    data_interval_end: Mapped[datetime | None]
    source: Mapped[str]
    driver_id: Mapped[str | None]
    heartbeat_at: Mapped[datetime | None]
    error: Mapped[str | None]
    tags: Mapped[list[str]]
    extra: Mapped[dict[str, Any]]
    cancel_requested_at: Mapped[datetime | None]


class TaskInstanceRow(Base):
    __table__ = tables.task_instances_table

    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    state: Mapped[str]
    attempt: Mapped[int]
    pool: Mapped[str]
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    next_retry_at: Mapped[datetime | None]
    output: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    cache_key: Mapped[str | None]
    cache_origin: Mapped[dict[str, Any] | None]
    worker: Mapped[str | None]
    map_count: Mapped[int | None]
    reason: Mapped[str]
    cache_detail: Mapped[dict[str, Any] | None]


class AttemptRow(Base):
    __table__ = tables.attempts_table

    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    state: Mapped[str]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    worker: Mapped[str | None]
    error: Mapped[dict[str, Any] | None]
    log_path: Mapped[str | None]


class PoolRow(Base):
    __table__ = tables.pools_table

    name: Mapped[str]
    slots: Mapped[int]
    description: Mapped[str]


class MetricRow(Base):
    __table__ = tables.metrics_table

    id: Mapped[int]
    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    name: Mapped[str]
    kind: Mapped[str]
    value_num: Mapped[float | None]
    value_text: Mapped[str | None]
    at: Mapped[datetime | None]


class ArtifactRow(Base):
    __table__ = tables.artifacts_table

    sha256: Mapped[str]
    uri: Mapped[str]
    size: Mapped[int | None]
    serializer: Mapped[str | None]
    type_name: Mapped[str | None]
    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    code_fingerprint: Mapped[str | None]
    created_at: Mapped[datetime]


class ArtifactInputRow(Base):
    __table__ = tables.artifact_inputs_table

    artifact_sha256: Mapped[str]
    input_sha256: Mapped[str]
    position: Mapped[int]


class AssetEventRow(Base):
    __table__ = tables.asset_events_table

    id: Mapped[int]
    asset: Mapped[str]
    version: Mapped[int]
    run_id: Mapped[str]
    task_id: Mapped[str]
    map_index: Mapped[int]
    attempt: Mapped[int]
    artifact_sha256: Mapped[str | None]
    created_at: Mapped[datetime]


class ScheduleStateRow(Base):
    __table__ = tables.schedule_states_table

    pipeline: Mapped[str]
    paused: Mapped[bool]
    last_logical_date: Mapped[datetime | None]
    asset_versions: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]


class RunKeyRow(Base):
    __table__ = tables.run_keys_table

    pipeline: Mapped[str]
    key: Mapped[str]
    run_id: Mapped[str]
    created_at: Mapped[datetime]


class TriggerEventRow(Base):
    __table__ = tables.trigger_events_table

    id: Mapped[int]
    pipeline: Mapped[str]
    source: Mapped[str]
    message_id: Mapped[str]
    status: Mapped[str]
    run_id: Mapped[str | None]
    error: Mapped[str | None]
    payload: Mapped[dict[str, Any] | None]
    received_at: Mapped[datetime]


class SlaMissRow(Base):
    __table__ = tables.sla_misses_table

    run_id: Mapped[str]
    pipeline: Mapped[str]
    sla_s: Mapped[float]
    deadline_at: Mapped[datetime]
    detected_at: Mapped[datetime]


class UserRow(Base):
    __table__ = tables.users_table

    name: Mapped[str]
    role: Mapped[str]
    password_hash: Mapped[str | None]
    created_at: Mapped[datetime]
    disabled: Mapped[bool]


class ApiTokenRow(Base):
    __table__ = tables.api_tokens_table

    id: Mapped[str]
    user: Mapped[str]
    token_hash: Mapped[str]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class SecretRow(Base):
    __table__ = tables.secrets_table

    name: Mapped[str]
    ciphertext: Mapped[str]
    updated_at: Mapped[datetime]


class AuditRow(Base):
    __table__ = tables.audit_table

    id: Mapped[int]
    at: Mapped[datetime]
    who: Mapped[str]
    method: Mapped[str]
    path: Mapped[str]
    status: Mapped[int]
    detail: Mapped[str | None]
