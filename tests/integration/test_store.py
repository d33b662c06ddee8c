"""RunStore on SQLite and PostgreSQL: records round-trip, write() batching, queries, pools,
run ids, errors. Leases: test_store_leases.py; migrations: test_store_migrations.py;
several writer processes: test_store_concurrency.py."""

from __future__ import annotations

import dataclasses
import multiprocessing
import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cadenza.core.errors import CadenzaError, RunNotFound, StoreError
from cadenza.core.records import (
    AttemptRecord,
    ErrorInfo,
    ErrorKind,
    MetricRecord,
    PoolRecord,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
    WriteBatch,
)
from cadenza.core.states import RunState, TaskState
from cadenza.store import RunStore, open_store

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_id(prefix: str = "run") -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


def make_run(run_id: str | None = None, **kw: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": run_id or new_id(),
        "pipeline": "training",
        "state": RunState.QUEUED,
        "created_at": T0,
    }
    fields.update(kw)
    return RunRecord(**fields)


def full_run(run_id: str) -> RunRecord:
    """A run with every field set to something other than its default."""
    return RunRecord(
        run_id=run_id,
        pipeline="fraud_training",
        state=RunState.RUNNING,
        params={"lr": 0.01, "layers": [64, 32], "name": "ünïcødé", "nested": {"a": None}},
        created_at=at(0),
        started_at=at(1),
        ended_at=at(2),
        executor="processes",
        trigger="backfill",
        logical_date=at(-86400),
        data_interval_start=at(-2 * 86400),
        data_interval_end=at(-86400),
        source="pipelines/fraud.py:fraud_training",
        driver_id="host:123:abc",
        heartbeat_at=at(3),
        error="task 'train' failed",
        tags=("nightly", "gpu"),
        extra={"git_sha": "abc123", "n": 3},
    )


def full_ti(run_id: str, task_id: str = "train", map_index: int = 2) -> TaskInstanceRecord:
    return TaskInstanceRecord(
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        state=TaskState.FAILED,
        attempt=3,
        pool="gpu",
        queued_at=at(10),
        started_at=at(11),
        ended_at=at(12),
        next_retry_at=at(13),
        output=ValueRef(
            kind="artifact",
            uri="file:///artifacts/ab/cdef",
            sha256="ab" * 32,
            serializer="pickle",
            size=12345,
            type_name="pandas.DataFrame",
        ),
        error=ErrorInfo(
            kind="exception",
            type="builtins.ValueError",
            message="bad value\nsecond line",
            traceback="Traceback (most recent call last):\n  ...",
            type_mro=("builtins.ValueError", "builtins.Exception"),
        ),
        cache_key="k" * 64,
        cache_origin={"run_id": "other", "task_id": "train", "map_index": -1},
        worker="host:999",
        map_count=7,
        reason="retries exhausted",
    )


def ti(run_id: str, task_id: str, map_index: int = -1, **kw: Any) -> TaskInstanceRecord:
    fields: dict[str, Any] = {"run_id": run_id, "task_id": task_id, "map_index": map_index}
    return TaskInstanceRecord(**fields, **kw)


def attempt(run_id: str, task_id: str, n: int, map_index: int = -1, **kw: Any) -> AttemptRecord:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "attempt": n,
        "state": TaskState.RUNNING,
        "started_at": at(n),
        "ended_at": None,
    }
    fields.update(kw)
    return AttemptRecord(**fields)


# --- round trips -----------------------------------------------------------------------------


def test_run_round_trips_every_field(store: RunStore) -> None:
    run = full_run(new_id())
    store.create_run(run, [])
    got = store.get_run(run.run_id)
    assert got == run
    assert got.created_at.tzinfo is UTC and got.logical_date is not None
    assert got.logical_date.tzinfo is UTC


