"""The run path on a SQLite file without SQLAlchemy (store/sqlite_store.py): what a run does
goes through sqlite3, anything else through the SQLAlchemy RunStore built on first use, on
the same file, and both see each other's rows. (Every test of test_store.py also runs on
it: its SQLite store is this one.)"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from cadenza.core.records import WriteBatch
from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from cadenza.store.runs import RunStore
from cadenza.store.sqlite_store import SqliteStore
from tests.integration.test_store import make_run, ti


def test_other_calls_reach_a_sqlalchemy_runstore_built_on_first_use(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        assert isinstance(store, SqliteStore)
        run = make_run()
        store.create_run(run, [ti(run.run_id, "a")])
        store.write(WriteBatch(task_instance_updates=[
            ti(run.run_id, "a", state=TaskState.SUCCESS, attempt=1)]))
        assert store._full is None  # the run path needed no SQLAlchemy
        (listed,) = store.list_runs()  # RunStore's
        assert isinstance(store._full, RunStore)
        assert listed == store.get_run(run.run_id) == run
        assert store.get_task_instance(run.run_id, "a").state is TaskState.SUCCESS  # type: ignore[union-attr]
        assert store.request_cancel(run.run_id)  # written by RunStore, read by the run path
        assert store.cancel_requests([run.run_id, "other"]) == {run.run_id}
    finally:
        store.dispose()
    assert store._full is None


def test_a_script_runs_a_pipeline_without_importing_sqlalchemy(tmp_path: Path) -> None:
    """A fresh process: one task on the default executor and the inline one, on a new
    store, then on the same store again (schema already there)."""
    script = textwrap.dedent("""
        import sys
        from cadenza import pipeline, task

        @task
        def double(x: int) -> int:
            return 2 * x

        @pipeline
        def p(x: int = 2):
            double(x)

        assert p.run().ok and p.run(executor="inline").outputs["double"] == 4
        print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy"))
    """)
    env = {"CADENZA_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        assert "LOADED []" in out.stdout, out.stdout
    store = open_store(f"sqlite:///{tmp_path / 'home' / 'cadenza.db'}")
    try:
        runs = store.list_runs()
        assert len(runs) == 4 and all(r.state is RunState.SUCCESS for r in runs)
    finally:
        store.dispose()


def test_a_new_database_gets_the_schema_sqlalchemy_would_create(tmp_path: Path) -> None:
    """The run path creates a new database from store/sqlite_sql.SCHEMA; the SQLAlchemy path
    (create_all of tables.py, as a RunStore on the file makes it) gives the same tables,
    indexes and revision, text for text. (test_store_migrations compares it with Alembic's.)"""
    from cadenza.store.runs import build_run_store

    ours = open_store(f"sqlite:///{tmp_path / 'ours.db'}")
    theirs = build_run_store(f"sqlite:///{tmp_path / 'theirs.db'}")
    ours.dispose()
    theirs.dispose()

    def schema(name: str) -> list[tuple[str, ...]]:
        conn = sqlite3.connect(tmp_path / name)
        try:
            return [*conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                  "ORDER BY name"),
                    *conn.execute("SELECT version_num FROM alembic_version")]
        finally:
            conn.close()

    assert schema("ours.db") == schema("theirs.db")
    assert len(schema("ours.db")) > 20
