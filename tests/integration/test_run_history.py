"""Past runs as data (issue 11 item 6): `cadenza.get_run` / `cadenza.get_runs` return the
RunResult of any stored run, with outputs loaded from the artifact store only when read."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cadenza
from cadenza import RunNotFound, RunState, TaskState
from cadenza.artifacts.store import ArtifactError, ArtifactStore
from cadenza.core.settings import Settings
from tests.pipelines import resumable

ROOT = Path(__file__).resolve().parents[2]


def _run_elsewhere(settings: Settings, code: str) -> str:
    """Run `code` in a fresh Python process on the same store; the last line it prints."""
    env = {**os.environ, "CADENZA_DATABASE_URL": settings.database_url,
           "CADENZA_HOME": str(settings.home), "PYTHONPATH": str(ROOT)}
    env.pop("CADENZA_ARTIFACT_ROOT", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _history_run(settings: Settings) -> str:
    return _run_elsewhere(settings, """
        from tests.pipelines.history import history
        result = history.run(n=5, executor="inline")
        assert result.ok, result
        print(result.run_id)
    """)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of artifact bytes through the artifact store API, in order."""
    seen: list[str] = []
    real = ArtifactStore.get_bytes

    def counting(self: ArtifactStore, uri: str) -> bytes:
        seen.append(uri)
        return real(self, uri)

    monkeypatch.setattr(ArtifactStore, "get_bytes", counting)
    return seen


def test_get_run_by_prefix_in_another_process_loads_outputs_lazily(
        cadenza_env: Settings, reads: list[str]) -> None:
    run_id = _history_run(cadenza_env)

    result = cadenza.get_run(run_id[:12])

    assert result.run_id == run_id and result.pipeline == "history"
    assert result.state is RunState.SUCCESS and result.ok
    assert result.task_states == {t: TaskState.SUCCESS for t in
                                  ("array", "block", "chunks", "frame", "summary")}
    assert sorted(result.outputs) == ["array", "block", "chunks", "frame", "summary"]
    assert reads == []  # nothing read until an output is asked for

    df = result.outputs["frame"]
    assert isinstance(df, pd.DataFrame) and list(df["y"]) == [0, 1, 4, 9, 16]
    assert len(reads) == 1
    assert result.outputs["frame"] is df  # loaded once, then cached
    assert len(reads) == 1

    assert result.outputs["summary"] == {"rows": 5, "total": 30}  # inline JSON: no read
    assert len(reads) == 1
    np.testing.assert_array_equal(result.outputs["array"], np.arange(5) * 1.5)
    assert len(reads) == 2

    blocks = result.outputs["block"]  # a mapped task: the list, in map order
    assert [b.tolist() for b in blocks] == [[i, i, i] for i in range(5)]
    assert len(reads) == 7


def test_get_run_of_an_unknown_id_names_the_store(cadenza_env: Settings) -> None:
    with pytest.raises(RunNotFound) as info:
        cadenza.get_run("0000nope")
    assert "0000nope" in str(info.value)
    assert cadenza_env.database_url.split("?")[0].split("@")[-1] in str(info.value)


def test_a_missing_or_corrupt_artifact_names_run_task_and_artifact(cadenza_env: Settings) -> None:
    run_id = _history_run(cadenza_env)
    result = cadenza.get_run(run_id)
    frame_ref = next(t.output for t in result.instances if t.task_id == "frame")
    array_ref = next(t.output for t in result.instances if t.task_id == "array")
    assert frame_ref is not None and array_ref is not None
    assert frame_ref.uri is not None and array_ref.uri is not None
    os.remove(frame_ref.uri)
    Path(array_ref.uri).write_bytes(b"not the bytes that were written")

    with pytest.raises(ArtifactError) as missing:
        result.outputs["frame"]
    text = str(missing.value)
    assert run_id in text and "'frame'" in text and frame_ref.uri in text and "missing" in text

    with pytest.raises(ArtifactError) as corrupt:
        result.outputs["array"]
    text = str(corrupt.value)
    assert run_id in text and "'array'" in text and array_ref.uri in text and "corrupt" in text


def test_get_runs_newest_first_filtered_by_pipeline_state_and_limit(
        cadenza_env: Settings, counter_dir: Path) -> None:
    from tests.pipelines.history import history

    folder = str(counter_dir)
    failed = resumable.etl.run(folder=folder, executor="inline")
    first = history.run(n=2, executor="inline")
    second = history.run(n=3, executor="inline")
    assert failed.state is RunState.FAILED

    everything = cadenza.get_runs()
    assert [r.run_id for r in everything] == [second.run_id, first.run_id, failed.run_id]
    assert [r.run_id for r in cadenza.get_runs(pipeline="history")] == [second.run_id,
                                                                        first.run_id]
    assert [r.run_id for r in cadenza.get_runs(pipeline=history, limit=1)] == [second.run_id]
    only_failed = cadenza.get_runs(state="failed")
    assert [r.run_id for r in only_failed] == [failed.run_id]
    assert only_failed[0].task_states["load"] is TaskState.UPSTREAM_FAILED
    assert cadenza.get_runs(pipeline="nobody") == []
    assert cadenza.get_runs(pipeline="history", limit=5)[1].outputs["summary"] == {
        "rows": 2, "total": 1}


def test_a_fetched_run_resumes_by_loading_its_pipeline(cadenza_env: Settings,
                                                       counter_dir: Path) -> None:
    folder = str(counter_dir)
    run_id = _run_elsewhere(cadenza_env, f"""
        from tests.pipelines.resumable import etl
        print(etl.run(folder={folder!r}, executor="inline").run_id)
    """)
    fetched = cadenza.get_run(run_id)
    assert fetched.state is RunState.FAILED

    (counter_dir / "fixed").write_text("yes")
    resumed = fetched.resume(executor="inline")

    assert resumed.run_id == run_id and resumed.state is RunState.SUCCESS
    assert resumed.outputs["load"] == 100


def test_resuming_a_fetched_run_whose_pipeline_is_gone_says_what_is_needed(
        cadenza_env: Settings, tmp_path: Path) -> None:
    module = tmp_path / "vanishing.py"
    module.write_text(textwrap.dedent("""
        from cadenza import pipeline, task

        @task
        def boom() -> int:
            raise ValueError("no")

        @pipeline
        def vanishing():
            boom()
    """))
    run_id = _run_elsewhere(cadenza_env, f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("vanishing", {str(module)!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        print(mod.vanishing.run(executor="inline").run_id)
    """)
    module.unlink()
    fetched = cadenza.get_run(run_id)

    with pytest.raises(cadenza.CadenzaError) as info:
        fetched.resume()
    assert "vanishing" in str(info.value)
    assert "resume(pipeline=" in (info.value.hint or "")
