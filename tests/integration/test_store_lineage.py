"""Artifact lineage, asset versions and cache details in the store, on SQLite and PostgreSQL.

Also the 0001 -> 0002 migration of a database that holds data."""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, Table, inspect, text

from cadenza.core.errors import CadenzaError, StoreError
from cadenza.core.records import (
    ArtifactRecord,
    AssetEventRecord,
    RunRecord,
    TaskInstanceRecord,
    WriteBatch,
)
from cadenza.core.states import RunState, TaskState
from cadenza.store import ArtifactNotFound, RunStore, open_store
from cadenza.store.db import alembic_config, create_store_engine
from cadenza.store.tables import SCHEMA_REVISION

T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def new_run(store: RunStore, pipeline: str = "training", created: float = 0) -> str:
    run_id = f"run-{secrets.token_hex(5)}"
    store.create_run(
        RunRecord(run_id=run_id, pipeline=pipeline, state=RunState.RUNNING, created_at=at(created)),
        [],
    )
    return run_id


def art(
    name: str,
    run_id: str,
    task_id: str = "train",
    *,
    inputs: tuple[str, ...] = (),
    map_index: int = -1,
    attempt: int = 1,
    created: float = 0,
) -> ArtifactRecord:
    digest = sha(name)
    return ArtifactRecord(
        sha256=digest,
        uri=f"/artifacts/{digest[:2]}/{digest}.npy",
        size=8_000_128,
        serializer="numpy",
        type_name="numpy.ndarray",
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        attempt=attempt,
        code_fingerprint=sha(f"code of {task_id}"),
        input_sha256s=inputs,
        created_at=at(created),
    )


def event(asset: str, run_id: str, task_id: str = "features", **kw: Any) -> AssetEventRecord:
    fields: dict[str, Any] = {
        "asset": asset,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": -1,
        "attempt": 1,
        "created_at": T0,
    }
    fields.update(kw)
    return AssetEventRecord(**fields)


# --- artifacts -------------------------------------------------------------------------------


def test_an_artifact_round_trips_with_its_inputs_in_argument_order(store: RunStore) -> None:
    run_id = new_run(store)
    raw, labels = art("raw", run_id, "extract"), art("labels", run_id, "labels")
    model = art("model", run_id, "train", inputs=(labels.sha256, raw.sha256), attempt=2)
    store.write(WriteBatch(artifacts=[model, raw, labels]))

    assert store.get_artifact(model.sha256) == model
    assert store.get_artifact(raw.sha256) == raw
    got = store.get_artifact(model.sha256)
    assert got.created_at is not None and got.created_at.tzinfo is UTC


def test_missing_created_at_is_set_by_the_store(store: RunStore) -> None:
    run_id = new_run(store)
    rec = ArtifactRecord(
        sha256=sha("x"),
        uri="memory://x",
        size=None,
        serializer=None,
        type_name=None,
        run_id=run_id,
        task_id="t",
        map_index=-1,
        attempt=1,
        code_fingerprint=None,
    )
    before = datetime.now(UTC)
    store.write(WriteBatch(artifacts=[rec], asset_events=[event("a", run_id, created_at=None)]))
    got = store.get_artifact(rec.sha256)
    assert got.created_at is not None and got.created_at >= before - timedelta(seconds=1)
    assert got.size is None and got.code_fingerprint is None
    latest = store.latest_asset_version("a")
    assert latest is not None and latest.created_at is not None


def test_the_same_bytes_produced_again_keep_their_first_producer_and_its_inputs(
    store: RunStore,
) -> None:
    first, second = new_run(store), new_run(store)
    a, b, c = sha("in-a"), sha("in-b"), sha("in-c")
    store.write(WriteBatch(artifacts=[art("out", first, "train", inputs=(a, b))]))
    # Another run makes the same bytes from other inputs: ignored, not an error.
    store.write(WriteBatch(artifacts=[art("out", second, "fit", inputs=(c,), attempt=3)]))

    got = store.get_artifact(sha("out"))
    assert (got.run_id, got.task_id, got.attempt) == (first, "train", 1)
    assert got.input_sha256s == (a, b)
    assert store.consumers_of(c) == []
    assert store.artifacts_produced_by(second) == []


def test_identical_outputs_of_two_instances_in_one_batch_keep_the_first(store: RunStore) -> None:
    run_id = new_run(store)
    x, y = sha("x"), sha("y")
    store.write(
        WriteBatch(
            artifacts=[
                art("same", run_id, "square", map_index=0, inputs=(x,)),
                art("same", run_id, "square", map_index=1, inputs=(y,)),
            ]
        )
    )
    got = store.get_artifact(sha("same"))
    assert got.map_index == 0 and got.input_sha256s == (x,)