def test_run_with_defaults_round_trips(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    assert store.get_run(run.run_id) == run


def test_task_instance_round_trips_every_field(store: RunStore) -> None:
    run = make_run()
    rec = full_ti(run.run_id)
    store.create_run(run, [rec])
    assert store.get_task_instance(run.run_id, "train", 2) == rec
    assert store.get_task_instances(run.run_id) == [rec]


def test_json_output_and_defaults_round_trip(store: RunStore) -> None:
    run = make_run()
    recs = [
        ti(run.run_id, "a", output=ValueRef(kind="json", value={"x": [1, 2.5, "s", None]})),
        ti(run.run_id, "b", output=ValueRef(kind="json", value=None)),
        ti(run.run_id, "c"),
    ]
    store.create_run(run, recs)
    assert store.get_task_instances(run.run_id) == recs


def test_attempt_round_trips_every_field(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "train", 0)])
    a = AttemptRecord(
        run_id=run.run_id,
        task_id="train",
        map_index=0,
        attempt=1,
        state=TaskState.UP_FOR_RETRY,
        started_at=at(1),
        ended_at=at(2),
        worker="host:42",
        error=ErrorInfo(kind=ErrorKind.TIMEOUT, type="cadenza.core.errors.TaskTimeout", message="1 s"),
        log_path="logs/run/train/0/1.log",
    )
    store.write(WriteBatch(attempts=[a]))
    assert store.get_attempts(run.run_id) == [a]


def test_datetimes_in_other_zones_come_back_as_the_same_instant_in_utc(store: RunStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 1, 14, 0, 0, 5, tzinfo=plus2)
    run = make_run(created_at=local)
    store.create_run(run, [])
    got = store.get_run(run.run_id).created_at
    assert got == local
    assert got.tzinfo is UTC
    assert got.hour == 12 and got.microsecond == 5


def test_naive_datetime_is_refused_with_a_store_error(store: RunStore) -> None:
    run = make_run(created_at=datetime(2026, 1, 1))
    with pytest.raises(StoreError, match="naive datetime"):
        store.create_run(run, [])
    with pytest.raises(RunNotFound):
        store.get_run(run.run_id)


def test_values_that_are_not_json_are_refused_with_a_store_error(store: RunStore) -> None:
    run = make_run(params={"model": object()})
    with pytest.raises(StoreError, match="JSON|json") as err:
        store.create_run(run, [])
    assert err.value.hint
    with pytest.raises(RunNotFound):
        store.get_run(run.run_id)
    store.create_run(make_run(), [])  # the connection is still usable


def test_metrics_round_trip_numbers_and_strings_in_write_order(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "train")])
    metrics = [
        MetricRecord(
            run_id=run.run_id,
            task_id="train",
            map_index=-1,
            attempt=1,
            name="loss",
            value=0.25,
            at=at(1),
        ),
        MetricRecord(
            run_id=run.run_id,
            task_id="train",
            map_index=-1,
            attempt=1,
            name="optimizer",
            value="adam",
            kind="param",
            at=None,
        ),
        MetricRecord(
            run_id=run.run_id,
            task_id="train",
            map_index=-1,
            attempt=1,
            name="loss",
            value=0.125,
            at=at(2),
        ),
    ]
    store.write(WriteBatch(metrics=metrics[:2]))
    store.write(WriteBatch(metrics=metrics[2:]))
    assert store.get_metrics(run.run_id) == metrics
    assert store.get_metrics("no-such-run") == []


