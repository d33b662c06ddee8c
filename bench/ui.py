"""The web UI on big runs, in headless Chromium (issue 14's speed acceptance).

    python bench/ui.py [--instances 10000] [--runs 1000] [--tasks 200] [--live 2000]
                       [--chromium /usr/bin/chromium]

1. A temporary project on SQLite: `big_map` (a map over --instances), `wide` (--tasks
   tasks) and `live_map` (a map over --live).
2. Runs `big_map` for real (inline executor); bulk-inserts --runs finished runs of `wide`
   with a state per task (the grid's data; the engine would take minutes to make them).
3. Serves `cadenza.api.create_app` with uvicorn in a thread and measures in Chromium, from
   the moment the page's API answer arrived (the Resource Timing `responseEnd` of that
   request) to the view drawn: the run's graph, Gantt and task list of the 10k-instance
   run, the mapped task's instances page, the grid of runs x tasks, and the grid's redraw
   per scroll step.
4. Live: triggers `live_map` over HTTP and records in the page when the mapped node turned
   success while it is driven (--driver server: by a real `cadenza server --scheduler`,
   whose scheduler child process drives it and whose page is watched; thread: in a thread
   of the measuring server's process; process: in another process); the delay after the
   commit (the summary row's ended_at) is "on screen after commit". The longest main-thread
   task during the live run says whether the page stayed responsive.
A printed table, not a timed test: the figures depend on the machine and its load (issue 14
targets: < 1 s for graph, Gantt and task list; < 1.5 s for the grid; < 500 ms on screen).
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIPELINES = '''
from cadenza import pipeline, task


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def work(x: int) -> int:
    return x + 1


@task
def total(values: list[int]) -> int:
    return sum(values)


@pipeline
def big_map(n: int = 10):
    total(work.expand(x=numbers(n)))


@pipeline
def live_map(n: int = 10):
    total(work.expand(x=numbers(n)))


@task
def step(i: int) -> int:
    return i


@pipeline
def wide():
    for i in range(TASKS):
        step(i)
'''


def serve(app: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def start_cli_server(root: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    """`cadenza server --scheduler` on the bench's project and store, on a free port."""
    import os

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CADENZA_HOME": str(root / "home"), "CADENZA_DATABASE_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "cadenza", "server", "--scheduler",
                             "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"cadenza server did not start: {proc.communicate()[1][-2000:]!r}")
        time.sleep(0.2)


def bulk_wide_runs(url: str, runs: int, tasks: list[str]) -> None:
    """`runs` finished runs of `wide`, one a minute, each task in a weighted random state."""
    from sqlalchemy import create_engine

    from cadenza.store.tables import runs_table, task_instances_table

    rng = random.Random(14)
    states = ["success"] * 80 + ["failed"] * 4 + ["upstream_failed"] * 6 + ["cached"] * 6 + \
        ["skipped"] * 4
    start = datetime.now(UTC) - timedelta(minutes=runs)
    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(runs):
            run_id = f"bench{i:08d}"
            at = start + timedelta(minutes=i)
            cells = [rng.choice(states) for _ in tasks]
            run_state = "failed" if "failed" in cells else "success"
            conn.execute(runs_table.insert(), [{
                "run_id": run_id, "pipeline": "wide", "state": run_state, "params": {},
                "created_at": at, "started_at": at, "ended_at": at + timedelta(seconds=30),
                "executor": "inline", "trigger": "manual", "source": "", "tags": [],
                "extra": {}}])
            conn.execute(task_instances_table.insert(), [{
                "run_id": run_id, "task_id": t, "map_index": -1, "state": s, "attempt": 1,
                "pool": "default", "reason": "", "queued_at": at, "started_at": at,
                "ended_at": at + timedelta(seconds=1)} for t, s in zip(tasks, cells, strict=True)])
    engine.dispose()


RENDERED_AFTER = """async ([urlPart, selector]) => {
    const deadline = performance.now() + 60000;
    while (!document.querySelector(selector)) {
        if (performance.now() > deadline) throw new Error('not drawn: ' + selector);
        await new Promise(r => requestAnimationFrame(r));
    }
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const drawn = performance.now();
    const hits = performance.getEntriesByType('resource').filter(e => e.name.includes(urlPart));
    const arrived = hits.length ? hits[hits.length - 1].responseEnd : NaN;
    return [drawn - arrived, arrived];
}"""