def test_get_artifact_accepts_a_unique_prefix_and_explains_the_rest(store: RunStore) -> None:
    run_id = new_run(store)
    names = [f"artifact-{i}" for i in range(40)]
    store.write(WriteBatch(artifacts=[art(n, run_id, map_index=i) for i, n in enumerate(names)]))
    target = sha(names[7])

    assert store.get_artifact(target[:12]).sha256 == target
    assert store.get_artifact(target[:12].upper()).sha256 == target
    shared = next(
        p for p in (s[:1] for s in map(sha, names)) if sum(sha(n).startswith(p) for n in names) > 1
    )
    with pytest.raises(CadenzaError, match="ambiguous") as ambiguous:
        store.get_artifact(shared)
    assert not isinstance(ambiguous.value, ArtifactNotFound)
    with pytest.raises(ArtifactNotFound) as missing:
        store.get_artifact("ffffffffffffffff0000")
    assert "ffffffffffffffff0000" in str(missing.value)
    assert missing.value.hint
    with pytest.raises(ArtifactNotFound):
        store.get_artifact("%")  # LIKE wildcards are matched literally


def test_get_artifacts_returns_the_known_ones(store: RunStore) -> None:
    run_id = new_run(store)
    store.write(WriteBatch(artifacts=[art("p", run_id), art("q", run_id, inputs=(sha("p"),))]))
    got = store.get_artifacts([sha("q"), sha("p"), sha("unknown")])
    assert set(got) == {sha("p"), sha("q")}
    assert got[sha("q")].input_sha256s == (sha("p"),)


def test_artifacts_produced_by_a_run_and_by_one_of_its_tasks(store: RunStore) -> None:
    run_id, other = new_run(store), new_run(store)
    recs = [
        art("m1", run_id, "square", map_index=1),
        art("m0", run_id, "square", map_index=0),
        art("e", run_id, "extract"),
        art("o", other, "extract"),
    ]
    store.write(WriteBatch(artifacts=recs))

    assert [(a.task_id, a.map_index) for a in store.artifacts_produced_by(run_id)] == [
        ("extract", -1),
        ("square", 0),
        ("square", 1),
    ]
    assert [a.sha256 for a in store.artifacts_produced_by(run_id, "square")] == [
        sha("m0"),
        sha("m1"),
    ]
    assert store.artifacts_produced_by(run_id, "nope") == []


def test_consumers_of_an_artifact_walk_downstream(store: RunStore) -> None:
    run_id = new_run(store)
    raw = art("raw", run_id, "extract", created=0)
    clean = art("clean", run_id, "clean", inputs=(raw.sha256,), created=1)
    stats = art("stats", run_id, "stats", inputs=(raw.sha256,), created=2)
    model = art("model", run_id, "train", inputs=(clean.sha256,), created=3)
    store.write(WriteBatch(artifacts=[model, stats, clean, raw]))

    assert store.consumers_of(raw.sha256) == [clean, stats]
    assert store.consumers_of(clean.sha256) == [model]
    assert store.consumers_of(model.sha256) == []


# --- asset versions --------------------------------------------------------------------------


def test_asset_versions_count_up_per_asset_across_and_within_batches(store: RunStore) -> None:
    r1, r2 = new_run(store), new_run(store)
    store.write(WriteBatch(asset_events=[event("features/user", r1, artifact_sha256=sha("v1"))]))
    store.write(
        WriteBatch(
            asset_events=[
                event("features/user", r2, map_index=0),
                event("models/churn", r2, task_id="train"),
                event("features/user", r2, map_index=1, artifact_sha256=sha("v3")),
            ]
        )
    )

    events = store.list_asset_events("features/user")
    assert [(e.version, e.run_id, e.map_index) for e in events] == [
        (3, r2, 1),
        (2, r2, 0),
        (1, r1, -1),
    ]
    assert events[0].artifact_sha256 == sha("v3") and events[1].artifact_sha256 is None
    assert [e.version for e in store.list_asset_events("features/user", limit=1)] == [3]
    latest = store.latest_asset_version("models/churn")
    assert latest is not None and (latest.version, latest.task_id) == (1, "train")
    assert store.latest_asset_version("never/written") is None
    first = store.get_asset_event("features/user", 1)
    assert first is not None and first.artifact_sha256 == sha("v1")
    assert store.get_asset_event("features/user", 9) is None
    assert store.asset_names() == ["features/user", "models/churn"]


