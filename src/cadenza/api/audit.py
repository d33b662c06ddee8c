"""The audit log: every mutating call under /api/v1 (POST, PUT, PATCH, DELETE) is recorded
with who made it, the method and path, the status it got, and when; admins read it at
`GET /api/v1/audit`.

A plain ASGI middleware (not BaseHTTPMiddleware, which buffers streaming responses such as
the SSE event stream). The row is written when the response starts, before its status
reaches the client: a client that saw its call succeed finds it in the log. Calls refused
with 401/403 are recorded too (who: `-` when the caller could not be told). Never recorded:
request bodies (they hold passwords and secret values) and reads.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio

from cadenza.core.security import Principal
from cadenza.store.security import security_store

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNKNOWN_CALLER = "-"

_Scope = dict[str, Any]
_Message = dict[str, Any]


class AuditMiddleware:
    def __init__(self, app: Any, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope.get("method") not in MUTATING
                or not str(scope.get("path", "")).startswith(self.prefix)):
            await self.app(scope, receive, send)
            return
        recorded = False

        async def send_audited(message: _Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await _record(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except BaseException:
            if not recorded:
                recorded = True
                await _record(scope, 500)
            raise


async def _record(scope: _Scope, status: int) -> None:
    principal = (scope.get("state") or {}).get("principal")
    who = principal.name if isinstance(principal, Principal) else UNKNOWN_CALLER
    detail_parts = []
    if isinstance(principal, Principal) and principal.token_id:
        detail_parts.append(f"token {principal.token_id}")
    query = scope.get("query_string") or b""
    if query:
        detail_parts.append("?" + query.decode("latin-1"))
    store = scope["app"].state.store
    write = functools.partial(
        security_store(store).record_audit, who=who, method=str(scope["method"]),
        path=str(scope["path"]), status=status, detail=" ".join(detail_parts) or None)
    try:
        await anyio.to_thread.run_sync(write)
    except Exception as exc:  # noqa: BLE001 - the call itself happened; say so loudly
        log.error("could not record %s %s (%s by %s) in the audit log: %s",
                  scope["method"], scope["path"], status, who, exc)
