"""Helpers for the CLI end-to-end tests (no tests here): a temporary project and a way to run
the real `cadenza` executable in it.

Each test gets its own project folder with a cadenza.toml, copies of the
tests/pipelines/cli_*.py fixtures in pipelines/, and CADENZA_HOME / CADENZA_DATABASE_URL
pointing inside it, so tests never share a store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import forked_cli

FIXTURES = Path(__file__).resolve().parents[1] / "pipelines"
_SCRIPT = Path(sys.executable).parent / "cadenza"
CADENZA: list[str] = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cadenza"]
# Every Project.cli call a new process (CI runs them forked: tests/fixtures/forked_cli.py).
COLD = bool(os.environ.get("CADENZA_TEST_COLD_CLI"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CADENZA_") and k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")}
    env["CADENZA_HOME"] = str(home)
    env["CADENZA_DATABASE_URL"] = f"sqlite:///{home / 'cadenza.db'}"
    env["COLUMNS"] = "200"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    @property
    def pipelines(self) -> Path:
        return self.root / "pipelines"

    def cli(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, cold: bool = COLD) -> subprocess.CompletedProcess[str]:
        """`cadenza ARGS`, to its end. A process forked from this worker's CLI zygote
        (tests/fixtures/forked_cli.py: the command's argv, environment, folder, stdin
        /dev/null, its own exit), unless `cold`: a new `cadenza` process, for a test of how
        one starts (CADENZA_TEST_COLD_CLI=1 makes every call cold)."""
        if not cold:
            return forked_cli.shared("cli").run(list(args), env or self.env, cwd or self.root,
                                                as_executable=True, timeout=timeout)
        return subprocess.run(
            [*CADENZA, *args], cwd=cwd or self.root, env=env or self.env, text=True,
            capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )

    def ok(self, *args: str, code: int = 0, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run and assert the exit code (printing both streams when it differs)."""
        proc = self.cli(*args, **kw)
        assert proc.returncode == code, (
            f"cadenza {' '.join(args)} exited {proc.returncode}, expected {code}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def json(self, *args: str, code: int = 0, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "--json", code=code, **kw).stdout)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([*CADENZA, *args], cwd=self.root, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, **kw)

    def last_run_id(self, **filters: str) -> str:
        args = ["runs", "list", "--limit", "1"]
        for k, v in filters.items():
            args += [f"--{k}", v]
        runs = self.json(*args)
        assert runs, "no run recorded"
        return str(runs[0]["run_id"])


def make_project(tmp_path: Path, *, executor: str = "threads",
                 files: dict[str, str] | None = None) -> Project:
    """A project folder: `files` (path in the project -> text), else the cli_* fixtures."""
    root = tmp_path / "proj"
    (root / "pipelines").mkdir(parents=True)
    (root / "cadenza.toml").write_text(
        f'pipelines = ["pipelines/"]\nexecutor = "{executor}"\n', encoding="utf-8")
    if files is None:
        for f in sorted(FIXTURES.glob("cli_*.py")):
            shutil.copy(f, root / "pipelines" / f.name)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    return Project(root=root, env=clean_env(home))


def deliver_events(p: Project, pipeline_name: str, stream: str,
                   messages: list[tuple[str, bytes]]) -> Any:
    """Define a pipeline `pipeline_name(n: int)` triggered by Redis stream `stream` and hand
    it `messages` (message id, body) as the scheduler would; returns the trigger."""
    from cadenza import pipeline, task
    from cadenza.store import open_store
    from cadenza.store.scheduling import scheduling_store
    from cadenza.triggers.events import EventTrigger, handle_message

    @task
    def echo(n: int) -> int:
        return n

    trigger = EventTrigger(f"redis://127.0.0.1:6379/0?stream={stream}")

    @pipeline(name=pipeline_name, triggers=[trigger])
    def on_event(n: int) -> None:
        echo(n)

    sched = scheduling_store(open_store(p.env["CADENZA_DATABASE_URL"]))
    for message_id, body in messages:
        handle_message(on_event, trigger, message_id, body, sched=sched)
    return trigger


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def instances(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's task instances (from `runs show --json`) by label."""
    return {t["label"]: t for t in run["task_instances"]}


def output_of(run: dict[str, Any], label: str) -> Any:
    ref = instances(run)[label]["output"]
    assert ref is not None and ref["kind"] == "json", ref
    return ref["value"]
