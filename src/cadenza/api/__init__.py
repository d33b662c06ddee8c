"""The REST API: a FastAPI app over the metadata store and the project's pipelines.

Public API: `create_app(settings)` (`app.py`), which `cadenza server` serves with uvicorn.
What belongs here: HTTP (routes, schemas, errors, auth, pagination). What does not: states
or decisions (the engine's), SQL (the store's), the scheduler (`triggers`, composed with
the app by `cli/server.py`; the API never imports it).
"""

from __future__ import annotations

from cadenza.api.app import create_app

__all__ = ["create_app"]
