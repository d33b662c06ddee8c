"""The REST API under load on a big PostgreSQL store (issue 13's load acceptance).

    python bench/api.py [--runs 100000] [--tasks-per-run 10] [--clients 200]
                        [--duration 30] [--interval 1] [--triggers 1000] [--workers 1]
                        [--client-procs 2] [--client raw|httpx] [--loop L] [--http H]
                        [--cache-ttl S] [--keep] [--database URL] [--postgres URL]

1. Creates a database `cadenza_bench_<random>` on the server of --postgres (default
   postgresql+psycopg://postgres@127.0.0.1:5432/test) and bulk-loads it with COPY:
   --runs runs over 20 pipelines (85% success, 10% failed, 3% running, 2% queued, one a
   minute, half with a logical date) and --tasks-per-run task instances each. With
   --database URL (a database an earlier --keep left), uses that one as it is.
2. Starts `uvicorn cadenza.api.app:create_app --factory --workers N` as another process, in
   a temporary project whose pipelines/ holds the `bench_trigger` pipeline.
3. --clients concurrent clients poll for --duration seconds, each once per --interval (a UI
   polling; 0 = a closed loop, which measures throughput: its latency is then queueing,
   clients / throughput by Little's law): the runs list (page 1; one pipeline; one state;
   page 2 through `next_cursor`) and a run's detail (a random run with its task
   instances). Prints p50/p95/p99 per request kind, the errors, the throughput, and the
   CPU the server and the clients used a request. The clients are `RawClient` (a lean
   keep-alive HTTP/1.1 client, ~0.25 CPU ms a request) unless --client httpx (~5 CPU ms a
   request: on a 2-core machine the load generator then starves the server it measures).
4. --triggers runs triggered over HTTP at once (`POST /api/v1/pipelines/bench_trigger/runs`):
   prints how many runs the store holds for that pipeline afterwards (must equal it).
The database is dropped at the end unless --keep or --database. A printed table, not a
timed test: the numbers depend on the machine and what else runs on it (issue 13 targets:
p95 < 100 ms, p99 < 250 ms, 0 errors on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PIPELINES = [f"bench_p{i:02d}" for i in range(20)]
TRIGGER_PIPELINE = '''
from cadenza import pipeline, task


@task
def work(n: int) -> int:
    return n * 2


@pipeline
def bench_trigger(n: int = 1):
    work(n)
'''


def _connect(url: str, database: str | None = None) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                           user=u.username or "postgres", password=u.password or None,
                           dbname=database or u.database or "postgres", autocommit=True)


def create_database(url: str) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"cadenza_bench_{secrets.token_hex(4)}"
    with _connect(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop_database(url: str, name: str) -> None:
    with _connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load(url: str, database: str, runs: int, tasks_per_run: int) -> list[str]:
    """Create the schema (open_store) and COPY the runs and task instances in. Returns the
    run ids."""
    from cadenza.store import open_store

    store = open_store(url)
    store.dispose()
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids: list[str] = []
    run_cols = ("run_id", "pipeline", "state", "params", "created_at", "started_at",
                "ended_at", "executor", "trigger", "logical_date", "source", "error",
                "tags", "extra")
    ti_cols = ("run_id", "task_id", "map_index", "state", "attempt", "pool", "queued_at",
               "started_at", "ended_at", "worker", "reason")
    tasks = [f"t{i}" for i in range(tasks_per_run)]
    extra = json.dumps({"task_order": tasks})
    started = time.perf_counter()
    with _connect(url, database) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY runs ({', '.join(run_cols)}) FROM STDIN") as copy:
            for i in range(runs):
                run_id = f"r-bench-{i:07d}"
                ids.append(run_id)
                roll = rng.random()
                state = ("success" if roll < 0.85 else "failed" if roll < 0.95
                         else "running" if roll < 0.98 else "queued")
                created = base + timedelta(minutes=i)
                start = None if state == "queued" else created + timedelta(seconds=1)
                end = start + timedelta(seconds=30) if state in ("success", "failed") and start \
                    else None
                logical = created.replace(second=0) if i % 2 == 0 else None
                copy.write_row((run_id, PIPELINES[i % len(PIPELINES)], state,
                                json.dumps({"n": i % 100}), created, start, end, "processes",
                                "schedule" if logical else "manual", logical,
                                f"pipelines/bench.py:{PIPELINES[i % len(PIPELINES)]}",
                                "task 't3' failed" if state == "failed" else None,
                                "[]", extra))
        with cur.copy(f"COPY task_instances ({', '.join(ti_cols)}) FROM STDIN") as copy:
            for i, run_id in enumerate(ids):
                created = base + timedelta(minutes=i)
                for j, task_id in enumerate(tasks):
                    t0 = created + timedelta(seconds=1 + 3 * j)
                    copy.write_row((run_id, task_id, -1, "success", 1, "default", t0, t0,
                                    t0 + timedelta(seconds=3), "w-1", ""))
        cur.execute("ANALYZE runs")
        cur.execute("ANALYZE task_instances")
    print(f"loaded {runs:,} runs and {runs * tasks_per_run:,} task instances with COPY in "
          f"{time.perf_counter() - started:.1f} s")
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, workers: int, cache_ttl_s: float | None = None, *,
                 loop: str = "auto", http: str = "auto"
                 ) -> tuple[subprocess.Popen[bytes], str, Path]:
    project = Path(tempfile.mkdtemp(prefix="cadenza-bench-api-"))
    (project / "pipelines").mkdir()
    (project / "pipelines" / "bench_trigger.py").write_text(TRIGGER_PIPELINE)
    (project / "cadenza.toml").write_text(
        'pipelines = ["pipelines/"]\n'
        + (f"api_cache_ttl_s = {cache_ttl_s}\n" if cache_ttl_s is not None else ""))
    port = free_port()
    env = {**os.environ, "CADENZA_DATABASE_URL": url, "CADENZA_HOME": str(project / ".cadenza")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cadenza.api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--loop", loop, "--http", http, "--log-level", "warning", "--no-access-log"],
        cwd=project, env=env)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"the server did not start on {base}")
        time.sleep(0.2)
    return proc, base, project


def server_cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) the server and its worker processes have used so far."""
    import psutil

    total = 0.0
    root = psutil.Process(proc.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class RawClient:
    """A lean HTTP/1.1 keep-alive client on asyncio streams (GET only, Content-Length
    bodies): a few microseconds of Python a request where httpx spends ~0.5 ms, so the load
    generator does not starve a server on the same cores (see --client)."""

    def __init__(self, base: str) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(base)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self._head = f"Host: {u.netloc}\r\nAccept: application/json\r\n\r\n".encode()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        from urllib.parse import urlencode

        target = f"{path}?{urlencode(params)}" if params else path
        for attempt in (0, 1):  # a kept connection the server closed: reconnect once
            if self._conn is None:
                self._conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._conn
            try:
                writer.write(b"GET " + target.encode() + b" HTTP/1.1\r\n" + self._head)
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
                continue
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"transfer-encoding":
                    raise ConnectionError("chunked answers are not supported by RawClient")
            body = await reader.readexactly(length) if length else b""
            return status, body
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


async def poll(base: str, ids: list[str], clients: int, duration_s: float, *, seed: int = 0,
               interval_s: float = 1.0, kind_of_client: str = "raw"
               ) -> tuple[dict[str, list[float]], dict[str, int], dict[str, str]]:
    import httpx

    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    first_error: dict[str, str] = {}
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as shared:
        async def client_loop(n: int) -> None:
            rng = random.Random(seed + n)
            raw = RawClient(base) if kind_of_client == "raw" else None

            async def timed(kind: str, path: str, params: dict[str, Any] | None = None
                            ) -> Any:
                t0 = time.perf_counter()
                status, body = 0, b""
                try:
                    if raw is not None:
                        status, body = await asyncio.wait_for(raw.get(path, params), 30)
                    else:
                        r = await shared.get(path, params=params)
                        status, body = r.status_code, r.content
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError,
                        TimeoutError) as exc:
                    first_error.setdefault(kind, f"{type(exc).__name__}: {exc}")
                    if raw is not None:
                        await raw.close()
                latencies[kind].append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    errors[kind] += 1
                    if status:
                        first_error.setdefault(kind, f"{status}: {body[:200]!r}")
                    return None
                return body

            # A UI polls: each client asks for a list and a detail once per interval
            # (starts staggered over the first interval). 0: as fast as answers come.
            i = 0
            next_at = time.monotonic() + rng.random() * interval_s
            try:
                while time.monotonic() < deadline:
                    if interval_s > 0:
                        delay = next_at - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)  # pacing the load, not a wait
                        next_at = max(next_at + interval_s, time.monotonic())
                    variant = i % 4
                    if variant == 0:
                        await timed("runs list, page 1", "/api/v1/runs")
                    elif variant == 1:
                        await timed("runs list, one pipeline", "/api/v1/runs",
                                    {"pipeline": rng.choice(PIPELINES)})
                    elif variant == 2:
                        await timed("runs list, one state", "/api/v1/runs",
                                    {"state": rng.choice(["failed", "running"])})
                    else:
                        body = await timed("runs list, page 1", "/api/v1/runs",
                                           {"pipeline": rng.choice(PIPELINES)})
                        page = json.loads(body) if body else None
                        if page and page.get("next_cursor"):
                            await timed("runs list, page 2", "/api/v1/runs",
                                        {"cursor": page["next_cursor"],
                                         "pipeline": page["items"][0]["pipeline"]})
                    await timed("run detail", f"/api/v1/runs/{rng.choice(ids)}")
                    i += 1
            finally:
                if raw is not None:
                    await raw.close()

        await asyncio.gather(*(client_loop(n) for n in range(clients)))
    return latencies, errors, first_error