def test_a_failed_batch_assigns_no_version(store: RunStore) -> None:
    run_id = new_run(store)
    bad = WriteBatch(
        asset_events=[event("a", run_id)],
        task_instance_updates=[TaskInstanceRecord(run_id=run_id, task_id="missing")],
    )
    with pytest.raises(StoreError):
        store.write(bad)
    assert store.latest_asset_version("a") is None
    store.write(WriteBatch(asset_events=[event("a", run_id)]))
    assert [e.version for e in store.list_asset_events("a")] == [1]


WRITERS = 6
WRITES_PER_WRITER = 25


def test_concurrent_writers_get_consecutive_versions_without_errors(store: RunStore) -> None:
    """Each batch writes events for two assets (in random order) and two shared artifacts (in
    random order): versions must come out 1..N per asset with no duplicate, no gap and no
    deadlock. Threads use separate pooled connections, so on PostgreSQL the transactions
    really overlap."""
    run_ids = [new_run(store) for _ in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    errors: list[str] = []

    def writer(w: int) -> None:
        rnd = random.Random(w)
        try:
            barrier.wait(timeout=60)
            for i in range(WRITES_PER_WRITER):
                events = [
                    event("shared/a", run_ids[w], map_index=i),
                    event("shared/b", run_ids[w], map_index=i),
                ]
                artifacts = [
                    art(f"common-{i}-0", run_ids[w], map_index=i),
                    art(f"common-{i}-1", run_ids[w], map_index=i),
                ]
                rnd.shuffle(events)
                rnd.shuffle(artifacts)
                store.write(WriteBatch(asset_events=events, artifacts=artifacts))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"writer {w}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    total = WRITERS * WRITES_PER_WRITER
    for asset in ("shared/a", "shared/b"):
        events = store.list_asset_events(asset, limit=total + 10)
        assert sorted(e.version for e in events) == list(range(1, total + 1))
        per_writer = {r: [e.map_index for e in events if e.run_id == r] for r in run_ids}
        # each writer's events are numbered in the order it wrote them
        assert all(v == sorted(v, reverse=True) for v in per_writer.values())
    for i in range(WRITES_PER_WRITER):
        assert store.get_artifact(sha(f"common-{i}-0")).map_index == i


# --- cache details ----------------------------------------------------------------------------


DETAIL = {
    "fingerprint": sha("fp"),
    "functions": {"compute": sha("compute"), "helper": sha("helper")},
    "version": "2",
    "inputs": {"x": sha("x")},
}


def test_cache_detail_round_trips_on_insert_and_update(store: RunStore) -> None:
    run_id = f"run-{secrets.token_hex(4)}"
    rec = TaskInstanceRecord(run_id=run_id, task_id="compute", cache_detail=DETAIL)
    store.create_run(
        RunRecord(run_id=run_id, pipeline="p", state=RunState.RUNNING, created_at=T0), [rec]
    )
    assert store.get_task_instance(run_id, "compute") == rec
    changed = {**DETAIL, "version": None}
    store.write(
        WriteBatch(
            task_instance_updates=[
                TaskInstanceRecord(
                    run_id=run_id,
                    task_id="compute",
                    state=TaskState.SUCCESS,
                    cache_key="k",
                    ended_at=at(1),
                    cache_detail=changed,
                )
            ]
        )
    )
    got = store.get_task_instance(run_id, "compute")
    assert got is not None and got.cache_detail == changed
    hit = store.find_cached("k")
    assert hit is not None and hit.cache_detail == changed


def test_latest_task_instance_is_the_newest_run_of_the_pipeline_with_cache_detail(
    store: RunStore,
) -> None:
    def run_with(pipeline: str, created: float, rows: list[TaskInstanceRecord]) -> str:
        run_id = f"run-{secrets.token_hex(4)}"
        store.create_run(
            RunRecord(
                run_id=run_id, pipeline=pipeline, state=RunState.SUCCESS, created_at=at(created)
            ),
            [TaskInstanceRecord(**{**_fields(r), "run_id": run_id}) for r in rows],
        )
        return run_id

    ok = TaskState.SUCCESS
    old = run_with(
        "p",
        0,
        [_ti("compute", ok, DETAIL), _ti("square", ok, DETAIL, 0), _ti("square", ok, DETAIL, 1)],
    )
    newer = run_with(
        "p",
        10,
        [
            _ti("compute", TaskState.FAILED, {**DETAIL, "version": "3"}),
            _ti("square", ok, DETAIL, 1),
        ],
    )
    run_with("p", 20, [_ti("compute", ok, None)])  # cache off in the newest run
    run_with("other", 30, [_ti("compute", ok, DETAIL)])

    latest = store.latest_task_instance("p", "compute")
    assert latest is not None and latest.run_id == newer and latest.cache_detail is not None
    assert latest.cache_detail["version"] == "3"
    good = store.latest_task_instance("p", "compute", successful=True)
    assert good is not None and good.run_id == old
    anything = store.latest_task_instance("p", "compute", with_cache_detail=False)
    assert anything is not None and anything.cache_detail is None
    square0 = store.latest_task_instance("p", "square", map_index=0)
    assert square0 is not None and square0.run_id == old
    square_any = store.latest_task_instance("p", "square")
    assert square_any is not None and (square_any.run_id, square_any.map_index) == (newer, 1)
    assert store.latest_task_instance("p", "nope") is None
    assert store.latest_task_instance("missing", "compute") is None


def _ti(task_id: str, state: TaskState, detail: dict[str, Any] | None, mi: int = -1) -> Any:
    return TaskInstanceRecord(
        run_id="-", task_id=task_id, map_index=mi, state=state, cache_detail=detail, ended_at=T0
    )


def _fields(r: TaskInstanceRecord) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}


