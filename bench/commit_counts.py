"""What one chained step costs, in counts that a loaded machine does not blur.

    python bench/commit_counts.py [--executor inline] [--postgres [URL]] [--runs 3]
    python bench/commit_counts.py --store-writes [--postgres [URL]]

Runs a chain of 200 tasks (each takes the previous output) after one warm-up run, and
prints per task, medians over `--runs`: write transactions and statements sent; the driver
process's voluntary and involuntary context switches (all its threads) and CPU time; on
PostgreSQL the CPU time of the writer's server backend (from /proc, so the server must be on
this machine). CPU times are the one figure here that load inflates (a loaded core runs
slower, caches are colder), so quote them beside the load average.

`--store-writes`: the store alone, without the engine: the write of a chained step (the
finished task's success and attempt) 400 times, 5 times; per write the CPU of this process
and of the writer's backend. Run it before and after a change, interleaved, under the same
load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("CADENZA_HOME", tempfile.mkdtemp(prefix="cadenza-counts-"))

from overhead import PG_DEFAULT, _drop_schema, _postgres_schema
from workloads import inc, source

from cadenza import pipeline, task

inc_t = task(inc)
source_t = task(source)
TASKS = 200


@pipeline
def chain():
    x = source_t(1)
    for _ in range(TASKS - 1):
        x = inc_t(x)


class Counter:
    """Counts the store's write transactions and the statements in them."""

    def __init__(self) -> None:
        self.commits = 0
        self.statements = 0

    def install(self) -> None:
        from cadenza.store import dml, sqlite_store

        original = dml.Writer.run
        original_sqlite = sqlite_store.SqliteWriter.run
        counter = self

        def run(writer: Any, steps: Any, action: str, **kw: Any) -> None:
            counter.commits += 1
            counter.statements += sum(len(step[1]) for step in steps)
            original(writer, steps, action, **kw)

        def run_sqlite(writer: Any, steps: Any, action: str) -> None:  # a SQLite file's runs
            counter.commits += 1
            counter.statements += sum(len(step[1]) for step in steps)
            original_sqlite(writer, steps, action)

        dml.Writer.run = run  # type: ignore[method-assign]
        sqlite_store.SqliteWriter.run = run_sqlite  # type: ignore[method-assign]


def backend_cpu_s() -> float | None:
    """CPU seconds of the store's kept PostgreSQL connection's server process."""
    from cadenza.store import open_store

    pg = getattr(open_store()._writer, "_pg", None)
    if pg is None:
        return None
    pid = pg.pg.info.backend_pid
    try:  # nanoseconds on a CPU (/proc/PID/stat counts in 10 ms ticks)
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except OSError:
        return None


def one(executor: str, counter: Counter) -> dict[str, float]:
    counter.commits = counter.statements = 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    b0 = backend_cpu_s()
    c0 = time.process_time()
    result = chain.run(executor=executor)
    c1 = time.process_time()
    b1 = backend_cpu_s()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if not result.ok:
        raise SystemExit(f"chain on {executor} ended {result.state}")
    n = TASKS
    row = {
        "commits": counter.commits / n,
        "statements": counter.statements / n,
        "voluntary_cs": (r1.ru_nvcsw - r0.ru_nvcsw) / n,
        "involuntary_cs": (r1.ru_nivcsw - r0.ru_nivcsw) / n,
        "driver_cpu_us": (c1 - c0) * 1e6 / n,
    }
    if b0 is not None and b1 is not None:
        row["backend_cpu_us"] = (b1 - b0) * 1e6 / n
    return row


def store_writes(runs: int = 5, writes: int = 400) -> None:
    from dataclasses import replace

    from cadenza.core import clock
    from cadenza.core.records import (
        AttemptRecord,
        RunRecord,
        TaskInstanceRecord,
        ValueRef,
        WriteBatch,
    )
    from cadenza.core.states import RunState, TaskState
    from cadenza.store import open_store

    store = open_store()
    now = clock.now()
    done = ValueRef(kind="json", value=1)

    def batches(n: int) -> list[WriteBatch]:
        run = RunRecord(run_id=f"r{time.monotonic_ns()}", pipeline="p",
                        state=RunState.RUNNING, created_at=now)
        tis = [TaskInstanceRecord(run_id=run.run_id, task_id=f"t{i}") for i in range(n)]
        store.write(WriteBatch(new_runs=[run], new_task_instances=tis))
        return [WriteBatch(
            task_instance_updates=[replace(t, state=TaskState.SUCCESS, attempt=1,
                                           started_at=now, ended_at=now, output=done)],
            attempts=[AttemptRecord(run_id=run.run_id, task_id=t.task_id, map_index=-1,
                                    attempt=1, state=TaskState.SUCCESS, started_at=now,
                                    ended_at=now)],
            synchronous=False) for t in tis]

    for b in batches(50):  # warm-up: the kept connection, prepared statements
        store.write(b)
    rows = []
    for _ in range(runs):
        todo = batches(writes)
        b0, c0 = backend_cpu_s(), time.process_time()
        for b in todo:
            store.write(b)
        b1, c1 = backend_cpu_s(), time.process_time()
        rows.append(((c1 - c0) * 1e6 / writes,
                     None if b0 is None or b1 is None else (b1 - b0) * 1e6 / writes))
    print(f"a chained step's store write, per write, median of {runs} x {writes} "
          f"(load {os.getloadavg()[0]:.1f}):")
    print(f"  client_cpu_us    {statistics.median(r[0] for r in rows):8.1f}")
    if rows[0][1] is not None:
        print(f"  backend_cpu_us   {statistics.median(r[1] for r in rows):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", default="inline")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", nargs="?", const=PG_DEFAULT, default=None, metavar="URL")
    parser.add_argument("--store-writes", action="store_true",
                        help="time the store's write of a chained step alone")
    args = parser.parse_args()
    schema = None
    if args.postgres:
        os.environ["CADENZA_DATABASE_URL"], schema = _postgres_schema(args.postgres)
    try:
        if args.store_writes:
            store_writes()
            return
        counter = Counter()
        counter.install()
        one(args.executor, counter)  # warm-up: the store, the pool, prepared statements
        rows = [one(args.executor, counter) for _ in range(args.runs)]
    finally:
        if schema:
            _drop_schema(args.postgres, schema)
    load = os.getloadavg()[0]
    print(f"chain{TASKS} on {args.executor}, {'PostgreSQL' if schema else 'SQLite'}, "
          f"per task, median of {args.runs} (load {load:.1f}):")
    for key in rows[0]:
        print(f"  {key:<16} {statistics.median(r[key] for r in rows):8.2f}")


if __name__ == "__main__":
    main()
