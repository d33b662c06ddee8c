"""What the split-brain fence (`WriteBatch.fence`) costs a chained step's write, in client
instructions counted by callgrind (load-free).

    python bench/fence_counts.py [--postgres URL] [--writes 50 250]

Runs the store's write of a chained step (the finished task's update and its attempt,
`synchronous=False`, as the driver sends most of a chain's) N1 and N2 times in a fresh
process under `valgrind --tool=callgrind`, with and without the fence, and prints
(I(N2) - I(N1)) / (N2 - N1) for each: this process's instructions per write (SQLite: the
library's own work included; PostgreSQL: the client only, the server's side is
bench/pg_backend_counts.py `--fence`). Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import callgrind  # bench/callgrind.py, beside this script

WRITER = r"""
import sys, time
from dataclasses import replace
from cadenza.core import clock
from cadenza.core.records import AttemptRecord, RunRecord, TaskInstanceRecord, ValueRef, WriteBatch
from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store

store = open_store()
now = clock.now()
done = ValueRef(kind="json", value=1)
fenced = sys.argv[2] == "fence"

def batches(n):
    run = RunRecord(run_id=f"r{time.monotonic_ns()}", pipeline="p", state=RunState.RUNNING,
                    created_at=now, driver_id="host:1:me", heartbeat_at=now)
    tis = [TaskInstanceRecord(run_id=run.run_id, task_id=f"t{i}") for i in range(n)]
    store.create_run(run, tis)
    fence = (run.run_id, "host:1:me") if fenced else None
    return [WriteBatch(
        task_instance_updates=[replace(t, state=TaskState.SUCCESS, attempt=1, started_at=now,
                                       ended_at=now, output=done)],
        attempts=[AttemptRecord(run_id=run.run_id, task_id=t.task_id, map_index=-1, attempt=1,
                                state=TaskState.SUCCESS, started_at=now, ended_at=now)],
        synchronous=False, fence=fence) for t in tis]

for b in batches(20):
    store.write(b)
for b in batches(int(sys.argv[1])):
    store.write(b)
store.dispose()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, nargs=2, default=[50, 250], metavar=("N1", "N2"))
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="a PostgreSQL URL (a fresh schema is made in it)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    root = Path(tempfile.mkdtemp(prefix="cadenza-fence-"))
    try:
        for mode in ("nofence", "fence"):
            counts = []
            for n in args.writes:
                env = dict(os.environ, CADENZA_HOME=str(root / "home"))
                schema = None
                if args.postgres:
                    sys.path.insert(0, str(Path(__file__).resolve().parent))
                    from overhead import _drop_schema, _postgres_schema

                    env["CADENZA_DATABASE_URL"], schema = _postgres_schema(args.postgres)
                else:
                    env["CADENZA_DATABASE_URL"] = f"sqlite:///{root}/{mode}{n}.db"
                out = root / f"cg.{mode}.{n}"
                try:
                    subprocess.run(["valgrind", "--tool=callgrind",
                                    f"--callgrind-out-file={out}", sys.executable, "-c",
                                    WRITER, str(n), mode], env=env, check=True,
                                   capture_output=True)
                finally:
                    if schema is not None:
                        _drop_schema(args.postgres, schema)
                counts.append(callgrind.total(out))
            (n1, n2), (i1, i2) = args.writes, counts
            print(f"{mode:8} client instructions per chained-step write: "
                  f"{(i2 - i1) / (n2 - n1):,.0f} ({n1} writes: {i1:,}; {n2} writes: {i2:,})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