SCROLL_STEPS = """async () => {
    const el = document.querySelector('[data-testid=grid]');
    const times = [];
    for (let i = 1; i <= 60; i++) {
        const t0 = performance.now();
        el.scrollLeft = (el.scrollWidth - el.clientWidth) * (1 - i / 60);
        el.scrollTop = (el.scrollHeight - el.clientHeight) * (i / 60);
        el.dispatchEvent(new Event('scroll'));  // the grid redraws in its scroll handler
        times.push(performance.now() - t0);
        await new Promise(r => requestAnimationFrame(r));
    }
    times.sort((a, b) => a - b);
    return [times[Math.floor(times.length / 2)], times[times.length - 1]];
}"""

WATCH_LIVE = """() => {
    window.__seen = {};
    window.__longest = 0;
    window.__watching = Date.now();
    new PerformanceObserver(list => {
        for (const e of list.getEntries()) window.__longest = Math.max(window.__longest, e.duration);
    }).observe({ type: 'longtask', buffered: false });
    const record = () => {
        for (const n of document.querySelectorAll('[data-node]')) {
            const key = n.dataset.node + ':' + n.dataset.state;
            if (!(key in window.__seen)) window.__seen[key] = Date.now();
        }
    };
    new MutationObserver(record).observe(document.body, { subtree: true, attributes: true,
                                                           childList: true });
    record();
}"""


DRIVE = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from cadenza.api import create_app
from cadenza.core import settings as sm
from cadenza.core.ids import new_driver_id
from cadenza.engine.api import drive_run
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
s = sm.load_settings(Path({root!r}), environ={{"CADENZA_HOME": {root!r} + "/home",
                                              "CADENZA_DATABASE_URL": {url!r}}})
