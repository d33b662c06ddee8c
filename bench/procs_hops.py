"""Where a chained step's time goes on the processes executor, in counts a loaded machine does
not blur (context switches per thread and process) and a timeline of each step's hops.

    python bench/procs_hops.py [--postgres [URL]] [--runs 3] [--no-timeline]

Runs chain200 (each task takes the previous output) on the processes executor after one
warm-up run and prints per task, medians over `--runs`:
  - voluntary / involuntary context switches of each driver thread (/proc/self/task/*/status)
    and of the worker processes (/proc/PID/status), and their CPU (schedstat, microseconds);
  - on PostgreSQL the writer's server backend's CPU;
  - the timeline of a step (unless --no-timeline), medians in microseconds between:
      submit   the driver hands the call to the executor (engine's _submit)
      sent     the call's bytes are written to the worker's pipe
      start    the worker starts the function (TaskOutcome.started_at)
      end      the function ended (TaskOutcome.ended_at)
      read     the driver process has read the outcome off the pipe
      fold     the engine's thread takes the outcome
      next     the engine submits the dependent (fold -> next: the commit and engine Python)
    started_at/ended_at are the worker's wall clock (microseconds), the rest the driver's
    time.time(): one clock on one machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("CADENZA_HOME", tempfile.mkdtemp(prefix="cadenza-hops-"))

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


def _status(path: str) -> tuple[int, int, int]:
    """(voluntary, involuntary context switches, CPU ns) of a task or process."""
    vol = invol = 0
    try:
        for line in Path(f"{path}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol = int(line.split()[1])
        cpu = int(Path(f"{path}/schedstat").read_text().split()[0])
    except OSError:
        return 0, 0, 0
    return vol, invol, cpu


def _snapshot(worker_pids: list[int], backend: int | None) -> dict[str, tuple[int, int, int]]:
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    snap: dict[str, tuple[int, int, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        name = names.get(int(tid), "other")
        key = f"driver:{name.split('-')[0] if name.startswith('Thread-') else name}"
        v = _status(f"/proc/self/task/{tid}")
        old = snap.get(key, (0, 0, 0))
        snap[key] = (old[0] + v[0], old[1] + v[1], old[2] + v[2])
    for pid in worker_pids:
        v = _status(f"/proc/{pid}")
        old = snap.get("workers", (0, 0, 0))
        snap["workers"] = (old[0] + v[0], old[1] + v[1], old[2] + v[2])
    if backend is not None:
        snap["pg backend"] = _status(f"/proc/{backend}")
    return snap


class Timeline:
    """Stamps each step's hops in the driver (see the module docstring)."""

    def __init__(self) -> None:
        self.stamps: dict[tuple[str, str], dict[str, float]] = {}
        self.on = False

    def stamp(self, key: tuple[str, str], what: str) -> None:
        if self.on:
            self.stamps.setdefault(key, {}).setdefault(what, time.time())

    def install(self) -> None:
        from cadenza.engine import driver as driver_mod
        from cadenza.executors.processes import pool as pool_mod

        tl = self
        submit = driver_mod.RunDriver._submit

        def _submit(self: Any, inst: Any, call: Any, **kw: Any) -> None:
            tl.stamp((call.run_id, call.task_id), "submit")
            submit(self, inst, call, **kw)

        driver_mod.RunDriver._submit = _submit

        fold = driver_mod.RunDriver._fold

        def _fold(self: Any, outcome: Any) -> None:
            tl.stamp((outcome.run_id, outcome.task_id), "fold")
            key = (outcome.run_id, outcome.task_id)
            if tl.on:
                st = tl.stamps.setdefault(key, {})
                if outcome.started_at is not None:
                    st["start"] = outcome.started_at.timestamp()
                    st["end"] = outcome.ended_at.timestamp()
            fold(self, outcome)

        driver_mod.RunDriver._fold = _fold

        send = pool_mod.ProcessExecutor._send

        def _send(self: Any, worker: Any, job: Any, fn_msg: Any) -> None:
            send(self, worker, job, fn_msg)
            tl.stamp((job.call.run_id, job.call.task_id), "sent")

        pool_mod.ProcessExecutor._send = _send

        on_message = pool_mod.ProcessExecutor._on_message

        def _on_message(self: Any, worker: Any, data: bytes) -> Any:
            job = worker.job
            if job is not None:
                tl.stamp((job.call.run_id, job.call.task_id), "read")
            return on_message(self, worker, data)

        pool_mod.ProcessExecutor._on_message = _on_message

    def report(self) -> None:
        order = ["submit", "sent", "start", "end", "read", "fold"]
        gaps: dict[str, list[float]] = {}
        for run_id in {k[0] for k in self.stamps}:
            tasks = [st for k, st in self.stamps.items() if k[0] == run_id]
            tasks.sort(key=lambda st: st.get("submit", 0.0))
            for i, st in enumerate(tasks):
                if st is None:
                    continue
                for a, b in itertools.pairwise(order):
                    if a in st and b in st:
                        gaps.setdefault(f"{a} -> {b}", []).append((st[b] - st[a]) * 1e6)
                nxt = tasks[i + 1] if i + 1 < len(tasks) else None
                if nxt is not None and "fold" in st and "submit" in nxt:
                    gaps.setdefault("fold -> next", []).append((nxt["submit"] - st["fold"]) * 1e6)
                if nxt is not None and "end" in st and "start" in nxt:
                    gaps.setdefault("end -> next start", []).append(
                        (nxt["start"] - st["end"]) * 1e6)
        print("timeline, median us (p25-p75):")
        for name, xs in gaps.items():
            xs.sort()
            q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
            print(f"  {name:20s} {q[1]:8.1f}  ({q[0]:.1f}-{q[2]:.1f})")


