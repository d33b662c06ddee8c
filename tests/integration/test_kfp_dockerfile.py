"""`cadenza compile --format dockerfile`: the image the KFP steps run in (issue 16).

No Docker engine here: the Dockerfile is parsed with dockerfile-parse, and the environment it
describes is built the same way with uv in a temporary folder (a fresh venv, the pinned
requirements of its RUN line, the pipeline file its COPY names at the same place under a
stand-in /app); then one step runs there through that environment's `cadenza task-run`,
against a moto S3 artifact root, as the container would.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.s3 import S3Bucket

pytestmark = [pytest.mark.kfp_steps, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).parent / "cadenza")
TARGET = "tests/pipelines/kfp_shapes.py:trained_on_gpu"


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(found).is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("uv is not installed (it comes with Cadenza)", pytrace=False)
        pytest.skip("uv is not installed (it comes with Cadenza)")
    return found


def test_the_dockerfile_parses_and_its_environment_runs_a_step(
        tmp_path: Path, s3_bucket: S3Bucket) -> None:
    from dockerfile_parse import DockerfileParser

    dockerfile = tmp_path / "Dockerfile"
    done = subprocess.run([CADENZA, "compile", TARGET, "--format", "dockerfile",
                           "-o", str(dockerfile)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr

    parser = DockerfileParser(path=str(dockerfile))
    steps = [(i["instruction"], i["value"]) for i in parser.structure
             if i["instruction"] != "COMMENT"]
    kinds = [k for k, _ in steps]
    assert parser.baseimage == "python:3.11-slim"
    assert kinds[:1] == ["FROM"] and "WORKDIR" in kinds and "ENTRYPOINT" in kinds
    assert parser.envs["CADENZA_HOME"] == "/tmp/cadenza"
    run = next(v for k, v in steps if k == "RUN")
    words = shlex.split(run)
    assert words[:5] == ["python", "-m", "pip", "install", "--no-cache-dir"]
    requirements = words[5:words.index("&&")]
    assert requirements[0].startswith("cadenza[s3,gcs]==")
    pins = requirements[1:]
    assert pins and all("==" in p for p in pins), pins
    names = {p.split("==")[0].lower() for p in pins}
    assert {"sqlalchemy", "pydantic", "s3fs"} <= names  # Cadenza's closure, with [s3]
    copies = [v.split() for k, v in steps if k == "COPY"]
    pipeline_file = TARGET.split(":")[0]
    assert [pipeline_file, f"/app/{pipeline_file}"] in copies

    # The same environment, built by uv (Cadenza from this checkout, not from an index).
    uv = _uv()
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join([f"cadenza[s3] @ {ROOT.as_uri()}", *pins]) + "\n",
                    encoding="utf-8")
    built = subprocess.run([uv, "pip", "install", "--quiet", "--python",
                            str(venv / "bin" / "python"), "-r", str(reqs)],
                           capture_output=True, text=True, check=False, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]

    app = tmp_path / "app"  # the image's WORKDIR, with what COPY puts there
    target = app / pipeline_file
    target.parent.mkdir(parents=True)
    shutil.copy(ROOT / pipeline_file, target)
    for parent in Path(pipeline_file).parents:
        if str(parent) != "." and (ROOT / parent / "__init__.py").is_file():
            (app / parent / "__init__.py").write_text("", encoding="utf-8")

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CADENZA_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(s3_bucket.env, CADENZA_HOME=str(tmp_path / "pod-home"),
               CADENZA_ARTIFACT_ROOT=s3_bucket.root("artifacts"))
    out = tmp_path / "ref.json"
    step = subprocess.run(
        [str(venv / "bin" / "cadenza"), "task-run", "--pipeline", TARGET, "--task", "fit",
         "--run-id", "image-check", "--param", "rows=3", "--param", "rate=0.5",
         "--param", "name=m", "--param", 'flags={"a": 1}', "--param", "sizes=[1, 2]",
         "--output-ref", str(out)],
        cwd=app, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert step.returncode == 0, step.stdout + step.stderr
    ref = json.loads(out.read_text(encoding="utf-8"))
    assert ref["state"] == "success"
    assert ref["ref"] == {"kind": "json", "value": {"rows": 3, "rate": 0.5, "name": "m",
                                                    "flags": {"a": 1}, "sizes": [1, 2]}}
    # No metadata store in the pod: the step's record is in the artifact store.
    from cadenza.engine.step_records import ObjectBook

    rows = ObjectBook(s3_bucket.root("artifacts")).instances("image-check")
    assert [(r.task_id, r.state) for r in rows] == [("fit", "success")]
