"""Serve the web UI's built files at `/`, with the single-page-app fallback.

The files are package data of `cadenza` (`cadenza/ui/static/`, built from frontend/ by
`make ui`); they are located through importlib.resources without importing `cadenza.ui`
(surfaces don't import each other, STYLE §1). `/assets/*` are the hashed bundles (cached
for good); any other GET path that no route takes and that is not a file answers
index.html, so every view's URL (e.g. /runs/<id>) loads the app, which routes on the
client. Paths under /api/ never fall back: an unknown API path stays a JSON 404.

It hooks the router's `default` (what Starlette calls when no route matched) instead of
adding a catch-all route, so routes and mounts added later (e.g. /metrics by the server
command) still win whatever the order.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def ui_directory() -> Path | None:
    """The built UI's folder, or None when this install has no built UI."""
    root = Path(str(files("cadenza").joinpath("ui", "static")))
    return root if (root / "index.html").is_file() else None


def mount_ui(app: FastAPI, directory: Path | None = None) -> None:
    """Serve `directory` (default: the packaged build) at `/`; a no-op without a build."""
    found = directory or ui_directory()
    if found is None or not (found / "index.html").is_file():
        return
    root = found.resolve()
    index = root / "index.html"
    not_found: ASGIApp = app.router.default

    async def serve_ui(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "/"))
        if (scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD")
                or path == "/api" or path.startswith("/api/")):
            await not_found(scope, receive, send)
            return
        target, cache = index, "no-cache"  # a client-side route: the app shows the view
        candidate = (root / path.lstrip("/")).resolve()
        if path != "/" and candidate.is_relative_to(root) and candidate.is_file():
            target = candidate
            if path.startswith("/assets/"):  # content-hashed names
                cache = "public, max-age=31536000, immutable"
        await FileResponse(target, headers={"Cache-Control": cache})(scope, receive, send)

    app.router.default = serve_ui
