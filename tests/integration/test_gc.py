"""Retention (issue 11 item 7): `cadenza runs delete` and `cadenza gc` delete runs, their logs
and the artifacts that no remaining run, cache entry or asset version references, on SQLite
and PostgreSQL, through the real `cadenza` executable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import cadenza
from cadenza import RunNotFound, RunState, TaskState
from cadenza.core import clock
from cadenza.core.records import RunRecord, TaskInstanceRecord, WriteBatch
from cadenza.core.retention import format_bytes
from cadenza.core.settings import Settings
from cadenza.engine.lease import Heartbeats, is_orphaned
from cadenza.store import open_store
from tests.fixtures import forked_cli
from tests.pipelines import retention

ROOT = Path(__file__).resolve().parents[2]


def cli(settings: Settings, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """`cadenza ARGS` in a process forked from this worker's CLI zygote
    (tests/fixtures/forked_cli.py): these tests are about what gc deletes, not how a process
    starts (a cold start each was ~7 s of these tests' wall time at load 15)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update(CADENZA_DATABASE_URL=settings.database_url, CADENZA_HOME=str(settings.home),
               COLUMNS="200", PYTHONPATH=str(ROOT))
    proc = forked_cli.shared("cli").run(list(args), env, settings.project_root,
                                        as_executable=True, timeout=120)
    assert proc.returncode == code, (
        f"cadenza {' '.join(args)} exited {proc.returncode}, expected {code}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def report(settings: Settings, *args: str, code: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(settings, *args, "--json", code=code).stdout)
    return data


def uri_of(result: Any, task_id: str) -> str:
    ref = next(t.output for t in result.instances if t.task_id == task_id and t.map_index < 0)
    assert ref is not None and ref.kind == "artifact" and ref.uri
    return str(ref.uri)


def test_runs_delete_keeps_artifacts_a_remaining_run_references(cadenza_env: Settings) -> None:
    a = retention.outputs.run(tag="a", executor="inline")
    b = retention.outputs.run(tag="b", executor="inline")
    shared, a_only, b_only = uri_of(a, "shared"), uri_of(a, "unique"), uri_of(b, "unique")
    assert shared == uri_of(b, "shared")  # the same bytes, stored once
    a_logs = cadenza_env.logs_dir / a.run_id
    assert any(a_logs.rglob("*.log"))

    size = format_bytes(os.path.getsize(a_only))

    done = cli(cadenza_env, "runs", "delete", a.run_id[:14], "--grace", "0s")

    assert f"Deleted 1 run, 1 artifact ({size} freed), 1 log file." in done.stdout
    with pytest.raises(RunNotFound):
        cadenza.get_run(a.run_id)
    assert not os.path.exists(a_only) and not a_logs.exists()
    assert os.path.exists(shared) and os.path.exists(b_only)
    kept = cadenza.get_run(b.run_id)
    assert kept.outputs["shared"].tolist() == b.outputs["shared"].tolist()
    store = open_store(cadenza_env.database_url)
    a_sha = Path(a_only).name.split(".")[0]
    assert a_sha not in store.get_artifacts([a_sha])  # its lineage record went too

    gone = report(cadenza_env, "runs", "delete", b.run_id, "--grace", "0s")
    assert gone["runs_deleted"] == 1 and gone["artifacts_deleted"] == 2
    assert not os.path.exists(shared) and not os.path.exists(b_only)


def test_gc_dry_run_deletes_nothing_and_reports_what_gc_then_deletes(
        cadenza_env: Settings) -> None:
    runs = [retention.outputs.run(tag=t, executor="inline") for t in ("a", "b", "c")]
    files = {uri_of(r, t) for r in runs for t in ("shared", "unique")}
    freed = sum(os.path.getsize(uri_of(r, "unique")) for r in runs[:2])

    dry = report(cadenza_env, "gc", "--keep-last", "1", "--dry-run", "--grace", "0s")

    assert dry["dry_run"] is True
    assert sorted(dry["run_ids"]) == sorted(r.run_id for r in runs[:2])
    assert dry["artifacts_deleted"] == 2 and dry["bytes_freed"] == freed
    assert dry["log_files_deleted"] == 2
    assert all(os.path.exists(f) for f in files)
    assert len(cadenza.get_runs()) == 3
    assert all((cadenza_env.logs_dir / r.run_id).exists() for r in runs)

    real = report(cadenza_env, "gc", "--keep-last", "1", "--grace", "0s")

    assert {k: v for k, v in real.items() if k != "dry_run"} == {
        k: v for k, v in dry.items() if k != "dry_run"}
    assert [r.run_id for r in cadenza.get_runs()] == [runs[2].run_id]
    assert sorted(f for f in files if os.path.exists(f)) == sorted(
        {uri_of(runs[2], "shared"), uri_of(runs[2], "unique")})


def test_gc_older_than_and_keep_last_select_per_pipeline(cadenza_env: Settings) -> None:
    old = [retention.outputs.run(tag=t, executor="inline") for t in ("a", "b")]
    other = retention.cached.run(n=1, executor="inline")
    store = open_store(cadenza_env.database_url)
    # Make the first three runs 40 days old (rows written through the store API).
    for r in [*old, other]:
        run = store.get_run(r.run_id)
        store.write(WriteBatch(run_updates=[replace(
            run, created_at=run.created_at - timedelta(days=40))]))
    fresh = retention.outputs.run(tag="c", executor="inline")

    nothing = report(cadenza_env, "gc", "--older-than", "60d", "--grace", "0s")
    assert nothing["runs_deleted"] == 0
    kept_last = report(cadenza_env, "gc", "--older-than", "30d", "--keep-last", "2",
                       "--dry-run")
    assert kept_last["run_ids"] == [old[0].run_id]  # outputs keeps fresh + old[1]; cached keeps its only run
    by_age = report(cadenza_env, "gc", "--older-than", "30d", "--grace", "0s")
    assert sorted(by_age["run_ids"]) == sorted([old[0].run_id, old[1].run_id, other.run_id])
    assert [r.run_id for r in cadenza.get_runs()] == [fresh.run_id]

    bad = cli(cadenza_env, "gc", "--older-than", "30x", code=2)
    assert "--older-than '30x' is not a duration" in bad.stderr and "30d" in bad.stderr
    none = cli(cadenza_env, "gc", code=2)
    assert "--older-than 30d, --keep-last 10" in none.stderr


def test_a_cache_entry_keeps_its_artifact_and_stays_usable(cadenza_env: Settings) -> None:
    producer = retention.cached.run(n=7, executor="inline")
    served = retention.cached.run(n=7, executor="inline")
    assert served.task_states["expensive"] is TaskState.CACHED
    artifact = uri_of(producer, "expensive")

    cli(cadenza_env, "runs", "delete", served.run_id, "--grace", "0s")

    # The producing run's successful instance is the cache entry: its artifact stays, and
    # the next run is served from it.
    assert os.path.exists(artifact)
    again = retention.cached.run(n=7, executor="inline")
    assert again.task_states["expensive"] is TaskState.CACHED
    assert again.outputs["expensive"].tolist() == producer.outputs["expensive"].tolist()

    # Deleting the producing run deletes its cache entry, not bytes a remaining run uses.
    cli(cadenza_env, "runs", "delete", producer.run_id, "--grace", "0s")
    assert os.path.exists(artifact)
    assert cadenza.get_run(again.run_id).outputs["expensive"][0] == producer.outputs[
        "expensive"][0]
    recomputed = retention.cached.run(n=7, executor="inline")
    assert recomputed.task_states["expensive"] is TaskState.SUCCESS


def test_the_run_of_an_assets_newest_version_and_its_artifact_survive(
        cadenza_env: Settings) -> None:
    first = retention.modelling.run(tag="v1", executor="inline")
    second = retention.modelling.run(tag="v2", executor="inline")
    store = open_store(cadenza_env.database_url)
    assert store.latest_asset_version("gc/model").version == 2
    # A result reads its task instances from the store (engine/api since 446ac88): take
    # them before gc deletes the first run's rows.
    first_model, second_model = uri_of(first, "model"), uri_of(second, "model")

    done = cli(cadenza_env, "gc", "--keep-last", "0", "--grace", "0s")

    assert "Deleted 1 run, 1 artifact" in done.stdout
    assert "newest version of gc/model" in done.stderr
    assert [r.run_id for r in cadenza.get_runs()] == [second.run_id]
    assert not os.path.exists(first_model)
    newest = store.latest_asset_version("gc/model")
    assert newest is not None and newest.version == 2 and newest.run_id == second.run_id
    assert os.path.exists(second_model)
    retention.modelling.run(tag="v3", executor="inline")
    assert store.latest_asset_version("gc/model").version == 3  # numbering goes on


def _running_run(store: Any, *, heartbeat_age_s: float,
                 driver_id: str = "elsewhere:1:abc") -> str:
    now = clock.now()
    run = RunRecord(run_id=f"running{os.getpid()}{time.monotonic_ns()}", pipeline="outputs",
                    state=RunState.RUNNING, created_at=now - timedelta(days=90),
                    started_at=now - timedelta(days=90), driver_id=driver_id,
                    heartbeat_at=now - timedelta(seconds=heartbeat_age_s))
    store.create_run(run, [TaskInstanceRecord(run_id=run.run_id, task_id="unique",
                                              state=TaskState.RUNNING)])
    return run.run_id


def test_an_unfinished_run_is_refused_and_force_only_takes_a_crashed_one(
        cadenza_env: Settings) -> None:
    store = open_store(cadenza_env.database_url)
    live = _running_run(store, heartbeat_age_s=0)
    # Its driver (on another host) renews the lease as a live one does: three cold `cadenza`
    # processes under CI's load can outlast one 30 s lease from a single heartbeat.
    with Heartbeats().holding(store, live, "elsewhere:1:abc"):
        refused = cli(cadenza_env, "runs", "delete", live, code=1)
        assert "Deleted 0 runs" in refused.stdout
        assert f"skipped {live}: it is running" in refused.stderr
        forced = cli(cadenza_env, "runs", "delete", live, "--force", code=1)
        assert "driver elsewhere:1:abc is alive" in forced.stderr
        swept = cli(cadenza_env, "gc", "--older-than", "1d")
        assert "kept 1 unfinished run" in swept.stderr
        assert store.get_run(live).state is RunState.RUNNING

        crashed = _running_run(store, heartbeat_age_s=3600)
        cli(cadenza_env, "runs", "delete", crashed, code=1)
        cli(cadenza_env, "runs", "delete", crashed, "--force")
        with pytest.raises(RunNotFound):
            store.get_run(crashed)
        assert store.get_run(live).state is RunState.RUNNING


def test_force_takes_a_run_whose_local_driver_died_before_its_lease_ran_out(
        cadenza_env: Settings) -> None:
    # gc decides "held" by the same rule as `runs list` shows `crashed` (engine.lease.is_held):
    # a driver process known dead on this host holds nothing, however fresh its heartbeat.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    store = open_store(cadenza_env.database_url)
    dead = _running_run(store, heartbeat_age_s=0,
                        driver_id=f"{socket.gethostname()}:{child.pid}:abc")
    assert is_orphaned(store.get_run(dead))

    cli(cadenza_env, "runs", "delete", dead, code=1)  # unfinished: only --force takes it
    cli(cadenza_env, "runs", "delete", dead, "--force")
    with pytest.raises(RunNotFound):
        store.get_run(dead)


def test_recently_used_artifacts_are_spared_and_a_later_gc_deletes_them(
        cadenza_env: Settings) -> None:
    a = retention.outputs.run(tag="a", executor="inline")
    retention.outputs.run(tag="b", executor="inline")
    a_only = uri_of(a, "unique")

    first = cli(cadenza_env, "runs", "delete", a.run_id)  # default grace: 1 hour

    assert "Deleted 1 run, 0 artifacts" in first.stdout
    assert "Kept 1 unreferenced artifact used within the grace period" in first.stdout
    assert os.path.exists(a_only)
    # The next gc finds it again (its producer run is gone) and deletes it once it is old.
    later = report(cadenza_env, "gc", "--older-than", "365d", "--grace", "0s")
    assert later["runs_deleted"] == 0 and later["artifacts_deleted"] == 1
    assert not os.path.exists(a_only)


def test_the_result_of_a_run_deleted_before_it_was_read_says_so(
        cadenza_env: Settings) -> None:
    # A RunResult reads its task instances from the store on first use: a run deleted
    # before then has none to give, and must say why rather than look empty.
    result = retention.outputs.run(tag="a", executor="inline")
    open_store(cadenza_env.database_url).delete_run(result.run_id)

    with pytest.raises(RunNotFound, match=f"run {result.run_id} is no longer in the store"):
        result.outputs["shared"]
    assert result.ok  # what the driver knew stays


def test_runs_delete_of_an_unknown_id_fails_clearly(cadenza_env: Settings) -> None:
    proc = cli(cadenza_env, "runs", "delete", "nosuchrun", code=2)
    assert "no run with id 'nosuchrun'" in proc.stderr