def test_integer_metric_comes_back_as_float(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    m = MetricRecord(run_id=run.run_id, task_id="t", map_index=-1, attempt=1, name="n", value=3)
    store.write(WriteBatch(metrics=[m]))
    (got,) = store.get_metrics(run.run_id)
    assert got.value == 3.0 and isinstance(got.value, float)


# --- write() ---------------------------------------------------------------------------------


def test_write_applies_every_kind_of_change_in_one_batch(store: RunStore) -> None:
    existing = make_run(state=RunState.RUNNING)
    store.create_run(existing, [ti(existing.run_id, "a"), ti(existing.run_id, "b")])
    fresh = make_run(pipeline="other")
    batch = WriteBatch(
        new_runs=[fresh],
        run_updates=[dataclasses.replace(existing, state=RunState.SUCCESS, ended_at=at(9))],
        new_task_instances=[
            ti(existing.run_id, "c", 0),
            ti(existing.run_id, "c", 1),
            ti(fresh.run_id, "x"),
        ],
        task_instance_updates=[
            ti(
                existing.run_id,
                "a",
                state=TaskState.SUCCESS,
                attempt=1,
                ended_at=at(5),
                output=ValueRef(kind="json", value=41),
            ),
            ti(existing.run_id, "b", state=TaskState.SKIPPED, reason="branch"),
        ],
        attempts=[attempt(existing.run_id, "a", 1, state=TaskState.SUCCESS, ended_at=at(5))],
        metrics=[
            MetricRecord(
                run_id=existing.run_id, task_id="a", map_index=-1, attempt=1, name="acc", value=0.9
            )
        ],
    )
    store.write(batch)

    assert store.get_run(fresh.run_id) == fresh
    assert store.get_run(existing.run_id).state is RunState.SUCCESS
    assert store.get_run(existing.run_id).ended_at == at(9)
    tis = {(t.task_id, t.map_index): t for t in store.get_task_instances(existing.run_id)}
    assert set(tis) == {("a", -1), ("b", -1), ("c", 0), ("c", 1)}
    assert tis["a", -1].state is TaskState.SUCCESS
    assert tis["a", -1].output == ValueRef(kind="json", value=41)
    assert tis["b", -1].reason == "branch"
    assert [t.task_id for t in store.get_task_instances(fresh.run_id)] == ["x"]
    assert [a.attempt for a in store.get_attempts(existing.run_id, "a")] == [1]
    assert [m.name for m in store.get_metrics(existing.run_id)] == ["acc"]


def test_task_instance_update_replaces_the_whole_record(store: RunStore) -> None:
    run = make_run()
    full = full_ti(run.run_id)
    store.create_run(run, [full])
    cleared = ti(run.run_id, "train", 2)  # every optional field back to its default
    store.write(WriteBatch(task_instance_updates=[cleared]))
    assert store.get_task_instance(run.run_id, "train", 2) == cleared


def test_run_update_replaces_the_whole_record(store: RunStore) -> None:
    run = full_run(new_id())
    store.create_run(run, [])
    plain = make_run(run.run_id, created_at=at(100), heartbeat_at=at(200))
    store.write(WriteBatch(run_updates=[plain]))
    assert store.get_run(run.run_id) == plain


def test_run_update_never_moves_the_heartbeat_backwards(store: RunStore) -> None:
    run = make_run(driver_id="d1", heartbeat_at=at(0))
    store.create_run(run, [])
    assert store.renew_lease(run.run_id, "d1")  # heartbeat = now, later than at(50)
    renewed = store.get_run(run.run_id).heartbeat_at
    assert renewed is not None and renewed > at(50)
    store.write(
        WriteBatch(
            run_updates=[dataclasses.replace(run, state=RunState.RUNNING, heartbeat_at=at(50))]
        )
    )
    got = store.get_run(run.run_id)
    assert got.state is RunState.RUNNING
    assert got.heartbeat_at == renewed


def test_run_update_writes_driver_id_so_the_engine_can_release_by_writing(store: RunStore) -> None:
    run = make_run(driver_id="d1", heartbeat_at=at(0))
    store.create_run(run, [])
    store.write(
        WriteBatch(run_updates=[dataclasses.replace(run, driver_id=None, state=RunState.SUCCESS)])
    )
    assert store.get_run(run.run_id).driver_id is None


def test_write_is_one_transaction_a_failing_part_leaves_nothing(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a")])
    bad = WriteBatch(
        new_runs=[make_run("unrelated-" + secrets.token_hex(3))],
        task_instance_updates=[ti(run.run_id, "a", state=TaskState.QUEUED)],
        attempts=[attempt(run.run_id, "a", 1), attempt(run.run_id, "a", 1)],  # duplicate key
    )
    with pytest.raises(StoreError) as err:
        store.write(bad)
    assert err.value.hint
    with pytest.raises(RunNotFound):
        store.get_run(bad.new_runs[0].run_id)
    unchanged = store.get_task_instance(run.run_id, "a")
    assert unchanged is not None and unchanged.state is TaskState.PENDING
    assert store.get_attempts(run.run_id) == []


def test_updating_a_missing_task_instance_fails_and_rolls_back(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a")])
    batch = WriteBatch(
        task_instance_updates=[
            ti(run.run_id, "a", state=TaskState.QUEUED),
            ti(run.run_id, "ghost", state=TaskState.QUEUED),
        ],
    )
    with pytest.raises(StoreError, match="1 of 2 task instances updated"):
        store.write(batch)
    unchanged = store.get_task_instance(run.run_id, "a")
    assert unchanged is not None and unchanged.state is TaskState.PENDING


def test_updating_a_missing_run_fails(store: RunStore) -> None:
    with pytest.raises(StoreError, match="0 of 1 runs updated"):
        store.write(WriteBatch(run_updates=[make_run()]))


def test_a_write_that_does_not_wait_for_the_disk_is_committed_and_checked(
        store: RunStore) -> None:
    """WriteBatch(synchronous=False) (PostgreSQL: synchronous_commit off for that
    transaction) is committed when write() returns: another connection reads it. Its
    updates are still checked, and a failing one still rolls everything back."""
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "b")])
    store.write(WriteBatch(
        task_instance_updates=[ti(run.run_id, "a", state=TaskState.SUCCESS, attempt=1),
                               ti(run.run_id, "b", state=TaskState.RUNNING, attempt=1)],
        attempts=[attempt(run.run_id, "a", 1, state=TaskState.SUCCESS, ended_at=at(2))],
        synchronous=False,
    ))
    other = create_engine(store.url)
    try:
        with other.connect() as conn:
            rows = conn.execute(text(
                "SELECT task_id, state FROM task_instances WHERE run_id = :r ORDER BY task_id"),
                {"r": run.run_id}).all()
    finally:
        other.dispose()
    assert [tuple(r) for r in rows] == [("a", "success"), ("b", "running")]

    bad = WriteBatch(task_instance_updates=[ti(run.run_id, "b", state=TaskState.SUCCESS),
                                            ti(run.run_id, "ghost", state=TaskState.QUEUED)],
                     synchronous=False)
    with pytest.raises(StoreError, match="1 of 2 task instances updated"):
        store.write(bad)
    unchanged = store.get_task_instance(run.run_id, "b")
    assert unchanged is not None and unchanged.state is TaskState.RUNNING


