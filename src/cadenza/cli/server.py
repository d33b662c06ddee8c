"""`cadenza server [PATHS...] [--host H] [--port P] [--scheduler] [--workers N]`: SPEC §6.

What belongs here: composing the API app (`api.create_app`) with uvicorn and, with
`--scheduler`, a `cadenza scheduler` child process the server supervises
(`cli/scheduler_child.py`: started with the server, restarted if it dies, stopped with it):
one command for a whole local deployment. The child drives the runs outside the server's
process, so run drivers never hold the GIL the live event feeds need. Its Prometheus
metrics reach the app's `/metrics` through a collector that scrapes the child's loopback
port, and the scheduler's time rules (`triggers.cron.next_run_at`) give the pipelines'
next run (the api never imports triggers). What does not: routes (`api/`), what a
scheduler tick does.

Binding: loopback by default. Any other address needs auth configured (a user exists, or
settings force it; `api.auth.check_bind`): without it every caller would be an anonymous
admin, so the command refuses to start and says how to create a user and a token (exit 2,
before anything listens).

Stopping, by case:
  1. SIGINT (Ctrl-C) or SIGTERM -> live event streams end, uvicorn stops accepting and
     finishes the requests in flight (at most GRACEFUL_S), the scheduler child gets one
     SIGTERM and stops as `cadenza scheduler` does (runs being driven are left to their
     leases; a scheduler resumes them; it prints its own line). Exit 0 with one line.
  2. a second SIGINT while stopping -> uvicorn stops at once.

`--workers N` (N > 1) serves the app from N uvicorn worker processes (each its own store
connections, live feeds and metrics); the scheduler, if asked for, is one child of the
parent, and every worker's `/metrics` includes its metrics.

Exit codes: 0 stopped cleanly, 2 a usage or configuration error (a refused bind, a port in
use, no pipelines for --scheduler; one line naming the fix).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import escape, note, out

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cadenza.cli.scheduler_child import SchedulerChild
    from cadenza.core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
# How long uvicorn waits for requests in flight when stopping (live streams end at once).
GRACEFUL_S = 10
# Worker processes (--workers > 1) rebuild the app from these.
_PATHS_ENV = "CADENZA_SERVER_PATHS"


def _paths(targets: list[str]) -> list[Path]:
    """PATHS as given (files or folders); a clear error for anything else."""
    from cadenza.core.errors import UsageError

    paths = []
    for target in targets:
        path = Path(target)
        if not path.exists():
            raise UsageError(
                f"no such file or folder: {target}",
                hint="give pipeline files or folders (cadenza server pipelines/), or none "
                "to serve the project's (cadenza.toml's `pipelines`)")
        paths.append(path.resolve())
    return paths


def _collectors(scheduler_metrics_url: str | None) -> list[Any]:
    """With a scheduler child: this process's own metrics (prometheus_client's default
    registry: process and platform) and the child's, scraped when /metrics is."""
    if not scheduler_metrics_url:
        return []
    from prometheus_client import REGISTRY

    from cadenza.cli.scheduler_child import ChildMetrics

    return [REGISTRY, ChildMetrics(scheduler_metrics_url)]


def build_app(settings: Settings, paths: list[Path] | None, *,
              scheduler_metrics_url: str | None = None) -> FastAPI:
    """The app `cadenza server` serves (also in each worker process)."""
    from cadenza.api.app import create_app
    from cadenza.triggers.cron import next_run_at

    return create_app(settings, paths=paths or None, next_run_at=next_run_at,
                      metrics_collectors=_collectors(scheduler_metrics_url))


def worker_app() -> FastAPI:
    """uvicorn's app factory in `--workers N` processes (settings from the environment)."""
    from cadenza.cli.scheduler_child import METRICS_URL_ENV
    from cadenza.core.settings import get_settings

    raw = os.environ.get(_PATHS_ENV, "")
    paths = [Path(p) for p in raw.split(os.pathsep) if p]
    return build_app(get_settings(), paths,
                     scheduler_metrics_url=os.environ.get(METRICS_URL_ENV) or None)


