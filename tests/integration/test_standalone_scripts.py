"""Pipelines run as whole Python processes, as users run them: `python my_pipeline.py`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cadenza import RunState, TaskState
from cadenza.store import open_store

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    from cadenza import pipeline, task

    @task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(xs: list[int]) -> int:
        return sum(xs)

    @pipeline
    def script_pipeline(n: int = 50):
        total(square.expand(x=numbers(n)))

    if __name__ == "__main__":
        result = script_pipeline.run(n=int(sys.argv[1]))
        print("RESULT", result.run_id, result.state, result.outputs["total"])
        raise SystemExit(0 if result.ok else 1)
""")


def _env(home: Path, db_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env["CADENZA_HOME"] = str(home)
    if db_url:
        env["CADENZA_DATABASE_URL"] = db_url
    return env


def test_tasks_defined_in_main_run_on_worker_processes(tmp_path):
    script = tmp_path / "my_pipeline.py"
    script.write_text(SCRIPT)
    home = tmp_path / "home"

    proc = subprocess.run([sys.executable, str(script), "20"], cwd=tmp_path, env=_env(home),
                          capture_output=True, text=True, timeout=120, check=False)

    assert proc.returncode == 0, proc.stderr
    assert "success 2470" in proc.stdout  # sum of squares below 20
    assert (home / "cadenza.db").exists()  # the store was created on first use


def test_four_processes_share_one_sqlite_store_without_lock_errors(tmp_path):
    script = tmp_path / "my_pipeline.py"
    script.write_text(SCRIPT)
    home = tmp_path / "home"
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"

    procs = [
        subprocess.Popen([sys.executable, str(script), "200"], cwd=tmp_path,
                         env=_env(home, db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]

    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "database is locked" not in err
    run_ids = [line.split()[1] for out, _ in outputs for line in out.splitlines()
               if line.startswith("RESULT")]
    assert len(set(run_ids)) == 4
    store = open_store(db_url)
    for run_id in run_ids:
        assert store.get_run(run_id).state is RunState.SUCCESS
        tis = store.get_task_instances(run_id)
        assert sum(1 for t in tis if t.task_id == "square" and t.map_index >= 0) == 200
        assert all(t.state is TaskState.SUCCESS for t in tis)


def test_a_script_closes_its_store_at_exit_and_keeps_user_objects_finalised(tmp_path):
    """At exit the store is closed (SQLite folds its WAL back into the database file). The
    interpreter's last collection still runs: a user's buffered file caught in a reference
    cycle is flushed by it, so its data is not lost. A handler registered before the store
    runs after ours (atexit is last-in, first-out)."""
    script = tmp_path / "my_pipeline.py"
    out_file = tmp_path / "user-output.txt"
    script.write_text(textwrap.dedent(f"""
        import atexit, os

        def seen_at_exit():
            home = os.environ["CADENZA_HOME"]
            print("WAL", os.path.exists(os.path.join(home, "cadenza.db-wal")), flush=True)

        atexit.register(seen_at_exit)

        if __name__ == "__main__":
            class Holder:  # a cycle: only the final garbage collection frees (and flushes) it
                pass
            holder = Holder()
            holder.self = holder
            holder.file = open({str(out_file)!r}, "w", buffering=1 << 16)
            holder.file.write("user data")  # left to the interpreter to close at exit
    """) + SCRIPT)
    home = tmp_path / "home"

    proc = subprocess.run([sys.executable, str(script), "5"], cwd=tmp_path, env=_env(home),
                          capture_output=True, text=True, timeout=120, check=False)

    assert proc.returncode == 0, proc.stderr
    assert "WAL False" in proc.stdout
    assert out_file.read_text() == "user data"
    (run,) = open_store(f"sqlite:///{home / 'cadenza.db'}").list_runs()
    assert run.state is RunState.SUCCESS


def test_workers_start_before_the_store_is_imported(tmp_path):
    """A cold start overlaps the worker pool's start (other processes) with importing
    SQLAlchemy (this one): the pool must be started first, or the two add up."""
    script = tmp_path / "order.py"
    script.write_text(textwrap.dedent("""
        import sys
        import cadenza.engine.api as api

        seen = []
        start = api._start_executor

        def recording(name):
            seen.append("sqlalchemy" in sys.modules)
            return start(name)

        api._start_executor = recording
        if __name__ == "__main__":
            import atexit
            atexit.register(lambda: print("SQLALCHEMY LOADED AT POOL START", seen))
    """) + SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "3"], cwd=tmp_path,
                          env=_env(tmp_path / "home"), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "SQLALCHEMY LOADED AT POOL START [False]" in proc.stdout


def test_a_one_task_script_on_a_new_store_loads_only_what_it_needs(tmp_path):
    """The cold-start path (bench/overhead.py "one-task pipeline as a fresh process"): a new
    SQLite store is created from the rendered schema (store/sqlite_sql.py) and stamped, not
    migrated, and the run runs on sqlite3: SQLAlchemy is not imported at all (~900 M of the
    ~1,500 M instructions this process took with it), nor Alembic or pydantic (plain
    parameters). Each of these was once on this path and cost 80-300 ms of a cold start."""
    script = tmp_path / "one.py"
    script.write_text(textwrap.dedent("""
        import sys
        from cadenza import pipeline, task

        @task
        def hello(name: str) -> str:
            return f"hello {name}"

        @pipeline
        def one(name: str = "world"):
            hello(name)

        if __name__ == "__main__":
            result = one.run()
            heavy = ("sqlalchemy", "alembic", "pydantic", "mako")
            print("LOADED", sorted(m for m in sys.modules
                                   if any(m == h or m.startswith(h + ".") for h in heavy)))
            print("EXECUTOR", result.run_id, result.state)
    """))
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(home),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout
    run_id = proc.stdout.split("EXECUTOR ", 1)[1].split()[0]
    store = open_store(f"sqlite:///{home / 'cadenza.db'}")
    try:
        run = store.get_run(run_id)
        assert run.state is RunState.SUCCESS
        assert run.executor == "processes"  # the default executor, as users run it
    finally:
        store.dispose()
