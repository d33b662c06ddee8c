"""The app factory: `create_app(settings)` builds the FastAPI app `cadenza server` serves.

No globals at import: each app opens its store from its settings once (kept on
`app.state`), loads the project's pipelines on first use, and mounts the routers of
`routes/` under `/api/v1` (OpenAPI at `/api/v1/openapi.json`, docs at `/api/v1/docs`).
`/healthz` (the process answers) and `/readyz` (the store answers) are at the root.

Adding a resource: write `routes/<resource>.py` with `router = APIRouter(prefix=...,
tags=[...])`, and add it to `ROUTERS` below (one line each, so merges stay trivial).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from cadenza.api import auth
from cadenza.api.audit import AuditMiddleware
from cadenza.api.cache import DEFAULT_TTL_S, ResponseCache, ResponseCacheMiddleware
from cadenza.api.catalog import CatalogHolder
from cadenza.api.deps import NextRunFn
from cadenza.api.errors import install_handlers
from cadenza.api.live import RunFeeds
from cadenza.api.metrics import metrics_registry, render
from cadenza.api.routes import (
    assets,
    audit,
    events,
    grid,
    login,
    pipelines,
    pools,
    run_events,
    runs,
    secrets,
    task_instances,
    tokens,
    users,
)
from cadenza.api.schemas import ErrorOut, HealthOut, ReadyOut
from cadenza.api.ui import mount_ui
from cadenza.core.errors import ConfigError
from cadenza.core.settings import Settings, get_settings
from cadenza.store import mask_url, open_store

API_PREFIX = "/api/v1"

ROUTERS: tuple[APIRouter, ...] = (
    pipelines.router,
    runs.router,
    task_instances.router,
    assets.router,
    pools.router,
    run_events.router,
    events.router,
    users.router,
    tokens.router,
    secrets.router,
    audit.router,
    grid.router,
)

# Shown in OpenAPI for every route: what an error body looks like.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "The request cannot be used as it is."},
    401: {"model": ErrorOut, "description": "No API token, or one that is unknown, expired "
          "or revoked (auth is on once a user exists)."},
    403: {"model": ErrorOut, "description": "The token's role is too low for this."},
    404: {"model": ErrorOut, "description": "No such pipeline, run or task."},
    409: {"model": ErrorOut, "description": "Not allowed in the current state; says why."},
    503: {"model": ErrorOut, "description": "The metadata store cannot be reached."},
}


def create_app(
    settings: Settings | None = None,
    *,
    paths: list[Path] | None = None,
    next_run_at: NextRunFn | None = None,
    authenticate: Callable[[Request], auth.Principal] | None = None,
    metrics_collectors: Sequence[Any] = (),
    cache_ttl_s: float | None = None,
) -> FastAPI:
    """The API app on `settings`' store (default: the process's settings).

    `paths`: pipeline files or folders instead of cadenza.toml's `pipelines`.
    `next_run_at`: the scheduler's next-fire function (see `deps.NextRunFn`).
    `authenticate`: who a request comes from (default: `auth.Authenticator`, bearer tokens
    once a user exists; `auth.anonymous` lets everyone in as the admin).
    `metrics_collectors`: prometheus_client collectors `/metrics` serves after the store's
    (`cadenza server --scheduler` hands in the scheduler's).
    `cache_ttl_s`: how long polled lists and run details are answered from the response
    cache (api/cache.py; default `api_cache_ttl_s` in cadenza.toml, else 1 s; 0: off).

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(), host="127.0.0.1", port=8321)
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="Cadenza",
        version="1",
        summary="Pipelines, runs, task instances, assets and pools of a Cadenza project.",
        description="Polled reads (the runs lists, a run's detail, a pipeline's runs, the "
        "pipelines list) may be answered from a short-lived cache: up to 1 s old by default "
        "(`api_cache_ttl_s` in cadenza.toml); your own changes through this server show at "
        "once. For live state follow `GET /api/v1/runs/{run_id}/events` (Server-Sent "
        "Events). They carry an `ETag`: send it back as `If-None-Match` to get a 304 "
        "without a body when nothing changed.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.store = open_store(settings.database_url)
    app.state.feeds = RunFeeds(app.state.store)
    app.state.metrics = metrics_registry(app.state.store, extra=metrics_collectors)
    app.state.catalog = CatalogHolder(settings, paths)
    app.state.next_run_at = next_run_at
    app.state.authenticate = authenticate or auth.Authenticator(
        app.state.store, force=auth.is_auth_forced(settings))
    install_handlers(app)
    app.add_middleware(AuditMiddleware, prefix=API_PREFIX)
    ttl = cache_ttl_s if cache_ttl_s is not None else _cache_ttl(settings)
    app.state.response_cache = ResponseCache(ttl)
    app.add_middleware(ResponseCacheMiddleware, prefix=API_PREFIX,
                       cache=app.state.response_cache, known=_known(app.state.authenticate),
                       polled_read=runs.polled_read(app.state.store))
    for router in ROUTERS:
        # RequireViewer on every router: a route that forgets its role still needs a token.
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES,
                           dependencies=[auth.RequireViewer])
    # The one public /api/v1 route: a name and password for a token.
    app.include_router(login.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)

    @app.get("/healthz", tags=["health"])
    def healthz() -> HealthOut:
        """The server process answers."""
        return HealthOut(status="ok")

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorOut}})
    def readyz(request: Request) -> ReadyOut:
        """The metadata store answers (503 with the reason when it does not: StoreError)."""
        store = request.app.state.store
        store.ping()
        return ReadyOut(status="ok", store=mask_url(store.url))

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics(request: Request) -> Response:
        """Prometheus metrics, text format (api/metrics.py lists them)."""
        body, content_type = render(request.app.state.metrics)
        return Response(body, media_type=content_type)

    mount_ui(app)  # the web UI at / for paths no route takes
    return app


def _cache_ttl(settings: Settings) -> float:
    raw = settings.extra.get("api_cache_ttl_s", DEFAULT_TTL_S)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and 0 <= raw <= 60:
        return float(raw)
    raise ConfigError(
        f"api_cache_ttl_s must be a number of seconds from 0 to 60, not {raw!r}",
        hint="set api_cache_ttl_s in cadenza.toml to e.g. 1 (0 turns the response cache off)")


def _known(authenticate: Callable[[Request], auth.Principal]
           ) -> Callable[[bytes | None], auth.Principal | None]:
    """Who a request comes from when that needs no store read (the response cache's key)."""
    if authenticate is auth.anonymous:
        return lambda _header: auth.ANONYMOUS_ADMIN
    if isinstance(authenticate, auth.Authenticator):
        return authenticate.known
    return lambda _header: None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.feeds.close()  # live streams end; their pollers stop
