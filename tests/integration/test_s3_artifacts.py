"""Artifact roots on object storage (SPEC §3): the artifact store at `s3://bucket/prefix` on a
real S3 API server (moto_server on loopback), and roots whose filesystem is not installed.

The S3 runs go through the real `cadenza` executable on the processes executor: the driver
and its workers reach the server through AWS_ENDPOINT_URL, as a user's would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.core.records import ValueRef
from cadenza.store import open_store
from tests.e2e.test_cli_support import instances, make_project
from tests.fixtures.s3 import S3Bucket

PIPELINE = '''
from pathlib import Path

import numpy as np
import pandas as pd

from cadenza import pipeline, task


@task(cache=True)
def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n), "y": [i * 2.0 for i in range(n)]})


@task(cache=True)
def matrix(df: pd.DataFrame) -> np.ndarray:
    return df.to_numpy() * 3


@task
def total(m: np.ndarray) -> float:
    flag = Path("fail-once")
    if flag.exists():
        flag.unlink()
        raise RuntimeError("failing once on purpose")
    return float(m.sum())


@pipeline
def on_s3(n: int = 2000):
    total(matrix(frame(n)))
'''


def _project(tmp_path: Path, root: str, env: dict[str, str]):
    p = make_project(tmp_path, executor="processes", files={"pipelines/on_s3.py": PIPELINE})
    (p.root / "cadenza.toml").write_text(
        f'pipelines = ["pipelines/"]\nexecutor = "processes"\nartifact_root = "{root}"\n')
    p.env.update(env)
    return p


def _ref(run: dict, label: str) -> ValueRef:
    data = instances(run)[label]["output"]
    return ValueRef(**data)


def test_outputs_cache_and_resume_with_the_artifact_root_on_s3(tmp_path: Path, s3_bucket: S3Bucket):
    import numpy as np
    import pandas as pd
    import s3fs

    from cadenza.artifacts.store import ArtifactError, load_value

    root = s3_bucket.root("runs/artifacts")
    p = _project(tmp_path, root, s3_bucket.env)
    n = 2000
    expected_df = pd.DataFrame({"x": range(n), "y": [i * 2.0 for i in range(n)]})

    # 1. A run that fails in its last task: the first two outputs are on S3.
    (p.root / "fail-once").write_text("")
    failed = p.json("run", "on_s3", code=1)
    assert failed["state"] == "failed"
    df_ref, m_ref = _ref(failed, "frame"), _ref(failed, "matrix")
    assert df_ref.kind == m_ref.kind == "artifact"
    assert df_ref.uri.startswith(root + "/") and df_ref.uri.endswith(".parquet")
    assert m_ref.uri.startswith(root + "/") and m_ref.uri.endswith(".npy")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_bucket.endpoint})
    stored = set(fs.find(f"{s3_bucket.name}/runs/artifacts"))
    assert {df_ref.uri.removeprefix("s3://"), m_ref.uri.removeprefix("s3://")} <= stored
    assert not [k for k in stored if ".tmp-" in k]  # written under a temporary name, moved
    pd.testing.assert_frame_equal(load_value(df_ref, root=root), expected_df)
    np.testing.assert_array_equal(load_value(m_ref, root=root), expected_df.to_numpy() * 3)

    # 2. Resumed: the finished tasks are not run again, their outputs come from S3.
    p.ok("resume", failed["run_id"])
    resumed = p.json("runs", "show", failed["run_id"])
    tis = instances(resumed)
    assert resumed["state"] == "success"
    assert [tis[t]["attempts"] for t in ("frame", "matrix", "total")] == [1, 1, 2]
    assert tis["total"]["output"]["value"] == float((expected_df.to_numpy() * 3).sum())

    # 3. Again: both cached tasks are served from the cache on S3.
    again = p.json("run", "on_s3")
    tis = instances(again)
    assert tis["frame"]["state"] == tis["matrix"]["state"] == "cached"
    assert tis["frame"]["cache_origin"]["run_id"] == failed["run_id"]
    assert tis["total"]["state"] == "success"
    assert _ref(again, "matrix").uri == m_ref.uri

    # 4. Artifacts are verified on read: changed bytes under the same name are refused.
    fs.pipe_file(m_ref.uri, np.zeros(3).tobytes())
    with pytest.raises(ArtifactError, match="corrupted"):
        load_value(m_ref, root=root)
    runs = open_store(p.env["CADENZA_DATABASE_URL"]).list_runs(pipeline="on_s3")
    assert len(runs) == 2


def _gcsfs_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gcsfs") is not None


@pytest.mark.skipif(_gcsfs_installed(), reason="gcsfs is installed here: a gs:// root works")
def test_a_gs_root_without_gcsfs_fails_before_the_run_with_the_install_command(tmp_path: Path):
    p = _project(tmp_path, "gs://some-bucket/artifacts", {})
    proc = p.ok("run", "on_s3", code=2)  # ok() also checks: no traceback
    assert "gs://some-bucket/artifacts" in proc.stderr, proc.stderr
    assert "pip install 'cadenza[gcs]'" in proc.stderr, proc.stderr
    assert "pipeline 'on_s3'" in proc.stderr, proc.stderr
    assert json.loads(p.ok("runs", "list", "--json").stdout) == []  # no run was started


def test_a_root_without_a_filesystem_fails_run_with_a_config_error(cadenza_env, monkeypatch):
    from dataclasses import replace

    from cadenza import pipeline, task
    from cadenza.core import settings as settings_mod
    from cadenza.core.errors import ConfigError

    @task
    def one() -> int:
        return 1

    @pipeline
    def rootless():
        one()

    for root, fix in (("gs://bucket/x", "pip install 'cadenza[gcs]'"),
                      ("nosuchfs://bucket/x", "another fsspec URL")):
        if root.startswith("gs:") and _gcsfs_installed():
            continue
        settings_mod.set_settings(replace(cadenza_env, artifact_root=root))
        with pytest.raises(ConfigError) as err:
            rootless.run(executor="inline")
        assert root in str(err.value) and err.value.pipeline == "rootless"
        assert fix in (err.value.hint or "")
    assert open_store(cadenza_env.database_url).list_runs(pipeline="rootless") == []
