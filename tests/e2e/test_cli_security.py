"""`cadenza users|tokens|secrets` as the real executable, and a secret's way into a task:
read with get_context().secrets, masked as *** in the task's log, its stored error and
traceback, and the CLI's output (`run`, `logs`, `runs show`), on every executor."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.e2e.test_cli_support import Project, make_project, strip_ansi

SECRET = "sk-live-7f3a9c1e5b"

USES_SECRET = '''
import hashlib

from cadenza import get_context, pipeline, task


@task
def digest() -> str:
    key = get_context().secrets["API_KEY"]
    return hashlib.sha256(key.encode()).hexdigest()


@task
def leaky(d: str) -> None:
    ctx = get_context()
    key = ctx.secrets["API_KEY"]
    print(f"printing the key: {key}", flush=True)
    ctx.logger.warning("logging the key: %s", key)
    print(f"the mapping: {ctx.secrets!r}", flush=True)
    raise ValueError(f"the API refused key {key}")


@task
def missing() -> str:
    return get_context().secrets["NOT_SET"]


@pipeline
def uses_secret():
    leaky(digest())


@pipeline
def uses_missing():
    missing()
'''


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    return make_project(tmp_path, files={"pipelines/uses_secret.py": USES_SECRET})


def _all_store_text(p: Project) -> str:
    db = p.env["CADENZA_DATABASE_URL"].removeprefix("sqlite:///")
    con = sqlite3.connect(db)
    try:
        parts = []
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            parts.extend(repr(row) for row in con.execute(f'SELECT * FROM "{table}"'))
        return "\n".join(parts)
    finally:
        con.close()


def test_users_and_tokens_from_the_cli(proj: Project) -> None:
    listed = proj.ok("users", "list").stdout
    assert "No users" in listed
    made = proj.ok("users", "create", "ana", "--role", "operator", "--password", "pw-123456")
    assert "Created user ana (operator)" in made.stdout and "Auth is on now" in made.stdout
    proj.ok("users", "create", "bot", "--role", "viewer", "--no-password")
    users = proj.json("users", "list")
    assert [(u["name"], u["role"], u["has_password"]) for u in users] == [
        ("ana", "operator", True), ("bot", "viewer", False)]
    again = proj.ok("users", "create", "ana", "--role", "admin", "--password", "x", code=2)
    assert "user 'ana' already exists" in again.stderr

    updated = proj.ok("users", "update", "bot", "--role", "operator", "--password", "pw-654321")
    assert "User bot: role operator and a new password." in updated.stdout
    assert [u["role"] for u in proj.json("users", "list")] == ["operator", "operator"]
    proj.ok("users", "disable", "bot")
    assert [u["disabled"] for u in proj.json("users", "list")] == [False, True]
    proj.ok("users", "delete", "bot")

    token = proj.ok("tokens", "create", "--user", "ana", "--expires", "30d")
    value = token.stdout.strip()
    assert value.startswith("cdz_") and "not shown again" in token.stderr
    tokens = proj.json("tokens", "list")
    assert [(t["user"], t["status"]) for t in tokens] == [("ana", "active")]
    assert value not in proj.ok("tokens", "list").stdout
    assert value not in _all_store_text(proj)  # only its SHA-256
    assert hashlib.sha256(value.encode()).hexdigest() in _all_store_text(proj)

    revoked = proj.ok("tokens", "revoke", tokens[0]["id"])
    assert f"Revoked token {tokens[0]['id']} of ana" in revoked.stdout
    assert proj.json("tokens", "list")[0]["status"] == "revoked"


@pytest.mark.parametrize(("args", "message"), [
    (["users", "create", "x", "--role", "root", "--password", "p"], "unknown role 'root'"),
    (["users", "create", "x", "--role", "admin"], "no --password given and no terminal"),
    (["tokens", "create", "--user", "nobody"], "no user named 'nobody'"),
    (["tokens", "create", "--user", "nobody", "--expires", "soon"], "'soon' is not a duration"),
    (["tokens", "revoke", "abc"], "no API token has the id 'abc'"),
    (["users", "update", "nobody", "--role", "admin"], "no user named 'nobody'"),
    (["users", "update", "nobody"], "nothing to change"),
    (["secrets", "delete", "NOPE"], "no secret named 'NOPE'"),
    (["secrets", "set", "bad name", "v"], "cannot be a secret name"),
])
def test_mistakes_are_one_clear_line_and_exit_2(proj: Project, args: list[str],
                                                message: str) -> None:
    proc = proj.ok(*args, code=2)
    text = " ".join(strip_ansi(proc.stderr).split())
    assert message in text and "fix:" in text


def test_secrets_are_set_from_an_argument_or_stdin_and_listed_by_name(proj: Project) -> None:
    import subprocess

    from tests.e2e.test_cli_support import CADENZA

    first = proj.ok("secrets", "set", "API_KEY", SECRET)
    assert "Set secret API_KEY" in first.stdout and SECRET not in first.stdout + first.stderr
    piped = subprocess.run([*CADENZA, "secrets", "set", "DB_PASSWORD", "-"], cwd=proj.root,
                           env=proj.env, input="from-stdin-123\n", text=True,
                           capture_output=True, timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    assert "Set secret DB_PASSWORD" in piped.stdout
    again = proj.ok("secrets", "set", "API_KEY", SECRET)
    assert "Replaced secret API_KEY" in again.stdout

    listed = proj.ok("secrets", "list").stdout
    assert "API_KEY" in listed and "DB_PASSWORD" in listed and SECRET not in listed
    assert [s["name"] for s in proj.json("secrets", "list")] == ["API_KEY", "DB_PASSWORD"]
    stored = _all_store_text(proj)
    assert SECRET not in stored and "from-stdin-123" not in stored

    key_file = Path(proj.env["CADENZA_HOME"]) / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    proj.ok("secrets", "delete", "DB_PASSWORD")
    assert [s["name"] for s in proj.json("secrets", "list")] == ["API_KEY"]


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_a_task_reads_a_secret_and_its_value_is_masked_everywhere(proj: Project,
                                                                 executor: str) -> None:
    proj.ok("secrets", "set", "API_KEY", SECRET)
    run = proj.ok("run", "pipelines/uses_secret.py:uses_secret", "--executor", executor,
                  code=1)
    assert SECRET not in run.stdout + run.stderr
    assert "the API refused key ***" in strip_ansi(run.stdout + run.stderr)
    run_id = proj.last_run_id()

    shown = proj.json("runs", "show", run_id)
    tis = {t["task_id"]: t for t in shown["task_instances"]}
    # The task got the real value: its digest is the value's.
    assert tis["digest"]["state"] == "success"
    digest_out = proj.json("runs", "show", run_id)
    assert hashlib.sha256(SECRET.encode()).hexdigest() in str(digest_out)
    assert tis["leaky"]["state"] == "failed"
    assert "the API refused key ***" in str(tis["leaky"]["error"])
    assert SECRET not in str(shown)

    logs = proj.ok("logs", run_id, "leaky").stdout
    assert "printing the key: ***" in logs
    assert "logging the key: ***" in logs
    assert "the mapping: Secrets(API_KEY=***)" in logs
    assert "ValueError: the API refused key ***" in logs
    assert SECRET not in logs
    assert SECRET not in proj.ok("runs", "show", run_id).stdout

    for log_file in (Path(proj.env["CADENZA_HOME"]) / "logs" / run_id).rglob("*"):
        if log_file.is_file():
            assert SECRET not in log_file.read_text(encoding="utf-8")
    assert SECRET not in _all_store_text(proj)


def test_a_missing_secret_fails_the_task_naming_the_fix(proj: Project) -> None:
    proj.ok("secrets", "set", "API_KEY", SECRET)
    run = proj.ok("run", "pipelines/uses_secret.py:uses_missing", code=1)
    text = " ".join(strip_ansi(run.stdout + run.stderr).split())
    assert "no secret named 'NOT_SET' (secrets set: API_KEY)" in text
    assert SECRET not in text


def test_a_secret_set_with_another_key_fails_only_the_task_reading_it(proj: Project) -> None:
    proj.ok("secrets", "set", "API_KEY", SECRET)
    env = dict(proj.env, CADENZA_SECRET_KEY="B" * 43 + "=")
    run = proj.ok("run", "pipelines/uses_secret.py:uses_secret", code=1, env=env)
    text = " ".join(strip_ansi(run.stdout + run.stderr).split())
    assert "secret 'API_KEY' cannot be read: it was encrypted with another secret key" in text
    broken = dict(proj.env, CADENZA_SECRET_KEY="not-a-key")
    run = proj.ok("run", "pipelines/uses_secret.py:uses_secret", code=1, env=broken)
    text = " ".join(strip_ansi(run.stdout + run.stderr).split())
    assert ("secret 'API_KEY' cannot be read: the secret key in CADENZA_SECRET_KEY is not a "
            "Fernet key") in text