def test_deleting_a_run_deletes_its_asset_events_but_keeps_lineage(store: RunStore) -> None:
    run_id, other = new_run(store), new_run(store)
    store.write(WriteBatch(asset_events=[event("a", run_id)], artifacts=[art("k", run_id)]))
    store.write(WriteBatch(asset_events=[event("a", other)]))
    store.delete_run(run_id)

    assert [(e.version, e.run_id) for e in store.list_asset_events("a")] == [(2, other)]
    assert store.get_artifact(sha("k")).run_id == run_id
    store.write(WriteBatch(asset_events=[event("a", other)]))
    assert store.latest_asset_version("a") is not None
    assert store.latest_asset_version("a").version == 3  # type: ignore[union-attr]


# --- migration 0001 -> 0002 ---------------------------------------------------------------------


def test_a_0001_database_with_data_is_upgraded_on_open(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        command.upgrade(alembic_config(engine), "0001")
        with engine.begin() as conn:
            meta = MetaData()
            runs = Table("runs", meta, autoload_with=conn)
            tis = Table("task_instances", meta, autoload_with=conn)
            assert "cache_detail" not in tis.c
            conn.execute(
                runs.insert(),
                {
                    "run_id": "old-run",
                    "pipeline": "p",
                    "state": "success",
                    "params": {"n": 1},
                    "created_at": T0,
                    "executor": "inline",
                    "trigger": "manual",
                    "source": "",
                    "tags": [],
                    "extra": {},
                },
            )
            conn.execute(
                tis.insert(),
                [
                    {
                        "run_id": "old-run",
                        "task_id": t,
                        "map_index": -1,
                        "state": "success",
                        "attempt": 1,
                        "pool": "default",
                        "reason": "",
                        "cache_key": f"key-{t}",
                        "ended_at": at(1),
                        "output": {"kind": "json", "value": 7},
                    }
                    for t in ("a", "b")
                ],
            )
    finally:
        engine.dispose()

    store = open_store(db_url)
    try:
        with store._engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                SCHEMA_REVISION
            )
            assert {"artifacts", "artifact_inputs", "asset_events"} <= set(
                inspect(conn).get_table_names()
            )
        rows = store.get_task_instances("old-run")
        assert [(r.task_id, r.cache_detail) for r in rows] == [("a", None), ("b", None)]
        assert rows[0].output is not None and rows[0].output.value == 7
        assert store.get_run("old-run").params == {"n": 1}
        hit = store.find_cached("key-a")
        assert hit is not None and hit.run_id == "old-run"
        # the new tables work on the upgraded database
        store.write(
            WriteBatch(
                task_instance_updates=[
                    TaskInstanceRecord(
                        run_id="old-run", task_id="a", state=TaskState.SUCCESS, cache_detail=DETAIL
                    )
                ],
                artifacts=[art("new", "old-run", "a")],
                asset_events=[event("features/user", "old-run")],
            )
        )
        assert store.get_task_instance("old-run", "a").cache_detail == DETAIL  # type: ignore[union-attr]
        assert store.latest_task_instance("p", "a") is not None
        assert store.get_artifact(sha("new")).run_id == "old-run"
        assert [e.version for e in store.list_asset_events("features/user")] == [1]
    finally:
        store.dispose()