def test_many_rows_in_one_write(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    new = [ti(run.run_id, "m", i) for i in range(250)]
    store.write(WriteBatch(new_task_instances=new))
    updated = [
        dataclasses.replace(t, state=TaskState.SUCCESS, ended_at=at(t.map_index)) for t in new
    ]
    store.write(
        WriteBatch(
            task_instance_updates=updated,
            attempts=[attempt(run.run_id, "m", 1, i) for i in range(250)],
        )
    )
    got = store.get_task_instances(run.run_id)
    assert got == updated  # ordered by task id, map index
    assert len(store.get_attempts(run.run_id)) == 250


def test_empty_batch_is_a_no_op(store: RunStore) -> None:
    """An empty batch changes nothing and opens no connection (the driver's loop commits
    after every step; an empty step must cost no round trip)."""
    from sqlalchemy import event

    run = make_run()
    store.create_run(run, [ti(run.run_id, "a")])
    before = (store.get_run(run.run_id), store.get_task_instances(run.run_id))
    checkouts: list[object] = []

    def on_checkout(dbapi_conn: object, record: object, proxy: object) -> None:
        checkouts.append(dbapi_conn)

    pool = store._engine.pool
    event.listen(pool, "checkout", on_checkout)
    try:
        store.write(WriteBatch())
    finally:
        event.remove(pool, "checkout", on_checkout)
    assert checkouts == []
    assert not WriteBatch()
    assert (store.get_run(run.run_id), store.get_task_instances(run.run_id)) == before


def test_create_run_is_one_transaction(store: RunStore) -> None:
    run = make_run()
    with pytest.raises(StoreError):
        store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "a")])
    with pytest.raises(RunNotFound):
        store.get_run(run.run_id)


def test_duplicate_run_id_is_a_store_error_with_a_hint(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [])
    with pytest.raises(StoreError) as err:
        store.create_run(run, [])
    assert "creating a run" in err.value.message
    assert err.value.hint and "already exists" in err.value.hint


# --- queries ---------------------------------------------------------------------------------


def test_get_run_of_unknown_id_names_it_and_hints_runs_list(store: RunStore) -> None:
    with pytest.raises(RunNotFound) as err:
        store.get_run("nope-123")
    assert "nope-123" in str(err.value)
    assert err.value.hint and "cadenza runs list" in err.value.hint


def test_task_instances_are_ordered_by_task_then_map_index(store: RunStore) -> None:
    run = make_run()
    recs = [
        ti(run.run_id, "b", 1),
        ti(run.run_id, "a", -1),
        ti(run.run_id, "b", 0),
        ti(run.run_id, "b", -1),
        ti(run.run_id, "b", 10),
        ti(run.run_id, "b", 2),
    ]
    store.create_run(run, recs)
    keys = [(t.task_id, t.map_index) for t in store.get_task_instances(run.run_id)]
    assert keys == [("a", -1), ("b", -1), ("b", 0), ("b", 1), ("b", 2), ("b", 10)]
    assert store.get_task_instances("no-such-run") == []


