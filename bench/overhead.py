"""Per-task orchestration overhead of Cadenza, beside bare Python doing the same work.

    python bench/overhead.py [--repeat 5] [--only inline,threads] [--skip-scale]
                             [--workloads chain200,wide500] [--skip-fresh] [--postgres [URL]]

Workloads (each on inline, threads and processes, median of N after one warm-up run):
  chain200  200 tasks, each takes the previous output
  wide500   one source, 500 independent tasks, one fan-in
  map1000   expand over a runtime list of 1,000, then reduce
Baseline: the same functions called directly (inline), or through concurrent.futures
(threads: ThreadPoolExecutor, processes: ProcessPoolExecutor, pools created before timing,
as Cadenza's are persistent). overhead ms/task = (cadenza - baseline) / tasks.
Also: map10k on processes (no cap on map length) with the driver's peak RSS, the time of
`import cadenza`, and a one-task pipeline run as a whole fresh process.
Every run writes to a durable SQLite store in a temporary CADENZA_HOME, or with
`--postgres [URL]` to PostgreSQL (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
in a fresh schema dropped at the end. The fresh-process lines always use SQLite.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("CADENZA_HOME", tempfile.mkdtemp(prefix="cadenza-bench-"))
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_schema(url: str) -> tuple[str, str]:
    """Create a fresh schema in `url`'s database: (URL whose search_path is it, schema)."""
    import secrets
    from urllib.parse import quote

    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username,
                         password=u.password or None, dbname=u.database, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    return f"{url}?options={quote(f'-csearch_path={schema}')}", schema


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username,
                         password=u.password or None, dbname=u.database, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

from workloads import inc, source, total

from cadenza import pipeline, task

inc_t = task(inc)
source_t = task(source)
total_t = task(total)


@pipeline
def chain200():
    x = source_t(1)
    for _ in range(199):
        x = inc_t(x)


@pipeline
def wide500():
    s = source_t(1)
    outs = [inc_t.with_options(name=f"inc_{i}")(s) for i in range(500)]
    total_t(outs)


@pipeline
def map1000(n: int = 1000):
    xs = source_t(n)
    total_t(inc_t.expand(x=xs))


@pipeline
def map10k(n: int = 10_000):
    xs = source_t(n)
    total_t(inc_t.expand(x=xs))


WORKLOADS = {"chain200": (chain200, 200), "wide500": (wide500, 502), "map1000": (map1000, 1002)}


def baseline(workload: str, executor: str, pool: cf.Executor | None) -> float:
    t0 = time.perf_counter()
    if workload == "chain200":
        x = source(1)
        for _ in range(199):
            x = inc(x)
    elif workload == "wide500":
        s = source(1)
        if pool is None:
            outs = [inc(s) for _ in range(500)]
        else:
            outs = list(pool.map(inc, [s] * 500))
        total(outs)
    else:
        xs = source(1000)
        outs = [inc(x) for x in xs] if pool is None else list(pool.map(inc, xs))
        total(outs)
    return time.perf_counter() - t0


def timed_run(pipe, executor: str, **params) -> float:
    t0 = time.perf_counter()
    result = pipe.run(executor=executor, **params)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"{pipe.name} on {executor} ended {result.state}: {result.failed}")
    return elapsed


def median_of(fn, repeat: int) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(repeat))


