"""PostgreSQL server instructions per chained-step write, counted by callgrind (load-free).

    python bench/pg_backend_counts.py [--writes 50 250]

CPU times of the server backend (bench/commit_counts.py) move 2x run to run on a loaded
2-core VM. This starts a private PostgreSQL (initdb in a temporary directory, port 5499)
under `valgrind --tool=callgrind --trace-children=yes`, so every backend writes its own
instruction count when it exits; runs the store's write of a chained step (the finished
task's update and its attempt, `synchronous=False`) N1 and N2 times, each in a fresh
process and schema after 20 warm-up writes (the run's rows are inserted on another
connection; each write fenced on the run's driver as a driver's are, `--no-fence` for
without); and prints (I(N2) - I(N1)) / (N2 - N1) for the writer's backend. The client
is this checkout's Cadenza (or PYTHONPATH's).

Needs valgrind and PostgreSQL's server binaries (`pg_config --bindir`, or
/usr/lib/postgresql/*/bin); run as root it starts the server as the `postgres` user.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import callgrind  # bench/callgrind.py, beside this script

PORT = 5499

WRITER = r"""
import sys, time
from dataclasses import replace
from cadenza.core import clock
from cadenza.core.records import AttemptRecord, RunRecord, TaskInstanceRecord, ValueRef, WriteBatch
from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from cadenza.store.codec import run_params, ti_params
from cadenza.store.tables import runs_table, task_instances_table

store = open_store()
now = clock.now()
done = ValueRef(kind="json", value=1)

def batches(n):
    run = RunRecord(run_id=f"r{time.monotonic_ns()}", pipeline="p", state=RunState.RUNNING,
                    created_at=now, driver_id="host:1:me")
    tis = [TaskInstanceRecord(run_id=run.run_id, task_id=f"t{i}") for i in range(n)]
    with store._engine.begin() as conn:  # another connection than the writer's
        conn.execute(runs_table.insert(), [run_params(run)])
        conn.execute(task_instances_table.insert(), [ti_params(t) for t in tis])
    return [WriteBatch(
        task_instance_updates=[replace(t, state=TaskState.SUCCESS, attempt=1, started_at=now,
                                       ended_at=now, output=done)],
        attempts=[AttemptRecord(run_id=run.run_id, task_id=t.task_id, map_index=-1, attempt=1,
                                state=TaskState.SUCCESS, started_at=now, ended_at=now)],
        synchronous=False, fence=(run.run_id, "host:1:me") if sys.argv[2] == "fence" else None)
        for t in tis]

for b in batches(20):
    store.write(b)
for b in batches(int(sys.argv[1])):
    store.write(b)
print(store._writer._pg.pg.info.backend_pid)
store.dispose()
"""


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], check=False, capture_output=True,
                             text=True).stdout.strip()
        if (Path(out) / "postgres").exists():
            return Path(out)
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "postgres").exists():
            return Path(cand)
    raise SystemExit("PostgreSQL's server binaries (initdb, postgres) were not found")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, nargs=2, default=[50, 250], metavar=("N1", "N2"))
    parser.add_argument("--no-fence", action="store_true",
                        help="writes without WriteBatch.fence (a driver's writes have it)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    import psycopg

    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="cadenza-pgcounts-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres"]), check=True, capture_output=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"port = {PORT}\nlisten_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{root}'\nautovacuum = off\n")
    server = subprocess.Popen(_as_postgres([
        "valgrind", "--tool=callgrind", "--trace-children=yes",
        f"--callgrind-out-file={root}/cg.%p", str(bindir / "postgres"), "-D", str(data)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dsn = f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                psycopg.connect(dsn, connect_timeout=5).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server under valgrind did not start") from None
                time.sleep(0.5)
        counts = []
        for n in args.writes:
            schema = f"counts_{n}_{os.getpid()}"
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'CREATE SCHEMA "{schema}"')
            env = dict(os.environ, CADENZA_HOME=str(root / "home"), CADENZA_DATABASE_URL=(
                f"postgresql+psycopg://postgres@127.0.0.1:{PORT}/postgres"
                f"?options=-csearch_path%3D{schema}"))
            pid = subprocess.run([sys.executable, "-c", WRITER, str(n),
                                  "nofence" if args.no_fence else "fence"], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()[-1]
            out = root / f"cg.{pid}"
            deadline = time.monotonic() + 60  # the backend writes its file as it exits
            while not (out.exists() and "totals:" in out.read_text()):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no callgrind output from backend {pid}")
                time.sleep(0.5)
            counts.append(callgrind.total(out))
        (n1, n2), (i1, i2) = args.writes, counts
        print(f"writer backend instructions per chained-step write: {(i2 - i1) / (n2 - n1):,.0f}"
              f" ({n1} writes: {i1:,}; {n2} writes: {i2:,})")
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "stop", "-D", str(data),
                                     "-m", "immediate"]), check=False, capture_output=True)
        server.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