def _poll_process(base: str, ids: list[str], clients: int, duration_s: float, seed: int,
                  interval_s: float, kind_of_client: str
                  ) -> tuple[dict[str, list[float]], dict[str, int], dict[str, str], float]:
    """One client process; also returns the CPU seconds it used (the load generator's own
    cost, which shares the cores with the server when both run on one machine)."""
    random.seed(seed)
    run: Any = asyncio.run
    if kind_of_client == "raw":
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
    cpu0 = time.process_time()
    lat, err, first = run(poll(base, ids, clients, duration_s, seed=seed,
                               interval_s=interval_s, kind_of_client=kind_of_client))
    return dict(lat), dict(err), first, time.process_time() - cpu0


def poll_in_processes(base: str, ids: list[str], clients: int, duration_s: float, procs: int,
                      interval_s: float, kind_of_client: str = "raw"
                      ) -> tuple[dict[str, list[float]], dict[str, int], dict[str, str], float]:
    import concurrent.futures as cf
    import multiprocessing

    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    first: dict[str, str] = {}
    with cf.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [ex.submit(_poll_process, base, ids, n, duration_s, i * 1000, interval_s,
                             kind_of_client)
                   for i, n in enumerate(shares)]
        client_cpu = 0.0
        for f in futures:
            lat, err, fe, cpu = f.result()
            client_cpu += cpu
            for k, v in lat.items():
                latencies[k].extend(v)
            for k, n in err.items():
                errors[k] += n
            for k, text in fe.items():
                first.setdefault(k, text)
    return latencies, errors, first, client_cpu


