"""Resume from the point of failure, crash recovery and caching (SPEC §3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from cadenza import RunState, TaskState
from cadenza.core.errors import RunConflict
from cadenza.engine.resume import resume_run
from cadenza.store import open_store
from tests.conftest import count
from tests.fixtures.waiting import wait_for
from tests.pipelines import resumable

S = TaskState
ROOT = Path(__file__).resolve().parents[2]


def test_resume_reruns_only_failed_instances_and_their_downstream(cadenza_env, executor, counter_dir):
    first = resumable.etl.run(folder=str(counter_dir), executor=executor)
    assert first.state is RunState.FAILED
    assert first.task_states["load"] is S.UPSTREAM_FAILED

    (counter_dir / "fixed").write_text("yes")
    second = first.resume()

    assert second.run_id == first.run_id
    assert second.state is RunState.SUCCESS
    assert second.outputs["load"] == 100
    assert count(counter_dir, "extract") == 1
    assert [count(counter_dir, f"transform-{x}") for x in (1, 2, 3, 4)] == [1, 1, 2, 1]
    assert count(counter_dir, "load") == 1
    attempts = open_store(cadenza_env.database_url).get_attempts(first.run_id, "transform", 2)
    assert [(a.attempt, a.state) for a in attempts] == [(1, S.FAILED), (2, S.SUCCESS)]


def test_resume_of_a_successful_run_changes_nothing(cadenza_env, counter_dir):
    (counter_dir / "fixed").write_text("yes")
    first = resumable.etl.run(folder=str(counter_dir), executor="inline")
    again = resume_run(first.run_id)

    assert again.state is RunState.SUCCESS
    assert count(counter_dir, "extract") == 1


def _start_driver(folder: Path, db_url: str, home: Path) -> subprocess.Popen[bytes]:
    script = textwrap.dedent(f"""
        from tests.pipelines.resumable import crashy
        crashy.run(folder={str(folder)!r}, executor="processes")
    """)
    env = {**os.environ, "CADENZA_DATABASE_URL": db_url, "CADENZA_HOME": str(home),
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)


def test_driver_killed_with_sigkill_resumes_without_rerunning_finished_tasks(
    cadenza_env, counter_dir, home
):
    proc = _start_driver(counter_dir, cadenza_env.database_url, home)
    try:
        wait_for(lambda: (counter_dir / "blocker-started-1").exists(), timeout_s=60)
        watcher = open_store(cadenza_env.database_url)

        def blocker_recorded_running() -> bool:
            runs = watcher.list_runs(limit=1)
            ti = runs and watcher.get_task_instance(runs[0].run_id, "blocker")
            return bool(ti) and ti.state is S.RUNNING

        # Group commit may hold the 'running' row for a few ms: kill once it is durable.
        wait_for(blocker_recorded_running, timeout_s=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_id = (counter_dir / "run_id").read_text() if (counter_dir / "run_id").exists() else None
    store = open_store(cadenza_env.database_url)
    run_id = run_id or store.list_runs(limit=1)[0].run_id
    assert store.get_run(run_id).state is RunState.RUNNING  # what the dead driver left
    rows = {t.task_id: t for t in store.get_task_instances(run_id)}
    assert rows["step"].state is S.SUCCESS and rows["b"].state is S.SUCCESS
    assert rows["blocker"].state is S.RUNNING

    (counter_dir / "release").write_text("go")
    result = resume_run(run_id, executor="threads")

    assert result.state is RunState.SUCCESS
    assert result.outputs["finish"] == "a+blocker+finish+b"
    assert count(counter_dir, "a") == 1
    assert count(counter_dir, "b") == 1
    assert count(counter_dir, "blocker") == 2  # interrupted once, run again
    assert count(counter_dir, "finish") == 1
    attempts = store.get_attempts(run_id, "blocker", -1)
    assert attempts[0].error.kind == "interrupted"


def test_a_second_concurrent_resume_is_refused(cadenza_env, counter_dir):
    failed = resumable.etl.run(folder=str(counter_dir), executor="inline")
    assert failed.state is RunState.FAILED
    # Hold the run with a live resume blocked inside a task, then try a second one.
    gate = threading.Event()
    release = threading.Event()

    def on_start(driver):
        gate.set()
        release.wait(30)

    results = {}

    def first_resume():
        results["first"] = resume_run(failed.run_id, executor="inline", on_start=on_start)

    t = threading.Thread(target=first_resume)
    t.start()
    try:
        assert gate.wait(30)
        with pytest.raises(RunConflict) as info:
            resume_run(failed.run_id, executor="inline")
        assert failed.run_id in str(info.value)
    finally:
        release.set()
        t.join(60)
    assert results["first"].run_id == failed.run_id


def test_cached_tasks_are_served_from_an_earlier_run(cadenza_env, executor, counter_dir):
    first = resumable.cached.run(n=10, folder=str(counter_dir), executor=executor)
    second = resumable.cached.run(n=10, folder=str(counter_dir), executor=executor)

    assert second.state is RunState.SUCCESS
    assert second.task_states == {"expensive": S.CACHED, "summarise": S.CACHED}
    assert second.outputs["summarise"] == 45
    assert count(counter_dir, "expensive") == 1
    assert count(counter_dir, "summarise") == 1
    origin = next(t.cache_origin for t in second.instances if t.task_id == "expensive")
    assert origin["run_id"] == first.run_id and origin["task_id"] == "expensive"


def test_changed_input_misses_the_cache(cadenza_env, counter_dir):
    resumable.cached.run(n=10, folder=str(counter_dir), executor="inline")
    other = resumable.cached.run(n=11, folder=str(counter_dir), executor="inline")

    assert other.task_states["expensive"] is S.SUCCESS
    assert count(counter_dir, "expensive") == 2


def _write_module(path: Path, body: str) -> None:
    path.write_text(textwrap.dedent(body))


def _load(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODULE = """
from cadenza import pipeline, task