def fresh_process_times(repeat: int) -> tuple[float, float]:
    """(import cadenza, one-task pipeline as a whole process), medians in seconds."""
    work = Path(tempfile.mkdtemp(prefix="cadenza-quick-"))
    quick = work / "quick.py"
    quick.write_text(textwrap.dedent("""
        from cadenza import pipeline, task

        @task
        def hello(name: str) -> str:
            return f"hello {name}"

        @pipeline
        def quick(name: str = "world"):
            hello(name)

        if __name__ == "__main__":
            assert quick.run().ok
    """))
    # As an installed package starts: from cached bytecode. With PYTHONDONTWRITEBYTECODE set
    # (as in some CI and container images), every run would compile Cadenza's ~50 modules from
    # source again (+13% of the driver's instructions, callgrind): the warm-up writes the
    # .pyc files into a private folder instead, which leaves the source tree alone.
    cached = {"PYTHONPYCACHEPREFIX": str(work / "pycache")}
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "CADENZA_DATABASE_URL")}
    imports, runs = [], []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cadenza"], check=True,
                       env={**base, **cached})
        t1 = time.perf_counter()
        env = {**base, **cached, "CADENZA_HOME": str(work / f"home{i}")}
        subprocess.run([sys.executable, str(quick)], check=True, cwd=work, env=env)
        t2 = time.perf_counter()
        if i:  # the first is a warm-up (cold disk cache, .pyc writing)
            imports.append(t1 - t0)
            runs.append(t2 - t1)
    return statistics.median(imports), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="inline,threads,processes")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated subset of " + ", ".join(WORKLOADS))
    parser.add_argument("--skip-fresh", action="store_true",
                        help="skip the import and fresh-process timings")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--postgres", nargs="?", const=PG_DEFAULT, default=None, metavar="URL",
                        help="write to PostgreSQL (a fresh schema) instead of SQLite")
    args = parser.parse_args()
    schema = None
    if args.postgres:
        os.environ["CADENZA_DATABASE_URL"], schema = _postgres_schema(args.postgres)
    try:
        _measure(args)
    finally:
        if schema:  # idle pooled connections hold no locks: the drop does not wait on them
            _drop_schema(args.postgres, schema)


def _measure(args: argparse.Namespace) -> None:
    executors = args.only.split(",")
    rows = []
    for executor in executors:
        pool: cf.Executor | None = None
        if executor == "threads":
            pool = cf.ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4))
        elif executor == "processes":
            pool = cf.ProcessPoolExecutor(max_workers=os.cpu_count())
        if pool is not None:
            list(pool.map(inc, range(100)))  # start the workers before timing
        for name, (pipe, tasks) in WORKLOADS.items():
            if name not in args.workloads.split(","):
                continue
            ours = median_of(partial(timed_run, pipe, executor), args.repeat)
            base = median_of(partial(baseline, name, executor, pool), args.repeat)
            rows.append({
                "workload": name, "executor": executor, "tasks": tasks,
                "cadenza_s": ours, "baseline_s": base,
                "overhead_ms_per_task": (ours - base) * 1000 / tasks,
            })
            print(f"  {name:<9} {executor:<10} {ours:8.3f} s  baseline {base:7.3f} s  "
                  f"{rows[-1]['overhead_ms_per_task']:7.3f} ms/task", file=sys.stderr)
        if pool is not None:
            pool.shutdown()
    extra = {}
    if not args.skip_scale and "processes" in executors:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = timed_run(map10k, "processes")
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        extra["map10k_processes_s"] = t
        extra["driver_peak_rss_mib"] = rss1 / 1024
        extra["driver_rss_growth_mib"] = (rss1 - rss0) / 1024
    if not args.skip_fresh:
        extra["import_cadenza_s"], extra["one_task_process_s"] = fresh_process_times(args.repeat)

    if args.json:
        print(json.dumps({"rows": rows, **extra}, indent=2))
        return
    print()
    print(f"{'workload':<10}{'executor':<11}{'tasks':>6}{'cadenza s':>11}{'baseline s':>12}"
          f"{'ms/task':>10}")
    for r in rows:
        print(f"{r['workload']:<10}{r['executor']:<11}{r['tasks']:>6}{r['cadenza_s']:>11.3f}"
              f"{r['baseline_s']:>12.3f}{r['overhead_ms_per_task']:>10.3f}")
    print()
    if "map10k_processes_s" in extra:
        print(f"map10k on processes: {extra['map10k_processes_s']:.2f} s, driver peak RSS "
              f"{extra['driver_peak_rss_mib']:.0f} MiB (+{extra['driver_rss_growth_mib']:.0f} MiB)")
    if "import_cadenza_s" in extra:
        print(f"python -c 'import cadenza': {extra['import_cadenza_s'] * 1000:.0f} ms (median)")
        print(f"one-task pipeline as a fresh process: {extra['one_task_process_s'] * 1000:.0f} "
              "ms (median)")


if __name__ == "__main__":
    main()
