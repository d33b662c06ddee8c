"""The API's cost per request as counts, meaningful on a loaded machine (no wall clock):
Python function calls (cProfile) and CPU time of this process per request, for the polled
endpoints, through an in-process ASGI client (httpx.ASGITransport: the app, its
dependencies, serialisation; not uvicorn's HTTP parsing).

    python bench/api_counts.py [--runs 5000] [--tasks-per-run 10] [--requests 200]
                               [--postgres URL] [--no-cache] [--profile KIND]

Loads a fresh PostgreSQL database as bench/api.py does (smaller: the per-request work
does not depend on the table's size, the indexes see to that) and asks each kind of
request --requests times, different runs and pipelines each time (as 200 polling
clients would), then each again at once (what a second client asking the same thing in
the same second costs: a response-cache hit when the cache is on). `--profile KIND`
prints cProfile's top functions for that kind.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api import PG_DEFAULT, PIPELINES, create_database, drop_database, load


def _kinds(ids: list[str], rng: random.Random) -> dict[str, Callable[[], tuple[str, dict[str, Any]]]]:
    return {
        "runs list, page 1": lambda: ("/api/v1/runs", {"limit": rng.choice([50, 49])}),
        "runs list, one pipeline": lambda: ("/api/v1/runs", {"pipeline": rng.choice(PIPELINES)}),
        "runs list, one state": lambda: ("/api/v1/runs",
                                         {"state": rng.choice(["failed", "running"]),
                                          "limit": rng.randint(40, 50)}),
        "pipeline's runs": lambda: (f"/api/v1/pipelines/{PIPELINES[0]}/runs",
                                    {"limit": rng.randint(1, 50)}),
        "run detail": lambda: (f"/api/v1/runs/{rng.choice(ids)}", {}),
    }


_counting = False
_count = 0


def _tracer(frame: Any, event: str, arg: Any) -> None:
    global _count
    if _counting and (event == "call" or event == "c_call"):
        _count += 1


async def measure(app: Any, ids: list[str], requests: int, *, count: bool
                  ) -> dict[str, list[float]]:
    """Per kind: [miss, hit] CPU seconds per request, or function calls per request with
    `count` (every thread: the tracer is installed before this loop's threadpool starts)."""
    global _counting, _count
    import httpx

    rng = random.Random(3)
    cache = getattr(app.state, "response_cache", None)
    out: dict[str, list[float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for kind, make in _kinds(ids, rng).items():  # warm up: catalog, statements, pool
            for _ in range(5):
                path, params = make()
                r = await client.get(path, params=params)
                assert r.status_code == 200, (kind, r.status_code, r.text[:300])
        for kind, make in _kinds(ids, rng).items():
            asks = [make() for _ in range(requests)]

            async def ask(clear: bool, asks: list[Any] = asks, kind: str = kind) -> None:
                global _counting
                for path, params in asks:
                    # Auth off: the authenticator re-counts users once a second, on a miss.
                    # Counting slows requests past that; keep it fresh outside the count.
                    counting, _counting = _counting, False
                    is_configured = getattr(app.state.authenticate, "is_configured", None)
                    if is_configured is not None:
                        is_configured()
                    _counting = counting
                    if clear and cache is not None:
                        cache.clear()
                    r = await client.get(path, params=params)
                    assert r.status_code == 200
                    _sizes[kind] = len(r.content)

            row: list[float] = []
            for hit in (False, True):
                if hit:
                    if cache is not None:
                        cache.clear()
                    await ask(clear=False)  # fills the cache
                if count:
                    _count, _counting = 0, True
                    await ask(clear=not hit)
                    _counting = False
                    row.append(_count / requests)
                else:
                    cpu0 = time.process_time()
                    await ask(clear=not hit)
                    row.append((time.process_time() - cpu0) / requests)
            out[kind] = row
    return out


_sizes: dict[str, int] = {}


def report(app: Any, ids: list[str], requests: int, profile_kind: str | None) -> None:
    cpu = asyncio.run(measure(app, ids, requests, count=False))
    threading.setprofile(_tracer)
    sys.setprofile(_tracer)
    try:
        calls = asyncio.run(measure(app, ids, requests, count=True))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    print(f"{'request':<26}{'calls/req':>11}{'CPU us/req':>12}{'hit: calls':>12}"
          f"{'CPU us':>9}{'bytes':>9}")
    for kind in cpu:
        print(f"{kind:<26}{calls[kind][0]:>11,.0f}{cpu[kind][0] * 1e6:>12,.0f}"
              f"{calls[kind][1]:>12,.0f}{cpu[kind][1] * 1e6:>9,.0f}{_sizes[kind]:>9,}")
    if profile_kind:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(measure(app, ids, requests, count=False))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", default=os.environ.get("CADENZA_TEST_POSTGRES_URL", PG_DEFAULT))
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--tasks-per-run", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--no-cache", action="store_true", help="response cache off (TTL 0)")
    ap.add_argument("--profile", default=None, help="print cProfile's top functions of KIND")
    args = ap.parse_args()

    url, database = create_database(args.postgres)
    try:
        ids = load(url, database, args.runs, args.tasks_per_run)
        project = Path(tempfile.mkdtemp(prefix="cadenza-bench-counts-"))
        (project / "pipelines").mkdir()
        from api import TRIGGER_PIPELINE

        # bench_p00 as a pipeline of the project: its runs are in the loaded store.
        (project / "pipelines" / "bench_p00.py").write_text(
            TRIGGER_PIPELINE.replace("bench_trigger", PIPELINES[0]))
        (project / "cadenza.toml").write_text('pipelines = ["pipelines/"]\n')
        from cadenza.api import create_app
        from cadenza.core.settings import load_settings

        settings = load_settings(project, environ={"CADENZA_DATABASE_URL": url,
                                                   "CADENZA_HOME": str(project / ".home")})
        # Misses are made by emptying the cache before each request; a long TTL keeps the
        # hits hits while counting slows everything down.
        kwargs: dict[str, Any] = {"cache_ttl_s": 0.0 if args.no_cache else 3600.0}
        try:
            app = create_app(settings, **kwargs)
        except TypeError:  # an app without a response cache
            app = create_app(settings)
        report(app, ids, args.requests, args.profile)
        app.state.store.dispose()
    finally:
        drop_database(args.postgres, database)


if __name__ == "__main__":
    main()