def helper(x):
    return x + 1{helper_extra}

@task(cache=True)
def compute(x: int) -> int:
    # {comment}
    return helper(x) * 2{task_extra}

@pipeline
def editable(x: int = 1):
    compute(x)
"""


def test_editing_code_changes_the_cache_key_but_comments_do_not(cadenza_env, tmp_path):
    path = tmp_path / "user_pipeline.py"

    def run(i: int, **fmt: str):
        _write_module(path, MODULE.format(**{"helper_extra": "", "comment": "a", "task_extra": "", **fmt}))
        return _load(path, f"user_pipeline_{i}").editable.run(executor="inline")

    assert run(0).task_states["compute"] is S.SUCCESS
    assert run(1, comment="a different comment").task_states["compute"] is S.CACHED
    assert run(2, task_extra="  # trailing").task_states["compute"] is S.CACHED
    assert run(3, task_extra=" + 0").task_states["compute"] is S.SUCCESS  # body changed
    assert run(4, task_extra=" + 0", helper_extra=" + 0").task_states["compute"] is S.SUCCESS  # helper changed


def test_cache_expiration_bounds_reuse(cadenza_env, counter_dir):
    from cadenza import pipeline, task

    @task(cache=True, cache_expiration=1e-6)
    def short_lived(folder: str) -> int:
        from tests.pipelines.common import bump

        return bump(folder, "short")

    @pipeline
    def expiring(folder: str):
        short_lived(folder)

    expiring.run(folder=str(counter_dir), executor="inline")
    again = expiring.run(folder=str(counter_dir), executor="inline")
    assert again.task_states["short_lived"] is S.SUCCESS
    assert count(counter_dir, "short") == 2


def test_a_large_output_never_enters_the_database(cadenza_env, executor):
    result = resumable.big_output.run(mb=50, executor=executor)

    assert result.outputs["array_sum"] == 50 * 1024 * 1024 // 8
    ti = next(t for t in result.instances if t.task_id == "big_array")
    assert ti.output.kind == "artifact"
    assert ti.output.size >= 50 * 1024 * 1024
    assert Path(ti.output.uri).exists()
    if cadenza_env.is_sqlite:
        db_file = Path(cadenza_env.database_url.removeprefix("sqlite:///"))
        total = sum(p.stat().st_size for p in db_file.parent.glob(db_file.name + "*"))
        assert total < 5 * 1024 * 1024


def test_resume_recomputes_a_producer_whose_artifact_is_gone(cadenza_env, counter_dir):
    first = resumable.fragile.run(folder=str(counter_dir), executor="inline")
    assert first.task_states["checked_sum"] is S.FAILED
    ti = next(t for t in first.instances if t.task_id == "make_array")
    Path(ti.output.uri).unlink()

    (counter_dir / "fixed").write_text("yes")
    second = first.resume()

    assert second.state is RunState.SUCCESS
    assert count(counter_dir, "make_array") == 2  # not trusted: its artifact was missing


def test_a_cached_entry_whose_artifact_is_gone_is_not_served(cadenza_env, counter_dir):
    (counter_dir / "fixed").write_text("yes")
    first = resumable.fragile.run(folder=str(counter_dir), executor="inline")
    ti = next(t for t in first.instances if t.task_id == "make_array")
    Path(ti.output.uri).unlink()
    second = resumable.fragile.run(folder=str(counter_dir), executor="inline")

    assert second.task_states["make_array"] is S.SUCCESS
    assert count(counter_dir, "make_array") == 2


def test_missing_input_artifact_fails_the_consumer_naming_path_and_producer(cadenza_env, tmp_path):
    from cadenza.core.records import ValueRef
    from cadenza.executors.base import TaskCall
    from cadenza.executors.worker import execute

    missing = tmp_path / "ab" / "abcdef.pkl"
    call = TaskCall(
        run_id="r1", pipeline="p", task_id="consumer", map_index=-1, attempt=1,
        fn=lambda arr: arr, fn_key="t:consumer",
        inputs={"arr": ValueRef(kind="artifact", uri=str(missing), sha256="00", serializer="pickle")},
        call_kinds={"arr": "POSITIONAL_OR_KEYWORD"}, artifact_root=str(tmp_path),
    )
    out = execute(call)
    assert not out.ok and out.error.kind == "input"
    assert str(missing) in out.error.message


def test_corrupted_artifact_is_detected_by_its_hash(cadenza_env, counter_dir):
    first = resumable.fragile.run(folder=str(counter_dir), executor="inline")
    ti = next(t for t in first.instances if t.task_id == "make_array")
    data = bytearray(Path(ti.output.uri).read_bytes())
    data[-1] ^= 0xFF
    Path(ti.output.uri).write_bytes(bytes(data))

    (counter_dir / "fixed").write_text("yes")
    second = first.resume()

    assert second.state is RunState.SUCCESS
    assert count(counter_dir, "make_array") == 2


def test_element_wise_maps_over_artifacts_are_cached_on_every_executor(
    cadenza_env, executor, counter_dir
):
    resumable.chained_artifacts.run(folder=str(counter_dir), executor=executor)
    second = resumable.chained_artifacts.run(folder=str(counter_dir), executor=executor)

    states = {(t.task_id, t.map_index): t.state for t in second.instances if t.map_index >= 0}
    assert set(states.values()) == {S.CACHED}
    assert count(counter_dir, "vector_sum") == 3
    assert second.outputs["vector_sum"] == [20_000, 40_000, 60_000]


def test_unwritable_artifact_root_fails_clearly_and_the_run_stays_resumable(
    cadenza_env, monkeypatch, tmp_path
):
    from cadenza.core import settings as settings_mod

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the artifact folder should be")
    settings_mod.set_settings(settings_mod.load_settings(tmp_path, environ={
        "CADENZA_HOME": str(cadenza_env.home), "CADENZA_DATABASE_URL": cadenza_env.database_url,
        "CADENZA_ARTIFACT_ROOT": str(blocked / "artifacts")}))
    first = resumable.big_output.run(mb=1, executor="inline")

    err = first.failed["big_array"]
    assert err.kind == "artifact_write"
    assert str(blocked / "artifacts") in err.message and "cadenza resume" in err.message

    settings_mod.set_settings(cadenza_env)  # the disk is fixed
    second = first.resume()
    assert second.state is RunState.SUCCESS
    assert second.outputs["array_sum"] == 1024 * 1024 // 8