sm.set_settings(s)
plan = create_app(s).state.catalog.get().get("live_map")
store = open_store({url!r})
for run in scheduling_store(store).claim_queued(new_driver_id(), {{"live_map": None}}):
    drive_run(run, plan, executor="inline", settings=s)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--live", type=int, default=2000)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--driver", choices=["thread", "process", "server"], default="server",
                    help="who drives the live run: `server`, a real `cadenza server "
                    "--scheduler` (its scheduler child process drives it, the page watches "
                    "that server); `thread`, a thread of the measuring server's process (as "
                    "`server --scheduler` did before session 8); `process`, another process")
    args = ap.parse_args()

    import httpx
    from playwright.sync_api import sync_playwright

    from cadenza.api import create_app
    from cadenza.core import settings as settings_mod
    from cadenza.core.ids import new_driver_id
    from cadenza.engine.api import drive_run, run_pipeline
    from cadenza.store import open_store
    from cadenza.store.scheduling import scheduling_store

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pipelines").mkdir()
        (root / "pipelines" / "bench_ui.py").write_text(
            PIPELINES.replace("TASKS", str(args.tasks)), encoding="utf-8")
        (root / "cadenza.toml").write_text('pipelines = ["pipelines/"]\nexecutor = "inline"\n',
                                           encoding="utf-8")
        url = f"sqlite:///{root / 'ui.db'}"
        settings = settings_mod.load_settings(root, environ={
            "CADENZA_HOME": str(root / "home"), "CADENZA_DATABASE_URL": url})
        settings_mod.set_settings(settings)
        app = create_app(settings)
        catalog = app.state.catalog.get()

        t0 = time.perf_counter()
        big = run_pipeline(catalog.get("big_map"), {"n": args.instances}, executor="inline",
                           settings=settings).run_id
        print(f"big_map over {args.instances}: run in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        t0 = time.perf_counter()
        bulk_wide_runs(url, args.runs, catalog.get("wide").topological_ids())
        print(f"{args.runs} runs x {args.tasks} tasks loaded in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)

        base, server, thread = serve(app)
        store = open_store(url)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()

                def measure(what: str, path: str, url_part: str, selector: str,
                            target_ms: float) -> None:
                    page.goto(base + path)
                    ms, _ = page.evaluate(RENDERED_AFTER, [url_part, selector])
                    rows.append((what, f"{ms:.0f} ms", f"< {target_ms:.0f} ms"))

                n = args.instances
                measure(f"run of {n} instances: graph", f"/runs/{big}", f"/api/v1/runs/{big}",
                        '[data-node="work"][data-state="success"]', 1000)
                measure(f"run of {n} instances: Gantt", f"/runs/{big}/gantt",
                        f"/api/v1/runs/{big}", "[data-testid=gantt][data-rows]", 1000)
                measure(f"run of {n} instances: task list", f"/runs/{big}/tasks",
                        f"/api/v1/runs/{big}", 'tr[data-task="work"]', 1000)
                measure("mapped task's instances (first 200)", f"/runs/{big}/tasks/work",
                        "/instances", "[data-testid=instances] a", 1000)
                measure(f"grid {args.runs} runs x {args.tasks} tasks",
                        f"/pipelines/wide/grid?runs={args.runs}", "/grid",
                        f'[data-testid=grid][data-runs="{args.runs}"]', 1500)
                median, worst = page.evaluate(SCROLL_STEPS)
                rows.append(("grid: redraw per scroll step (median / worst)",
                             f"{median:.1f} / {worst:.1f} ms", "< 16 ms"))

                # Live: a run of args.live instances watched while a driver runs it.
                live_base, served = base, None
                if args.driver == "server":
                    served, live_base = start_cli_server(root, url)
                with httpx.Client(base_url=live_base) as client:
                    run_id = client.post("/api/v1/pipelines/live_map/runs",
                                         json={"params": {"n": args.live}}).json()["run_id"]
                page.goto(f"{live_base}/runs/{run_id}")
                page.wait_for_selector('[data-node="work"]')
                page.evaluate(WATCH_LIVE)
                if args.driver == "server":
                    pass  # its scheduler child claims the queued run and drives it
                elif args.driver == "process":
                    subprocess.run([sys.executable, "-c", DRIVE.format(
                        repo=str(Path(__file__).resolve().parents[1]), root=str(root), url=url)],
                        check=True)
                else:
                    plan = catalog.get("live_map")
                    claimed = scheduling_store(store).claim_queued(
                        new_driver_id(), {"live_map": None})
                    driver = threading.Thread(target=lambda: [drive_run(
                        r, plan, executor="inline", settings=settings) for r in claimed])
                    driver.start()
                    driver.join()
                page.wait_for_function(
                    "() => document.querySelector('.badge')?.textContent === 'success'",
                    timeout=60_000)
                seen = page.evaluate("window.__seen")
                longest = page.evaluate("window.__longest")
                work = next(t for t in store.get_task_instances(run_id)
                            if t.task_id == "work" and t.map_index == -1)
                assert work.ended_at is not None
                shown = seen.get("work:success")
                delay = shown - work.ended_at.timestamp() * 1000 if shown else float("nan")
                ahead = work.ended_at.timestamp() * 1000 - page.evaluate("window.__watching")
                if ahead <= 0:  # the page started watching after the end: no measurement
                    delay = float("nan")
                print(f"live run: the page watched {ahead:.0f} ms before the mapped task "
                      "ended", file=sys.stderr)
                rows.append((f"live run of {args.live} ({args.driver}): node green after commit",
                             f"{delay:.0f} ms", "< 500 ms"))
                rows.append((f"live run of {args.live} ({args.driver}): longest main-thread task",
                             f"{longest:.0f} ms", "< 200 ms (responsive)"))
                if served is not None:
                    served.send_signal(signal.SIGTERM)
                    served.communicate(timeout=60)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            store.dispose()
            settings_mod.set_settings(None)

    width = max(len(r[0]) for r in rows)
    print(f"{'view':<{width}}  {'measured':>18}  target")
    for what, got, target in rows:
        print(f"{what:<{width}}  {got:>18}  {target}")


if __name__ == "__main__":
    main()
