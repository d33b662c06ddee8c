"""Instructions per chain200 task of a run's driver process, counted by callgrind (load-free).

    python bench/pg_driver_counts.py [--executor inline] [--runs 2] [--sqlite]

Runs this script again under `valgrind --tool=callgrind --instr-atstart=no`: the child runs
one chain of 200 tasks to warm up (imports, the store, the pool, prepared statements), turns
instrumentation on (`callgrind_control -i on`), runs `--runs` chains, turns it off, and this
prints the instructions counted (every thread of the driver process; not the workers, not the
database server) divided by the tasks run. Counting only the timed runs inside one process
matters: two processes (a run count minus another) differ by 100-200 M instructions of
start-up, i.e. +-250 k per task. PostgreSQL by default (a fresh schema in
postgresql+psycopg://postgres@127.0.0.1:5432/test, dropped after), SQLite with `--sqlite`.

Under valgrind a task takes over GROUP_COMMIT_S, so inline's watch thread commits some starts
that a native run leaves out (statements per task ~3.08 instead of 3.01): compare builds with
each other, not with native runs. Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _child(executor: str, runs: int) -> None:
    sys.path.insert(0, str(HERE))
    import commit_counts

    counter = commit_counts.Counter()
    counter.install()
    commit_counts.one(executor, counter)  # warm-up
    me = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", me], check=True, capture_output=True)
    for _ in range(runs):
        commit_counts.one(executor, counter)
    subprocess.run(["callgrind_control", "-i", "off", me], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", default="inline")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.executor, args.runs)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (callgrind, callgrind_control) is not installed")
    sys.path.insert(0, str(HERE))
    from overhead import PG_DEFAULT, _drop_schema, _postgres_schema

    out = Path(tempfile.mkdtemp(prefix="cadenza-drivercounts-"))
    env = dict(os.environ, CADENZA_HOME=str(out / "home"), PYTHONHASHSEED="0")
    schema = None
    if not args.sqlite:
        env["CADENZA_DATABASE_URL"], schema = _postgres_schema(PG_DEFAULT)
    try:
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={out}/cg.%p", sys.executable, __file__,
                        "--child", "--executor", args.executor, "--runs", str(args.runs)],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        total = 0
        for path in out.glob("cg.*"):
            for line in path.read_text().splitlines():
                if line.startswith("totals:"):
                    total += int(line.split()[1])
        tasks = args.runs * 200
        print(f"chain200 on {args.executor}, {'SQLite' if args.sqlite else 'PostgreSQL'}: "
              f"{total / tasks:,.0f} driver instructions per task ({args.runs} runs)")
    finally:
        if schema:
            _drop_schema(PG_DEFAULT, schema)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
