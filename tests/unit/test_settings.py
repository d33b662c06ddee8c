"""core/settings.py: cadenza.toml discovery, environment precedence, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.core import settings as settings_mod
from cadenza.core.errors import ConfigError
from cadenza.core.settings import find_config, load_settings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "cadenza.toml").write_text(
        'executor = "threads"\n'
        'home = "state"\n'
        'pipelines = ["pipelines/", "jobs.py"]\n'
        "inline_limit_bytes = 1024\n"
        'team = "ml"\n'
    )
    return root


@pytest.fixture
def nested(project: Path) -> Path:
    folder = project / "src" / "pkg" / "deep"
    folder.mkdir(parents=True)
    return folder


def no_config_above(path: Path) -> None:
    if find_config(path) is not None:
        pytest.skip(f"a cadenza.toml above {path} would be found: {find_config(path)}")


def test_config_is_found_by_walking_up_from_a_nested_folder(project: Path, nested: Path) -> None:
    assert find_config(nested) == (project / "cadenza.toml").resolve()
    s = load_settings(nested, environ={})
    assert s.config_file == (project / "cadenza.toml").resolve()
    assert s.project_root == project.resolve()


def test_nearest_config_wins(project: Path, nested: Path) -> None:
    inner = project / "src"
    (inner / "cadenza.toml").write_text('executor = "inline"\n')
    s = load_settings(nested, environ={})
    assert s.config_file == (inner / "cadenza.toml").resolve()
    assert s.executor == "inline"


def test_values_from_cadenza_toml(nested: Path, project: Path) -> None:
    s = load_settings(nested, environ={})
    root = project.resolve()
    assert s.executor == "threads"
    assert s.home == root / "state"  # relative to the config file's folder, not the cwd
    assert s.database_url == f"sqlite:///{root / 'state' / 'cadenza.db'}"
    assert s.artifact_root == str(root / "state" / "artifacts")
    assert s.pipelines == ("pipelines/", "jobs.py")
    assert s.inline_limit_bytes == 1024
    assert s.extra == {"team": "ml"}
    assert s.logs_dir == root / "state" / "logs"


def test_tool_cadenza_section_is_read(tmp_path: Path) -> None:
    (tmp_path / "cadenza.toml").write_text('[tool.cadenza]\nexecutor = "threads"\npipelines = "flows/"\n')
    s = load_settings(tmp_path, environ={})
    assert s.executor == "threads"
    assert s.pipelines == ("flows/",)


def test_environment_beats_cadenza_toml(nested: Path, tmp_path: Path) -> None:
    env = {
        "CADENZA_EXECUTOR": "inline",
        "CADENZA_HOME": str(tmp_path / "elsewhere"),
        "CADENZA_DATABASE_URL": "postgresql+psycopg://u@db/cadenza",
        "CADENZA_ARTIFACT_ROOT": "s3://bucket/artifacts",
        "CADENZA_INLINE_LIMIT_BYTES": "10",
        "CADENZA_GPUS": "0, 2,",
    }
    s = load_settings(nested, environ=env)
    assert s.executor == "inline"
    assert s.home == tmp_path / "elsewhere"
    assert s.database_url == "postgresql+psycopg://u@db/cadenza"
    assert not s.is_sqlite
    assert s.artifact_root == "s3://bucket/artifacts"
    assert s.inline_limit_bytes == 10
    assert s.gpus == ("0", "2")
    assert s.pipelines == ("pipelines/", "jobs.py")  # not overridden: still from the file


def test_home_from_environment_moves_the_default_database_and_artifacts(tmp_path: Path) -> None:
    no_config_above(tmp_path)
    home = tmp_path / "h"
    s = load_settings(tmp_path, environ={"CADENZA_HOME": str(home)})
    assert s.database_url == f"sqlite:///{home / 'cadenza.db'}"
    assert s.artifact_root == str(home / "artifacts")


def test_process_environment_is_read_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_config_above(tmp_path)
    monkeypatch.setenv("CADENZA_EXECUTOR", "threads")
    monkeypatch.delenv("CADENZA_HOME", raising=False)
    assert load_settings(tmp_path).executor == "threads"


def test_defaults_without_config_or_environment(tmp_path: Path) -> None:
    no_config_above(tmp_path)
    s = load_settings(tmp_path, environ={})
    root = tmp_path.resolve()
    assert s.config_file is None
    assert s.project_root == root
    assert s.home == root / ".cadenza"
    assert s.database_url == f"sqlite:///{root / '.cadenza' / 'cadenza.db'}"
    assert s.is_sqlite
    assert s.artifact_root == str(root / ".cadenza" / "artifacts")
    assert s.executor == "processes"
    assert s.pipelines == ()
    assert s.inline_limit_bytes == 64 * 1024
    assert s.gpus is None


def test_unknown_executor_in_environment_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={"CADENZA_EXECUTOR": "kubernetes"})
    assert "unknown executor 'kubernetes'" in str(info.value)
    assert "inline, threads, processes" in (info.value.hint or "")


def test_unknown_executor_in_cadenza_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "cadenza.toml").write_text('executor = "proccesses"\n')
    with pytest.raises(ConfigError, match="unknown executor 'proccesses'"):
        load_settings(tmp_path, environ={})


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "cadenza.toml").write_text("executor = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert "cadenza.toml is not valid TOML" in str(info.value)


def test_get_settings_is_cached_and_set_settings_replaces_it(tmp_path: Path) -> None:
    custom = load_settings(tmp_path, environ={"CADENZA_EXECUTOR": "inline",
                                              "CADENZA_HOME": str(tmp_path / "h")})
    try:
        settings_mod.set_settings(custom)
        assert settings_mod.get_settings() is custom
        changed = settings_mod.override(executor="threads")
        assert changed.executor == "threads"
        assert settings_mod.get_settings() is changed
        assert custom.executor == "inline"  # frozen: the old object is unchanged
    finally:
        settings_mod.set_settings(None)
