"""The SQLite run path's statements (store/sqlite_sql.py) are rendered from the one definition
of the schema and statements (tables.py, runs.py, lineage.py, security.py): the checked-in
module is current, each statement binds exactly the values the SQLAlchemy path binds, and a
URL takes the run path only when SQLAlchemy would read the same file from it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from cadenza.core.records import (
    ArtifactRecord,
    AssetEventRecord,
    AttemptRecord,
    ErrorInfo,
    ErrorKind,
    MetricRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
)
from cadenza.core.states import RunState, TaskState
from cadenza.store import codec, lineage, runs, sqlite_render, sqlite_sql
from cadenza.store.db import create_store_engine
from cadenza.store.dml import PreparedDml
from cadenza.store.failures import mask_url, plain_sqlite_path


def test_the_checked_in_statements_are_rendered_from_the_current_tables() -> None:
    rendered = sqlite_render.render()
    current = Path(sqlite_sql.__file__).read_text()
    assert rendered == current, (
        "store/sqlite_sql.py is out of date with tables.py or the store's Core statements: "
        "run `python -m cadenza.store.sqlite_render`"
    )


AT = datetime(2026, 12, 6, 23, 0, 0, 123456, tzinfo=UTC)
ELSEWHERE = datetime(2026, 12, 6, 18, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5)))
RUN = RunRecord(run_id="r1", pipeline="p", state=RunState.RUNNING, params={"n": 3, "x": [1.5]},
                created_at=AT, started_at=ELSEWHERE, executor="inline", trigger="manual",
                driver_id="h:1:t", heartbeat_at=AT, tags=("a", "b"), extra={"k": {"v": None}})
TI = TaskInstanceRecord(run_id="r1", task_id="t", map_index=2, state=TaskState.SUCCESS,
                        attempt=1, queued_at=AT, started_at=AT, ended_at=ELSEWHERE,
                        output=ValueRef(kind="json", value={"v": [1, "x"]}),
                        error=ErrorInfo(kind=ErrorKind.EXCEPTION, type="ValueError", message="bad", traceback="tb"),
                        cache_key="k", cache_origin={"run_id": "r0"}, worker="w1",
                        map_count=None, reason="because", cache_detail={"fingerprint": "f"})
ATTEMPT = AttemptRecord(run_id="r1", task_id="t", map_index=2, attempt=1,
                        state=TaskState.FAILED, started_at=AT, ended_at=AT, worker="w",
                        error=ErrorInfo(kind=ErrorKind.TIMEOUT, type="E", message="m"), log_path="/l")
ARTIFACT = ArtifactRecord(sha256="ab" * 32, uri="file:///x", size=10, serializer="json",
                          type_name="dict", run_id="r1", task_id="t", map_index=-1, attempt=1,
                          code_fingerprint="fp", input_sha256s=("cd" * 32, "ef" * 32))
EVENT = AssetEventRecord(asset="a/b", version=0, run_id="r1", task_id="t", map_index=-1,
                         attempt=1, artifact_sha256="ab" * 32, created_at=AT)


def _cases() -> list[tuple[str, Any, list[dict[str, Any]]]]:
    """(statement name, Core statement, parameter dicts as codec.py makes them)."""
    return [
        ("insert_run", runs._INSERT_RUN, [codec.run_params(RUN),
                                          codec.run_params(replace(RUN, params={}, tags=()))]),
        ("update_run", runs._UPDATE_RUN, [codec.run_update_params(RUN)]),
        ("insert_ti", runs._INSERT_TI, [codec.ti_params(TI),
                                        codec.ti_params(replace(TI, output=None, error=None))]),
        ("update_ti", runs._UPDATE_TI, [codec.ti_update_params(TI)]),
        ("insert_attempt", runs._INSERT_ATTEMPT, [codec.attempt_params(ATTEMPT)]),
        ("insert_metric", runs._INSERT_METRIC, [
            codec.metric_params(MetricRecord(run_id="r1", task_id="t", map_index=-1,
                                             attempt=1, name="auc", value=1, at=AT)),
            codec.metric_params(MetricRecord(run_id="r1", task_id="t", map_index=-1,
                                             attempt=1, name="m", kind="param",
                                             value="text", at=None))]),
        ("insert_artifact", lineage._insert_artifact("sqlite"),
         [codec.artifact_params(ARTIFACT, AT)]),
        ("insert_artifact_input", lineage._insert_artifact_input("sqlite"),
         codec.artifact_input_params([ARTIFACT])),
        ("insert_asset_event", lineage._insert_asset_event(),
         [codec.asset_event_params(EVENT, AT)]),
        ("renew_lease", runs._RENEW_LEASE,
         [{"k_run_id": "r1", "k_driver_id": "d", "heartbeat_at": ELSEWHERE}]),
        ("find_cached_not_before", runs._FIND_CACHED_NOT_BEFORE,
         [{"cache_key": "k", "state": "success", "not_before": ELSEWHERE}]),
    ]


@pytest.mark.parametrize("name", [c[0] for c in _cases()])
def test_each_statement_binds_what_the_sqlalchemy_path_binds(name: str) -> None:
    """Same SQL text, same values in the same order (datetimes as UTC text, JSON documents as
    json.dumps text, None as NULL), as SQLAlchemy's compiled statement and bind processors
    give them (dml.PreparedDml, what RunStore.write runs)."""
    engine = create_store_engine("sqlite://")  # compiles only; connects to nothing
    try:
        (_, stmt, dicts), = [c for c in _cases() if c[0] == name]
        prepared = PreparedDml(stmt, engine, name)
        assert getattr(sqlite_sql, name.upper()) == prepared.sql
        convert = getattr(sqlite_sql, name)
        ours = [convert(dict(p)) for p in dicts]
        fixed = {"param_1": 1, "param_2": 0} if name.startswith("find_cached") else {}  # LIMIT 1
        theirs = [tuple(v) for v in prepared.parameters([{**p, **fixed} for p in dicts])]
        assert ours == theirs
    finally:
        engine.dispose()


def test_a_naive_datetime_is_refused_as_on_the_sqlalchemy_path() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        sqlite_sql.insert_run(codec.run_params(replace(RUN, created_at=datetime(2026, 1, 1))))


@pytest.mark.parametrize("url", [
    "sqlite:////tmp/cadenza/cadenza.db",
    "sqlite:///relative/dir/cadenza.db",
    "sqlite+pysqlite:////tmp/a b/x.db",
    "sqlite:////tmp/x-1_2+5.db",
])
def test_a_plain_sqlite_url_names_the_file_sqlalchemy_would_open(url: str) -> None:
    path = plain_sqlite_path(url)
    u = make_url(url)
    assert path is not None and path == u.database
    assert mask_url(url) == u.render_as_string(hide_password=True) == url


@pytest.mark.parametrize("url", [
    "sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
    "sqlite:////tmp/x.db?timeout=5", "sqlite:////tmp/ü/x.db", "sqlite:////tmp/a%20b.db",
    "sqlite:////tmp/a#b.db", "sqlite:///~/x.db", "sqlite:////tmp/a,b=c.db", "postgresql+psycopg://u:p@h/db",
    "sqlite+aiosqlite:////tmp/x.db",
])
def test_other_urls_take_the_sqlalchemy_path(url: str) -> None:
    assert plain_sqlite_path(url) is None
