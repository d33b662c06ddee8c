"""Each step of a compiled Kubeflow pipeline, run here as a cluster would run it (issue 16).

`cadenza compile` writes the KFP spec of examples/quickstart.py (fan-out over a literal
list, an element-wise map over a mapped output, a fan-in, a branch); tests/fixtures/
kfp_local.py walks that spec and runs every step it reaches as `cadenza task-run ...`
subprocesses, in dependency order, against PostgreSQL and a moto S3 artifact root. The
run they record must equal a local `run()` of the same pipeline: same task states, same
outputs. Without a reachable metadata store the steps write records to S3 instead, and
`cadenza runs import` loads the same run. A local artifact root is refused with the fix.

The first test and the refusal start every step as a pod does, a new `cadenza` process. The
others run many steps for what the steps compute (records on S3, trigger rules, maps, KFP's
cache and retries, cancel), so their steps (and `cadenza compile`, `runs import`) are
forked from a process that has imported Cadenza once (`forked_cadenza`,
tests/fixtures/kfp_local.py): still one process per step, with its own argv and
environment, without the ~3.7 CPU s of imports each.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kfp_local import ForkedCli, LocalKfp, forked_cadenza  # noqa: F401
from tests.fixtures.s3 import S3Bucket

# A cold step takes 10-20 s at load 15 (other suites beside it): the first test's 17 steps
# went past pytest's default 300 s there.
pytestmark = [pytest.mark.postgres, pytest.mark.kfp_steps, pytest.mark.slow,
              pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).parent / "cadenza")
SOURCE = "examples/quickstart.py"


def _env(home: Path, root: str, bucket: S3Bucket, db_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update(bucket.env, CADENZA_HOME=str(home), CADENZA_ARTIFACT_ROOT=root,
               PYTHONPATH=str(ROOT))
    if db_url is not None:
        env["CADENZA_DATABASE_URL"] = db_url
    return env


def _compile(tmp_path: Path) -> Path:
    out = tmp_path / "quickstart.yaml"
    subprocess.run([CADENZA, "compile", SOURCE, "--format", "kfp", "-o", str(out),
                    "--image", "registry.example/quickstart:1"], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return out


def _compile_forked(cli: ForkedCli, target: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{target.rpartition(':')[2]}.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update(CADENZA_HOME=str(tmp_path / "compile-home"), PYTHONPATH=str(ROOT))
    done = cli.run(["compile", target, "-o", str(out)], env, ROOT)
    assert done.returncode == 0, done.stderr
    return out


def _outputs(result: Any) -> dict[str, Any]:
    return {tid: result.outputs[tid] for tid, state in result.task_states.items()
            if state in ("success", "cached")}


def _local_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same pipeline run in this process (inline), on its own SQLite store."""
    from examples.quickstart import quickstart

    from cadenza.core import settings as settings_mod

    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / "local-home"))
    monkeypatch.setenv("CADENZA_DATABASE_URL", f"sqlite:///{tmp_path / 'local.db'}")
    monkeypatch.delenv("CADENZA_ARTIFACT_ROOT", raising=False)
    settings_mod.set_settings(settings_mod.load_settings(tmp_path))
    try:
        result = quickstart.run(executor="inline")
        return result.task_states, _outputs(result)
    finally:
        settings_mod.set_settings(None)