def test_get_task_instance_defaults_to_the_unmapped_row(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a", -1, pool="p1"), ti(run.run_id, "a", 0)])
    got = store.get_task_instance(run.run_id, "a")
    assert got is not None and got.map_index == -1 and got.pool == "p1"
    assert store.get_task_instance(run.run_id, "a", 5) is None
    assert store.get_task_instance(run.run_id, "zzz") is None


def test_get_attempts_filters_by_task_and_map_index(store: RunStore) -> None:
    run = make_run()
    store.create_run(run, [ti(run.run_id, "a"), ti(run.run_id, "m", 0), ti(run.run_id, "m", 1)])
    store.write(
        WriteBatch(
            attempts=[
                attempt(run.run_id, "m", 2, 1),
                attempt(run.run_id, "a", 1),
                attempt(run.run_id, "m", 1, 1),
                attempt(run.run_id, "m", 1, 0),
            ]
        )
    )

    def keys(xs: list[AttemptRecord]) -> list[tuple[str, int, int]]:
        return [(a.task_id, a.map_index, a.attempt) for a in xs]

    assert keys(store.get_attempts(run.run_id)) == [
        ("a", -1, 1),
        ("m", 0, 1),
        ("m", 1, 1),
        ("m", 1, 2),
    ]
    assert keys(store.get_attempts(run.run_id, "m")) == [("m", 0, 1), ("m", 1, 1), ("m", 1, 2)]
    assert keys(store.get_attempts(run.run_id, "m", 1)) == [("m", 1, 1), ("m", 1, 2)]
    assert store.get_attempts(run.run_id, "zzz") == []


def test_list_runs_is_newest_first_with_filters_and_paging(store: RunStore) -> None:
    runs = [
        make_run(
            f"r{i}-{secrets.token_hex(2)}",
            created_at=at(i),
            pipeline="a" if i % 2 else "b",
            state=RunState.FAILED if i % 3 == 0 else RunState.SUCCESS,
        )
        for i in range(8)
    ]
    for r in runs:
        store.create_run(r, [])
    newest_first = [r.run_id for r in reversed(runs)]
    assert [r.run_id for r in store.list_runs()] == newest_first
    assert [r.run_id for r in store.list_runs(limit=3)] == newest_first[:3]
    assert [r.run_id for r in store.list_runs(limit=3, offset=3)] == newest_first[3:6]
    assert [r.run_id for r in store.list_runs(pipeline="a")] == [
        r.run_id for r in reversed(runs) if r.pipeline == "a"
    ]
    assert [r.run_id for r in store.list_runs(state=RunState.FAILED)] == [
        r.run_id for r in reversed(runs) if r.state is RunState.FAILED
    ]
    assert [r.run_id for r in store.list_runs(pipeline="b", state=RunState.FAILED)] == [
        r.run_id for r in reversed(runs) if r.pipeline == "b" and r.state is RunState.FAILED
    ]
    assert store.list_runs(pipeline="none") == []
    assert all(isinstance(r, RunRecord) for r in store.list_runs())


def test_delete_run_removes_it_and_everything_under_it(store: RunStore) -> None:
    keep, gone = make_run(), make_run()
    for r in (keep, gone):
        store.create_run(r, [ti(r.run_id, "a")])
        store.write(
            WriteBatch(
                attempts=[attempt(r.run_id, "a", 1)],
                metrics=[
                    MetricRecord(
                        run_id=r.run_id, task_id="a", map_index=-1, attempt=1, name="m", value=1.0
                    )
                ],
            )
        )
    store.delete_run(gone.run_id)
    with pytest.raises(RunNotFound):
        store.get_run(gone.run_id)
    assert store.get_task_instances(gone.run_id) == []
    assert store.get_attempts(gone.run_id) == []
    assert store.get_metrics(gone.run_id) == []
    assert store.get_run(keep.run_id) == keep
    assert len(store.get_attempts(keep.run_id)) == 1
    with pytest.raises(RunNotFound):
        store.delete_run(gone.run_id)



def test_deleting_runs_leaves_no_attempt_without_its_task_instance(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No foreign key ties an attempt to its task instance (revision 0008): the two ways
    runs are deleted, `delete_run` and gc's `retention.delete_runs` (in batches), delete the
    attempts themselves. Every finished run here has plain and mapped task instances with
    retried attempts; afterwards no attempt is left whose task instance is gone, and the
    kept runs keep all of theirs."""
    from cadenza.store import retention

    runs = [make_run(state=RunState.SUCCESS) for _ in range(6)]
    for r in runs:
        store.create_run(r, [ti(r.run_id, "a"), ti(r.run_id, "m", 0), ti(r.run_id, "m", 1)])
        store.write(WriteBatch(attempts=[
            attempt(r.run_id, "a", 1), attempt(r.run_id, "a", 2),
            attempt(r.run_id, "m", 1, map_index=0), attempt(r.run_id, "m", 1, map_index=1),
            attempt(r.run_id, "m", 2, map_index=1),
        ]))
    store.delete_run(runs[0].run_id)
    monkeypatch.setattr(retention, "BATCH", 2)  # three batches of two
    deleted = retention.delete_runs(store, [r.run_id for r in runs[1:5]],
                                    is_held=lambda _driver, _heartbeat: False)
    assert sorted(deleted.run_ids) == sorted(r.run_id for r in runs[1:5])
    with store._engine.connect() as conn:
        orphans = conn.execute(text(
            "SELECT count(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM task_instances t "
            "WHERE t.run_id = a.run_id AND t.task_id = a.task_id "
            "AND t.map_index = a.map_index)")).scalar()
        attempts = conn.execute(text("SELECT count(*) FROM attempts")).scalar()
    assert orphans == 0
    assert attempts == 5
    assert len(store.get_attempts(runs[5].run_id)) == 5

# --- resolve_run_id ----------------------------------------------------------------------------


def test_resolve_run_id_by_unique_prefix(store: RunStore) -> None:
    base = secrets.token_hex(4)
    for suffix in ("aa11", "aa22", "bb33"):
        store.create_run(make_run(base + suffix), [])
    assert store.resolve_run_id(base + "b") == base + "bb33"
    assert store.resolve_run_id(base + "aa2") == base + "aa22"
    assert store.resolve_run_id(base + "aa11") == base + "aa11"


def test_resolve_run_id_exact_id_wins_over_longer_ids(store: RunStore) -> None:
    base = secrets.token_hex(4)
    store.create_run(make_run(base), [])
    store.create_run(make_run(base + "x"), [])
    assert store.resolve_run_id(base) == base


def test_resolve_run_id_ambiguous_prefix_lists_candidates(store: RunStore) -> None:
    base = secrets.token_hex(4)
    for suffix in ("aa11", "aa22"):
        store.create_run(make_run(base + suffix), [])
    with pytest.raises(CadenzaError) as err:
        store.resolve_run_id(base + "aa")
    assert not isinstance(err.value, RunNotFound)
    assert "ambiguous" in str(err.value)
    assert base + "aa11" in str(err.value) and base + "aa22" in str(err.value)
    assert err.value.hint


def test_resolve_run_id_unknown_prefix(store: RunStore) -> None:
    store.create_run(make_run("abc123"), [])
    with pytest.raises(RunNotFound, match="zzz"):
        store.resolve_run_id("zzz")
    with pytest.raises(CadenzaError):
        store.resolve_run_id("")


def test_resolve_run_id_is_case_sensitive_and_treats_wildcards_literally(store: RunStore) -> None:
    store.create_run(make_run("abcdef"), [])
    store.create_run(make_run("a_x%y"), [])
    with pytest.raises(RunNotFound):
        store.resolve_run_id("ABC")
    with pytest.raises(RunNotFound):
        store.resolve_run_id("a%")
    with pytest.raises(RunNotFound):
        store.resolve_run_id("_b")
    assert store.resolve_run_id("a_") == "a_x%y"


# --- find_cached -----------------------------------------------------------------------------


def test_find_cached_returns_the_newest_success_across_runs(store: RunStore) -> None:
    """Newest by run: run ids sort by creation time (core.ids.new_run_id), as here."""
    key = "key-" + secrets.token_hex(4)
    stamp = secrets.token_hex(4)
    r1, r2, r3 = (make_run(f"{stamp}-{n}") for n in (1, 2, 3))
    store.create_run(
        r1,
        [
            ti(
                r1.run_id,
                "t",
                state=TaskState.SUCCESS,
                cache_key=key,
                ended_at=at(10),
                output=ValueRef(kind="json", value=1),
            )
        ],
    )
    store.create_run(
        r2,
        [
            ti(
                r2.run_id,
                "t",
                state=TaskState.SUCCESS,
                cache_key=key,
                ended_at=at(30),
                output=ValueRef(kind="json", value=2),
            )
        ],
    )
    store.create_run(
        r3,
        [
            ti(r3.run_id, "t", state=TaskState.FAILED, cache_key=key, ended_at=at(50)),
            ti(r3.run_id, "u", state=TaskState.CACHED, cache_key=key, ended_at=at(60)),
            ti(r3.run_id, "v", state=TaskState.SUCCESS, cache_key="other", ended_at=at(70)),
        ],
    )
    hit = store.find_cached(key)
    assert hit is not None
    assert (hit.run_id, hit.output) == (r2.run_id, ValueRef(kind="json", value=2))
    assert store.find_cached("missing") is None


def test_find_cached_respects_not_before(store: RunStore) -> None:
    key = "key-" + secrets.token_hex(4)
    r1 = make_run()
    store.create_run(
        r1, [ti(r1.run_id, "t", state=TaskState.SUCCESS, cache_key=key, ended_at=at(10))]
    )
    assert store.find_cached(key, not_before=at(10)) is not None  # inclusive
    assert store.find_cached(key, not_before=at(10.5)) is None
    r2 = make_run()
    store.create_run(
        r2, [ti(r2.run_id, "t", state=TaskState.SUCCESS, cache_key=key, ended_at=at(20))]
    )
    hit = store.find_cached(key, not_before=at(15))
    assert hit is not None and hit.run_id == r2.run_id


def test_find_cached_sees_updates_written_by_write(store: RunStore) -> None:
    key = "key-" + secrets.token_hex(4)
    run = make_run()
    store.create_run(run, [ti(run.run_id, "t", cache_key=key)])
    assert store.find_cached(key) is None
    store.write(
        WriteBatch(
            task_instance_updates=[
                ti(run.run_id, "t", cache_key=key, state=TaskState.SUCCESS, ended_at=at(1))
            ]
        )
    )
    hit = store.find_cached(key)
    assert hit is not None and hit.run_id == run.run_id


def test_find_cached_reads_the_partial_cache_key_index(store: RunStore) -> None:
    """The cache-key index holds only task instances with a key (migration 0006), on the key
    and the run id (0008: columns no state update changes), and find_cached's query
    (captured as it runs) reads it in its own order, newest run first, with no sort of all
    the key's rows, on both databases (PostgreSQL with sequential scans priced out, as a
    tiny table would otherwise be scanned)."""
    from sqlalchemy import event

    key = "key-" + secrets.token_hex(4)
    run = make_run()
    store.create_run(run, [ti(run.run_id, f"t{i}") for i in range(50)]
                     + [ti(run.run_id, "k", state=TaskState.SUCCESS, cache_key=key,
                           ended_at=at(1))])
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, sql: str, params: Any, context: Any,
                executemany: bool) -> None:
        if "cache_key" in sql:
            seen.append((sql, params))

    engine = store._engine
    direct = store.url.startswith("sqlite")  # the SQLite run path: sqlite3, no SQLAlchemy
    if direct:
        kept = store._writer._kept("test")
        kept.set_trace_callback(lambda text: capture(None, None, text, (), None, False))
    else:
        event.listen(engine, "before_cursor_execute", capture)
    try:
        assert store.find_cached(key) is not None
    finally:
        if direct:
            kept.set_trace_callback(None)
        else:
            event.remove(engine, "before_cursor_execute", capture)
    assert len(seen) == 1
    sql, params = seen[0]
    name = "ix_task_instances_cache_key_run_id"
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        if engine.dialect.name == "sqlite":
            ddl = raw.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            plan = " ".join(str(r) for r in raw.execute("EXPLAIN QUERY PLAN " + sql, params))
            with_key = raw.execute(f"SELECT count(*) FROM task_instances INDEXED BY {name} "
                                   "WHERE cache_key IS NOT NULL").fetchone()[0]
            assert with_key == 1
        else:
            ddl = raw.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                              (name,)).fetchone()
            raw.execute("SET enable_seqscan = off")
            plan = " ".join(r[0] for r in raw.execute("EXPLAIN " + sql, params))
            raw.rollback()
    assert "WHERE" in ddl[0] and "cache_key IS NOT NULL" in ddl[0]
    assert name in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # the index's own order


# --- pools -----------------------------------------------------------------------------------


def test_set_pool_upserts(store: RunStore) -> None:
    assert store.get_pool("gpu") is None
    assert store.set_pool("gpu", 2, "the A100s") == PoolRecord(
        name="gpu", slots=2, description="the A100s"
    )
    assert store.get_pool("gpu") == PoolRecord(name="gpu", slots=2, description="the A100s")
    store.set_pool("gpu", 0)
    assert store.get_pool("gpu") == PoolRecord(name="gpu", slots=0, description="")
    store.set_pool("cpu", 8)
    assert [p.name for p in store.list_pools()] == ["cpu", "gpu"]


@pytest.mark.parametrize("slots", [-1, 1.5, "3", True])
def test_set_pool_rejects_bad_slots_with_a_hint(store: RunStore, slots: object) -> None:
    with pytest.raises(CadenzaError) as err:
        store.set_pool("gpu", slots)  # type: ignore[arg-type]
    assert "slots" in str(err.value) and err.value.hint
    assert store.get_pool("gpu") is None


def test_ensure_pool_creates_once_and_never_changes_it(store: RunStore) -> None:
    assert store.ensure_pool("default", 16) == PoolRecord(name="default", slots=16)
    store.set_pool("default", 4, "tuned")
    assert store.ensure_pool("default", 16) == PoolRecord(
        name="default", slots=4, description="tuned"
    )
    with pytest.raises(CadenzaError):
        store.ensure_pool("x", -3)


# --- open_store and errors -------------------------------------------------------------------


def test_open_store_is_cached_per_url_until_disposed(db_url: str) -> None:
    a = open_store(db_url)
    try:
        assert open_store(db_url) is a
        assert a.url == db_url
    finally:
        a.dispose()
    b = open_store(db_url)
    try:
        assert b is not a
    finally:
        b.dispose()


_PARENT_STORE: RunStore | None = None


def _child_gets_its_own_store(url: str) -> bool:
    fresh = open_store(url)
    ok = fresh is not _PARENT_STORE
    run = make_run()
    fresh.create_run(run, [])
    return ok and fresh.get_run(run.run_id) == run


def test_a_forked_child_gets_its_own_engine(db_url: str) -> None:
    global _PARENT_STORE
    _PARENT_STORE = open_store(db_url)
    try:
        _PARENT_STORE.list_runs()  # a pooled connection the child must not reuse
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply(_child_gets_its_own_store, (db_url,))
        assert len(_PARENT_STORE.list_runs()) == 1  # the parent's connection still works
    finally:
        _PARENT_STORE.dispose()
        _PARENT_STORE = None


def test_open_store_without_url_uses_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cadenza.core import settings as settings_mod

    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'cadenza.db'}"
    monkeypatch.setenv("CADENZA_DATABASE_URL", url)
    settings_mod.set_settings(settings_mod.load_settings(tmp_path))
    try:
        s = open_store()
        try:
            assert s.url == url
            assert (tmp_path / "deep" / "er" / "cadenza.db").is_file()
        finally:
            s.dispose()
    finally:
        settings_mod.set_settings(None)


def test_sqlite_store_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        run = make_run()
        s.create_run(run, [])
        engine = s._engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        # foreign keys are enforced: a task instance of a missing run is refused
        with pytest.raises(StoreError):
            s.write(WriteBatch(new_task_instances=[ti("no-such-run", "a")]))
    finally:
        s.dispose()


def test_unreachable_postgres_is_a_quick_store_error_with_masked_password() -> None:
    url = "postgresql+psycopg://cadenza:s3cret-pw@127.0.0.1:1/cadenza"
    with pytest.raises(StoreError) as err:
        open_store(url)
    text_ = str(err.value)
    assert "s3cret-pw" not in text_
    assert "***" in text_
    assert err.value.hint and "127.0.0.1:1" in err.value.hint
    assert "CADENZA_DATABASE_URL" in err.value.hint
    assert "database_url in cadenza.toml" in err.value.hint
    assert err.value.__cause__ is not None


def test_unwritable_sqlite_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as err:
        open_store(f"sqlite:///{blocker / 'sub' / 'cadenza.db'}")
    assert err.value.hint


def test_unknown_backend_is_a_store_error() -> None:
    with pytest.raises(StoreError) as err:
        open_store("nosuchdb://host/x")
    assert err.value.hint


def test_errors_after_opening_are_store_errors(db_url: str) -> None:
    s = open_store(db_url)
    try:
        other = create_engine(db_url)
        with other.begin() as conn:
            conn.execute(text("DROP TABLE metrics"))
        other.dispose()
        run = make_run()
        s.create_run(run, [])
        m = MetricRecord(
            run_id=run.run_id, task_id="t", map_index=-1, attempt=1, name="n", value=1.0
        )
        with pytest.raises(StoreError, match="writing a batch"):
            s.write(WriteBatch(metrics=[m]))
        with pytest.raises(StoreError, match="reading metrics"):
            s.get_metrics(run.run_id)
        assert s.get_run(run.run_id) == run  # the pool recovered from the failed statements
    finally:
        s.dispose()