def _serve_one(app: FastAPI, host: str, port: int, on_stop: list[Any]) -> None:
    """uvicorn in this process until SIGINT/SIGTERM; `on_stop` runs at the first signal."""
    import asyncio
    import signal

    import uvicorn

    feeds = getattr(app.state, "feeds", None)
    stopping: dict[str, Any] = {}

    class Server(uvicorn.Server):
        async def serve(self, sockets: Any = None) -> None:
            stopping["loop"] = asyncio.get_running_loop()
            if "signal" in stopping:  # a signal came while the app was being built
                self.should_exit = True
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            first = not self.should_exit
            super().handle_exit(sig, frame)
            if first:
                loop = stopping.get("loop")
                if feeds is not None and loop is not None:  # end the live streams first
                    loop.call_soon_threadsafe(lambda: loop.create_task(feeds.close()))
                for fn in on_stop:
                    fn()

    config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_S, access_log=False)
    server = Server(config)

    # uvicorn handles SIGINT/SIGTERM while it serves, then raises each again with the
    # handlers it found: these, which only note it, so a stop is a clean exit 0.
    def noted(signum: int, frame: Any) -> None:
        stopping["signal"] = signal.Signals(signum).name

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, noted)
    try:
        server.run()
    except SystemExit:
        if server.started:
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started and "signal" not in stopping:
        from cadenza.core.errors import UsageError

        raise UsageError(f"cannot serve on {host}:{port} (uvicorn said why above)",
                         hint=f"choose a free port (--port {DEFAULT_PORT + 1}) or stop what "
                         "listens there")


def server_command(
    targets: Annotated[list[str] | None, typer.Argument(
        metavar="PATHS",
        help="Pipeline files or folders to serve (and schedule, with --scheduler). Default: "
        "the project's (cadenza.toml's `pipelines`).", show_default=False)] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. Anything but loopback needs auth configured "
        "(cadenza users create).")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port to listen on.")] = DEFAULT_PORT,
    scheduler: Annotated[bool, typer.Option(
        "--scheduler", help="Also run the scheduler (a child process this server starts and "
        "stops): create due runs and execute queued ones (those triggered over the API "
        "too).")] = False,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="uvicorn worker processes serving the API.")] = 1,
    executor: Annotated[str | None, typer.Option(
        "--executor", "-e", help="With --scheduler: inline, threads, processes or ray (default: "
        "from cadenza.toml, else processes).", show_default=False)] = None,
    max_runs: Annotated[int, typer.Option(
        "--max-runs", min=0, help="With --scheduler: runs driven at once.")] = 16,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /api/v1/openapi.json), /metrics and the live
    event streams; with --scheduler, run the scheduler too: one command for a whole local
    deployment. Stops on Ctrl-C or SIGTERM.

    Exit code: 0 stopped cleanly, 2 a usage or configuration error (a refused bind, a port
    in use, no pipelines for --scheduler).
    """
    from cadenza.cli.run import check_executor
    from cadenza.core.settings import get_settings
    from cadenza.store import open_store

    settings = get_settings()
    check_executor(executor)
    paths = _paths(list(targets or []))
    store = open_store(settings.database_url)
    from cadenza.api.auth import check_bind

    check_bind(host, store, settings=settings)

    child: SchedulerChild | None = None
    if scheduler:
        from cadenza.cli.scheduler import find_pipelines
        from cadenza.cli.scheduler_child import METRICS_URL_ENV, SchedulerChild

        find_pipelines(list(targets or []), settings)  # none found: exit 2 before starting
        child = SchedulerChild(list(targets or []), executor=executor, max_runs=max_runs)
        os.environ[METRICS_URL_ENV] = child.metrics_url  # for --workers N processes
    _service_logging()
    on_stop: list[Any] = []
    if child is not None:
        on_stop.append(child.stop)
    shown = f"[{host}]" if ":" in host else host
    note(f"Serving http://{shown}:{port}/api/v1 (docs at /api/v1/docs, metrics at /metrics)"
         f"{' with the scheduler (a child process)' if child else ''}; Ctrl-C or SIGTERM "
         "stops it.")
    try:
        if child is not None:
            child.start()
        if workers == 1:
            url = child.metrics_url if child is not None else None
            _serve_one(build_app(settings, paths, scheduler_metrics_url=url), host, port,
                       on_stop)
        else:
            _serve_workers(paths, host, port, workers)
    finally:
        if child is not None:
            child.join()
    out().print(f"Server on {escape(host)}:{port} stopped.")
    raise typer.Exit(0)


def _serve_workers(paths: list[Path], host: str, port: int, workers: int) -> None:
    import uvicorn

    os.environ[_PATHS_ENV] = os.pathsep.join(str(p) for p in paths)
    uvicorn.run("cadenza.cli.server:worker_app", factory=True, host=host, port=port,
                workers=workers, log_level="info", timeout_graceful_shutdown=GRACEFUL_S,
                access_log=False)


def _service_logging() -> None:
    """The server logs what it does (INFO, with timestamps) on stderr, as the scheduler."""
    from cadenza.cli.console import DEBUG

    root = logging.getLogger("cadenza")
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not DEBUG["enabled"]:
        for name in ("cadenza.triggers", "cadenza.engine.api", "cadenza.api"):
            logging.getLogger(name).setLevel(logging.INFO)


__all__ = ["server_command", "worker_app"]
