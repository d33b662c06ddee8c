"""`cadenza compile --format dockerfile`, read with dockerfile-parse (issue 16): what the image
holds. Building it is tests/integration/test_kfp_dockerfile.py's job."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cadenza.cli.compile import ENVS_DIR, dockerfile, step_source

dockerfile_parse = pytest.importorskip("dockerfile_parse")


def _parsed(text: str, tmp_path: Path) -> list[tuple[str, str]]:
    path = tmp_path / "Dockerfile"
    path.write_text(text, encoding="utf-8")
    parser = dockerfile_parse.DockerfileParser(path=str(path))
    return [(i["instruction"], i["value"]) for i in parser.structure
            if i["instruction"] != "COMMENT"]


def test_tasks_with_requirements_get_their_environments_built_into_the_image(
        tmp_path: Path) -> None:
    from tests.pipelines.envs import conflicting_pins

    source = step_source("tests/pipelines/envs.py", conflicting_pins.plan.name)
    steps = _parsed(dockerfile(conflicting_pins.plan, source=source,
                               cadenza_spec="cadenza==9.9"), tmp_path)
    assert ("ENV", f"CADENZA_ENVS_DIR={ENVS_DIR}") in steps
    builds = [shlex.split(v)[2] for k, v in steps if k == "RUN" and v.startswith("python -c")]
    assert builds == [
        'from cadenza.executors.envs import ensure_env; ensure_env(tuple(["six==1.15.0"]), None)',
        'from cadenza.executors.envs import ensure_env; ensure_env(tuple(["six==1.16.0"]), None)',
    ]
    install = shlex.split(next(v for k, v in steps if k == "RUN"))
    assert install[5] == "cadenza==9.9"
    # The environments are built after Cadenza is installed, before the project is copied.
    kinds = [k for k, _ in steps]
    assert kinds.index("ENV", 2) > kinds.index("RUN")
    assert ("COPY", "tests/pipelines/envs.py /app/tests/pipelines/envs.py") in steps


def test_extra_requirements_replace_the_pins_of_the_same_package(tmp_path: Path) -> None:
    from examples.quickstart import quickstart

    text = dockerfile(quickstart.plan, source="examples/quickstart.py:quickstart",
                      extra=["SQLAlchemy==2.0.0", "scikit-learn==1.5.2"])
    install = shlex.split(next(v for k, v in _parsed(text, tmp_path) if k == "RUN"))
    names = [w.split("==")[0].lower() for w in install[6:install.index("&&")]]
    assert names.count("sqlalchemy") == 1 and "SQLAlchemy==2.0.0" in install
    assert "scikit-learn==1.5.2" in install
    assert "ENV" not in [k for k, v in _parsed(text, tmp_path) if "ENVS_DIR" in v]


def test_steps_name_the_pipeline_file_relative_to_the_project_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pipelines").mkdir()
    file = tmp_path / "pipelines" / "fraud.py"
    file.write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert step_source("pipelines/fraud.py", "fraud") == "pipelines/fraud.py:fraud"
    assert step_source("pipelines/fraud.py:fraud", "fraud") == "pipelines/fraud.py:fraud"
    assert step_source(f"{file}:fraud", "fraud") == "pipelines/fraud.py:fraud"
    # A bare pipeline name of the project: the file that defines it.
    assert step_source("fraud", "fraud", str(file)) == "pipelines/fraud.py:fraud"