def backend_pid() -> int | None:
    from cadenza.store import open_store

    pg = getattr(open_store()._writer, "_pg", None)
    return None if pg is None else pg.pg.info.backend_pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", nargs="?", const=PG_DEFAULT, default=None, metavar="URL")
    parser.add_argument("--no-timeline", action="store_true")
    parser.add_argument("--executor", default="processes")
    args = parser.parse_args()
    schema = None
    if args.postgres:
        os.environ["CADENZA_DATABASE_URL"], schema = _postgres_schema(args.postgres)
    tl = Timeline()
    if not args.no_timeline:
        tl.install()
    try:
        from cadenza.executors.base import get_executor

        result = chain.run(executor=args.executor)  # warm-up: workers, store, caches
        assert result.ok, result.state
        ex = get_executor(args.executor)
        pids = ex.worker_pids() if hasattr(ex, "worker_pids") else []
        rows: list[dict[str, tuple[float, float, float]]] = []
        for _ in range(args.runs):
            backend = backend_pid()
            s0 = _snapshot(pids, backend)
            tl.on = True
            t0 = time.perf_counter()
            result = chain.run(executor=args.executor)
            wall = time.perf_counter() - t0
            tl.on = False
            s1 = _snapshot(pids, backend)
            assert result.ok, result.state
            row = {k: tuple((s1[k][i] - s0.get(k, (0, 0, 0))[i]) / TASKS for i in range(3))
                   for k in s1}
            row["wall"] = (wall * 1e6 / TASKS, 0.0, 0.0)
            rows.append(row)  # type: ignore[arg-type]
        load = os.getloadavg()[0]
        store = "PostgreSQL" if args.postgres else "SQLite"
        print(f"chain200 on {args.executor}, {store}, per task, median of {args.runs} "
              f"(load {load:.1f}):")
        print(f"  {'':28s} {'vol cs':>8s} {'invol cs':>8s} {'cpu us':>8s}")
        for key in sorted({k for r in rows for k in r}):
            if key == "wall":
                continue
            vals = [r.get(key, (0, 0, 0)) for r in rows]
            med = [statistics.median(v[i] for v in vals) for i in range(3)]
            if med == [0, 0, 0]:
                continue
            print(f"  {key:28s} {med[0]:8.2f} {med[1]:8.2f} {med[2] / 1e3:8.1f}")
        walls = [r["wall"][0] for r in rows]
        print(f"  wall us/task {statistics.median(walls):.1f} "
              f"(runs: {', '.join(f'{w:.0f}' for w in walls)})")
        if not args.no_timeline:
            tl.report()
    finally:
        if schema is not None:
            _drop_schema(args.postgres, schema)


if __name__ == "__main__":
    main()