def test_the_steps_of_a_compiled_example_recorded_in_postgres_equal_a_local_run(
        tmp_path: Path, s3_bucket: S3Bucket, pg_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _compile(tmp_path)
    run_id = f"kfp-{secrets.token_hex(6)}"
    root = s3_bucket.root("artifacts")
    runner = LocalKfp.from_file(spec, command_prefix=[CADENZA],
                                env=_env(tmp_path / "pod-home", root, s3_bucket, pg_url),
                                cwd=ROOT, run_id=run_id)
    runner.run()
    failed = [s for s in runner.steps if s.returncode != 0]
    assert not failed, "\n".join(f"{s.task}: {s.stderr[-2000:]}" for s in failed)
    ran = [s.task for s in runner.steps]
    # Every task's step ran (each mapped instance its own), the -map step and the finaliser.
    assert ran.count("train") == 4 and ran.count("evaluate") == 4
    assert "evaluate-map" in ran and ran[-1] == "cadenza-finalize"
    assert ran.count("deploy") + ran.count("alert") == 1

    from cadenza.engine.api import result_from_store
    from cadenza.store import open_store

    store = open_store(pg_url)
    cluster = result_from_store(store, run_id, root)
    local_states, local_outputs = _local_run(tmp_path, monkeypatch)
    assert cluster.state == "success"
    assert cluster.task_states == local_states
    assert _outputs(cluster) == local_outputs
    # One row per mapped instance, under the summary that finalize wrote.
    rows = {(t.task_id, t.map_index): t for t in store.get_task_instances(run_id)}
    assert rows[("train", -1)].map_count == 4
    assert [rows[("evaluate", i)].state for i in range(4)] == ["success"] * 4
    assert store.get_attempts(run_id, "make_data")[0].attempt == 1


def test_without_the_metadata_store_steps_record_to_s3_and_runs_import_loads_the_run(
        tmp_path: Path, s3_bucket: S3Bucket, pg_url: str,
        monkeypatch: pytest.MonkeyPatch, forked_cadenza: ForkedCli) -> None:  # noqa: F811
    spec = _compile_forked(forked_cadenza, f"{SOURCE}:quickstart", tmp_path)
    run_id = f"kfp-{secrets.token_hex(6)}"
    root = s3_bucket.root("artifacts")
    runner = LocalKfp.from_file(spec, command_prefix=[CADENZA],
                                env=_env(tmp_path / "pod-home", root, s3_bucket, None),
                                cwd=ROOT, run_id=run_id, launcher=forked_cadenza.run)
    runner.run()
    assert all(s.returncode == 0 for s in runner.steps), [s.stderr for s in runner.steps]

    env = _env(tmp_path / "laptop", root, s3_bucket, pg_url)
    for _ in range(2):  # importing twice changes nothing
        done = forked_cadenza.run(["runs", "import", run_id], env, ROOT)
        assert done.returncode == 0, done.stderr
    assert "(success, 15 task instances)" in done.stdout

    from cadenza.engine.api import result_from_store
    from cadenza.store import open_store

    cluster = result_from_store(open_store(pg_url), run_id, root)
    local_states, local_outputs = _local_run(tmp_path, monkeypatch)
    assert cluster.task_states == local_states
    assert _outputs(cluster) == local_outputs


def test_a_local_artifact_root_is_refused_with_the_fix(
        tmp_path: Path, s3_bucket: S3Bucket) -> None:
    env = _env(tmp_path / "home", str(tmp_path / "artifacts"), s3_bucket, None)
    done = subprocess.run([CADENZA, "task-run", "--pipeline", f"{SOURCE}:quickstart",
                           "--task", "make_data", "--run-id", "r1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "a folder only this pod can see" in done.stderr
    assert "CADENZA_ARTIFACT_ROOT=s3://" in done.stderr
    assert "Traceback" not in done.stderr


SHAPES = [
    ("shapes", "failing", {}),  # a failure: one_failed and all_done run, the rest upstream_failed
    ("shapes", "fraud_training", {}),  # fan-out, fan-in, a branch, an all_done cleanup after it
    # skipped targets, a none_failed_min_one_success join
    ("shapes", "multi_branch", {"which": ["middle"]}),
    ("shapes", "chained_maps", {"n": 3}),  # a map over a task's list, element-wise map, fan-in
    ("shapes", "map_with_failure", {}),  # one instance fails: the fan-in is upstream_failed
    ("shapes", "empty_map", {}),  # a map over an empty list: no instance, the fan-in gets []
    ("shapes", "cartesian", {}),  # the product of two literal lists
    ("kfp_shapes", "param_grid", {}),  # the product of two list parameters
]


@pytest.mark.parametrize(("module", "name", "params"), SHAPES, ids=[n for _, n, _ in SHAPES])
def test_trigger_rules_branches_maps_and_failures_end_as_in_a_local_run(
        module: str, name: str, params: dict[str, Any], tmp_path: Path,
        s3_bucket: S3Bucket,
        monkeypatch: pytest.MonkeyPatch, forked_cadenza: ForkedCli) -> None:  # noqa: F811
    import importlib

    from cadenza.core import settings as settings_mod
    from cadenza.engine.api import result_from_store
    from cadenza.engine.step_records import ObjectBook, import_run
    from cadenza.store import open_store

    out = _compile_forked(forked_cadenza, f"tests/pipelines/{module}.py:{name}", tmp_path)
    run_id = f"kfp-{secrets.token_hex(6)}"
    root = s3_bucket.root("artifacts")
    runner = LocalKfp.from_file(out, command_prefix=[CADENZA],
                                env=_env(tmp_path / "pod-home", root, s3_bucket, None),
                                cwd=ROOT, run_id=run_id, launcher=forked_cadenza.run)
    runner.run(params)
    assert runner.steps[-1].task == "cadenza-finalize"

    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / "local-home"))
    monkeypatch.setenv("CADENZA_DATABASE_URL", f"sqlite:///{tmp_path / 'local.db'}")
    monkeypatch.delenv("CADENZA_ARTIFACT_ROOT", raising=False)
    settings_mod.set_settings(settings_mod.load_settings(tmp_path))
    try:
        pipe = getattr(importlib.import_module(f"tests.pipelines.{module}"), name)
        local = pipe.run(executor="inline", **params)
        store = open_store(f"sqlite:///{tmp_path / 'local.db'}")
        import_run(run_id, artifact_root=root, store=store)
        cluster = result_from_store(store, run_id, root)
    finally:
        settings_mod.set_settings(None)
    assert ObjectBook(root).get_run(run_id) is not None
    assert cluster.task_states == local.task_states
    assert cluster.state == local.state
    assert _outputs(cluster) == _outputs(local)


def test_steps_served_from_kfp_cache_are_recorded_cached_with_their_outputs(
        tmp_path: Path, s3_bucket: S3Bucket, pg_url: str,
        forked_cadenza: ForkedCli) -> None:  # noqa: F811 - fixture
    from cadenza.engine.api import result_from_store
    from cadenza.store import open_store

    out = _compile_forked(forked_cadenza, "tests/pipelines/kfp_shapes.py:trained_on_gpu",
                          tmp_path)
    root = s3_bucket.root("artifacts")
    env = _env(tmp_path / "pod-home", root, s3_bucket, pg_url)
    cache: dict[str, Any] = {}
    results = []
    for _ in range(2):
        run_id = f"kfp-{secrets.token_hex(6)}"
        runner = LocalKfp.from_file(out, command_prefix=[CADENZA], env=env, cwd=ROOT,
                                    run_id=run_id, cache=cache, launcher=forked_cadenza.run)
        runner.run()
        assert all(s.returncode == 0 for s in runner.steps), [s.stderr for s in runner.steps]
        results.append((runner, result_from_store(open_store(pg_url), run_id, root)))
    (_, first), (second_steps, second) = results
    assert first.task_states == {"fit": "success", "report": "success", "tidy": "success"}
    # fit and report (cache=True) did not run again: KFP served their outputs.
    assert [s.task for s in second_steps.steps if s.stdout == "(KFP cache)"] == ["fit", "report"]
    assert second.state == "success"
    assert second.task_states == {"fit": "cached", "report": "cached", "tidy": "success"}
    # The downstream step recorded fit with the output it received from the cache.
    assert second.outputs["fit"] == first.outputs["fit"]
    assert second.outputs["tidy"] == first.outputs["tidy"]


def test_a_running_kfp_run_is_not_crashed_and_cadenza_runs_cancel_stops_its_steps(
        tmp_path: Path, s3_bucket: S3Bucket, pg_url: str,
        forked_cadenza: ForkedCli) -> None:  # noqa: F811 - fixture
    from cadenza.engine.lease import is_orphaned
    from cadenza.store import open_store

    run_id = f"kfp-{secrets.token_hex(6)}"
    env = _env(tmp_path / "pod-home", s3_bucket.root("artifacts"), s3_bucket, pg_url)
    pipeline = ["--pipeline", f"{SOURCE}:quickstart", "--run-id", run_id]
    params = ["--param", "n=40", "--param", "seed=1", "--param", "threshold=0.5"]

    def step(*args: str) -> subprocess.CompletedProcess[str]:
        return forked_cadenza.run(["task-run", *pipeline, *args], env, ROOT)

    ref = tmp_path / "make_data.json"
    first = step("--task", "make_data", *params, "--output-ref", str(ref))
    assert first.returncode == 0, first.stderr
    store = open_store(pg_url)
    run = store.get_run(run_id)
    assert run.state == "running" and not is_orphaned(run)  # its steps hold the lease

    cancel = forked_cadenza.run(["runs", "cancel", run_id, "--wait", "0"], env, ROOT)
    assert cancel.returncode in (0, 3), cancel.stderr
    second = step("--task", "train", "--map-index", "0", *params,
                  "--input", f"make_data={ref.read_text(encoding='utf-8')}")
    assert second.returncode == 1
    assert "cancelled" in second.stdout
    assert store.get_task_instance(run_id, "train", 0).state == "cancelled"
    done = step("--finalize", "--status", '{"state": "FAILED"}')
    assert done.returncode == 0, done.stderr
    assert store.get_run(run_id).state == "cancelled"


def test_a_failure_retry_on_does_not_name_is_not_run_again_by_kfp_retries(
        tmp_path: Path, s3_bucket: S3Bucket,
        forked_cadenza: ForkedCli) -> None:  # noqa: F811 - fixture
    from cadenza.engine.step_records import ObjectBook

    out = _compile_forked(forked_cadenza, "tests/pipelines/kfp_shapes.py:not_retried",
                          tmp_path)
    run_id = f"kfp-{secrets.token_hex(6)}"
    root = s3_bucket.root("artifacts")
    marker = tmp_path / "calls.txt"
    runner = LocalKfp.from_file(out, command_prefix=[CADENZA],
                                env=_env(tmp_path / "pod-home", root, s3_bucket, None),
                                cwd=ROOT, run_id=run_id, launcher=forked_cadenza.run)
    runner.run({"marker": str(marker)})
    attempts = [s for s in runner.steps if s.task == "wrong-error"]
    assert [s.returncode for s in attempts] == [1, 1, 1]  # KFP's retry policy: 2 retries
    assert marker.read_text() == "x"  # but the task ran once: ValueError is not retried
    book = ObjectBook(root)
    [row] = [r for r in book.instances(run_id) if r.task_id == "wrong_error"]
    assert row.state == "failed" and "not a connection problem" in row.error.message
    assert book.get_run(run_id).state == "failed"