async def trigger_many(base: str, count: int) -> tuple[int, dict[int, int], float]:
    import httpx

    statuses: dict[int, int] = defaultdict(int)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def one(i: int) -> None:
            try:
                r = await client.post("/api/v1/pipelines/bench_trigger/runs",
                                      json={"params": {"n": i}})
                statuses[r.status_code] += 1
            except httpx.HTTPError:
                statuses[-1] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        took = time.perf_counter() - t0
    return statuses.get(201, 0), dict(statuses), took


def count_runs(url: str, pipeline: str) -> int:
    with _connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM runs WHERE pipeline = %s", (pipeline,)).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", default=os.environ.get("CADENZA_TEST_POSTGRES_URL", PG_DEFAULT))
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--tasks-per-run", type=int, default=10)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0,
                    help="each client polls (a runs list and a run detail) once per this many "
                    "seconds; 0 = closed loop, as fast as answers come (a throughput test)")
    ap.add_argument("--triggers", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--client-procs", type=int, default=2,
                    help="processes the clients are spread over (one Python process cannot "
                    "drive 200 HTTP clients without becoming the bottleneck itself)")
    ap.add_argument("--cache-ttl", type=float, default=None,
                    help="the server's response cache TTL in seconds (api_cache_ttl_s; "
                    "default: the server's, 1 s; 0: off)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="the load generator: raw (RawClient on uvloop when installed: a few "
                    "us of CPU a request) or httpx (~0.5 ms a request: on a 2-core machine "
                    "the clients then take much of the CPU the server needs)")
    ap.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                    help="uvicorn's --loop (auto: uvloop when installed)")
    ap.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                    help="uvicorn's --http (auto: httptools when installed)")
    ap.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    ap.add_argument("--database", default=None, metavar="URL",
                    help="use this already loaded database (one --keep printed) instead of "
                    "creating and loading one; it is kept")
    args = ap.parse_args()

    if args.database:
        url, database = args.database, None
        with _connect(url) as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE 'r-bench-%'").fetchall()]
        print(f"database {url}: {len(ids):,} bench runs")
    else:
        url, database = create_database(args.postgres)
        print(f"database {database}")
    proc = None
    try:
        if database is not None:
            ids = load(url, database, args.runs, args.tasks_per_run)
        proc, base, _ = start_server(url, args.workers, args.cache_ttl,
                                     loop=args.loop, http=args.http)
        print(f"server {base} (uvicorn --loop {args.loop} --http {args.http}, "
              f"{args.workers} worker(s)); {args.clients} {args.client} clients "
              f"in {args.client_procs} process(es) for {args.duration:g} s, polling "
              + (f"every {args.interval:g} s" if args.interval > 0 else "in a closed loop")
              + f"; load average before: {os.getloadavg()[0]:.2f}")
        cpu_before = server_cpu_s(proc)
        latencies, errors, first, client_cpu = poll_in_processes(
            base, ids, args.clients, args.duration, args.client_procs, args.interval,
            args.client)
        print()
        print(f"{'request':<26}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for kind in sorted(latencies):
            v = latencies[kind]
            print(f"{kind:<26}{len(v):>8}{percentile(v, 50):>9.1f}{percentile(v, 95):>9.1f}"
                  f"{percentile(v, 99):>9.1f}{errors.get(kind, 0):>8}")
        every = [x for v in latencies.values() for x in v]
        print(f"{'all':<26}{len(every):>8}{percentile(every, 50):>9.1f}"
              f"{percentile(every, 95):>9.1f}{percentile(every, 99):>9.1f}"
              f"{sum(errors.values()):>8}")
        cpu = server_cpu_s(proc) - cpu_before
        print(f"throughput {len(every) / args.duration:.0f} requests/s; the server used "
              f"{cpu:.1f} CPU s: {cpu / max(len(every), 1) * 1000:.2f} CPU ms a request "
              f"(a core to itself would answer ~{len(every) / cpu if cpu else 0:.0f}/s); "
              f"the clients used {client_cpu:.1f} CPU s: "
              f"{client_cpu / max(len(every), 1) * 1000:.2f} CPU ms a request; load average "
              f"after: {os.getloadavg()[0]:.2f}")
        for kind, text in first.items():
            print(f"  first error of {kind}: {text}")
        if args.triggers:
            before = count_runs(url, "bench_trigger")
            created, statuses, took = asyncio.run(trigger_many(base, args.triggers))
            after = count_runs(url, "bench_trigger")
            print()
            print(f"{args.triggers} triggers at once: {created} answered 201 in {took:.1f} s "
                  f"(statuses {statuses}); runs of bench_trigger in the store: "
                  f"{after - before} {'(exact)' if after - before == args.triggers else '(WRONG)'}")
        print(f"median of all requests: {statistics.median(every):.1f} ms" if every else "")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if args.keep or database is None:
            print(f"kept: {url}")
        else:
            drop_database(args.postgres, database)


if __name__ == "__main__":
    main()
