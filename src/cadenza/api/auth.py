"""Who is calling, and may they: bearer tokens, roles, and the bind rule of `cadenza server`.

Roles are ordered viewer < operator < admin: viewers read, operators also trigger, cancel,
retry and pause, admins also manage users, tokens, pools and secrets and read the audit log.
A route declares the least role it needs with `dependencies=[RequireOperator]` (or takes the
principal: `who: Annotated[Principal, RequireOperator]`); `create_app` also puts
`RequireViewer` on every /api/v1 router, so a route that forgets still needs a token.

Auth is *configured* when at least one user exists in the store (or `auth_required = true`
in cadenza.toml / CADENZA_AUTH_REQUIRED=1). Then every /api/v1 call needs
`Authorization: Bearer <token>`: 401 without one or with an unknown, expired or revoked token
(or a disabled user's), 403 when the role is too low. Not configured, every caller is the
anonymous admin, which is why `cadenza server` refuses then to bind anything but loopback
(`check_bind`).

What is cached, and for how long (every request checks a token, and 200 clients polling
must not double the store's load):
  1. "is auth configured": the user count, for USERS_TTL_S; once configured, an app stays
     configured (deleting the last user never turns a running server's auth off).
  2. a good token's principal, for TOKEN_TTL_S: a revoke, a disable or a role change made by
     another process (the CLI) takes effect within that; made through this app's API, at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from cadenza.core.errors import NotAuthenticated, PermissionDenied
from cadenza.core.security import Principal, Role, check_bind_host, token_digest
from cadenza.core.settings import Settings
from cadenza.store import RunStore
from cadenza.store.security import security_store

log = logging.getLogger(__name__)

__all__ = [
    "ANONYMOUS_ADMIN",
    "Authenticator",
    "Principal",
    "RequireAdmin",
    "RequireOperator",
    "RequireViewer",
    "Role",
    "anonymous",
    "check_bind",
    "current_principal",
    "is_auth_forced",
    "require",
    "require_admin",
    "require_operator",
    "require_viewer",
]

USERS_TTL_S = 1.0
TOKEN_TTL_S = 2.0
_MAX_CACHED_TOKENS = 10_000

ANONYMOUS_ADMIN = Principal(name="anonymous", role=Role.ADMIN)


def anonymous(request: Request) -> Principal:
    """An authenticator that lets everyone in as the anonymous admin (tests of other things)."""
    return ANONYMOUS_ADMIN


def is_auth_forced(settings: Settings) -> bool:
    """`auth_required = true` in cadenza.toml or CADENZA_AUTH_REQUIRED=1: tokens are needed
    even before any user exists."""
    env = os.environ.get("CADENZA_AUTH_REQUIRED", "").strip().lower()
    if env:
        return env in ("1", "true", "yes", "on")
    return settings.extra.get("auth_required") is True


class Authenticator:
    """`app.state.authenticate`: the Principal a request comes from (see the module
    docstring for what is cached)."""

    def __init__(self, store: RunStore, *, force: bool = False) -> None:
        self._security = security_store(store)
        self._configured = force
        self._users_checked_at = float("-inf")
        self._tokens: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def is_configured(self) -> bool:
        if self._configured:
            return True
        now = time.monotonic()
        if now - self._users_checked_at >= USERS_TTL_S:
            configured = self._security.count_users() > 0
            self._users_checked_at = now
            if configured:
                self._configured = True
                log.info("auth is configured (users exist): API calls need a token")
        return self._configured

    def forget(self) -> None:
        """Drop cached tokens and the user count (after a change to users or tokens)."""
        with self._lock:
            self._tokens.clear()
        self._users_checked_at = float("-inf")

    def known(self, authorization: bytes | None) -> Principal | None:
        """The caller with this Authorization header if that needs no store read (auth
        off and the user count fresh, or a token cached and fresh); None otherwise (then
        `__call__` decides, 401 included). For the response cache (api/cache.py)."""
        now = time.monotonic()
        if not self._configured:
            if now - self._users_checked_at < USERS_TTL_S:
                return ANONYMOUS_ADMIN
            return None
        if not authorization:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        cached = self._tokens.get(token_digest(token))
        if cached is not None and cached[1] > now:
            return cached[0]
        return None

    def __call__(self, request: Request) -> Principal:
        if not self.is_configured():
            return ANONYMOUS_ADMIN
        return self.check_token(bearer_token(request))

    def check_token(self, token: str) -> Principal:
        digest = token_digest(token)
        now = time.monotonic()
        cached = self._tokens.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = self._security.authenticate(token)  # NotAuthenticated says why
        with self._lock:
            if len(self._tokens) >= _MAX_CACHED_TOKENS:
                self._tokens.clear()
            self._tokens[digest] = (principal, now + TOKEN_TTL_S)
        return principal


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise NotAuthenticated(
            "this server needs an API token: send `Authorization: Bearer <token>`",
            hint="create one with `cadenza tokens create --user NAME`")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated(
            f"the Authorization header must be `Bearer <token>`, not a {scheme or 'blank'} "
            "credential",
            hint="send `Authorization: Bearer <token>` with a token from `cadenza tokens create`")
    return token


# Declares the bearer scheme in OpenAPI (the docs' "Authorize" button, generated clients);
# the header itself is read by the authenticator, which knows whether auth is on.
_bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearer",
                            description="An API token: `cadenza tokens create --user NAME` or "
                            "POST /api/v1/auth/login. Needed once a user exists.")


async def current_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)] = None,
) -> Principal:
    """The caller, as `app.state.authenticate` says (401 from it when it cannot tell).
    Kept on `request.state.principal` for the audit log.

    Async, so the role check costs no threadpool hop of its own (a sync dependency runs in
    the threadpool); an authenticator other than `anonymous` may read the store, so it runs
    there."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    authenticate: Callable[[Request], Principal] = request.app.state.authenticate
    known = None
    if authenticate is anonymous:
        known = ANONYMOUS_ADMIN
    elif isinstance(authenticate, Authenticator):
        # Auth off with a fresh user count, or a cached token: no store read, so no
        # threadpool hop (one hop a request saved on every polled read).
        header = request.headers.get("authorization")
        known = authenticate.known(header.encode("latin-1") if header else None)
    principal = known if known is not None else await run_in_threadpool(authenticate, request)
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets callers with `role` or higher through, 403 for the others."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise PermissionDenied(
                f"user '{principal.name}' is a {principal.role}; this needs the {role} role "
                "or higher",
                hint=f"ask an admin for a token of a user with the {role} role")
        return principal

    check.__name__ = f"require_{role.value}"
    return check


require_viewer = require(Role.VIEWER)
require_operator = require(Role.OPERATOR)
require_admin = require(Role.ADMIN)

RequireViewer: Any = Depends(require_viewer)
RequireOperator: Any = Depends(require_operator)
RequireAdmin: Any = Depends(require_admin)


def forget_credentials(request: Request) -> None:
    """After this request changed users or tokens: the app's caches forget them at once."""
    authenticate = request.app.state.authenticate
    if isinstance(authenticate, Authenticator):
        authenticate.forget()


def check_bind(host: str, store: RunStore, *, settings: Settings | None = None) -> None:
    """Refuse (ConfigError, exit 2 in `cadenza server`) to serve on `host` when other
    machines can reach it and auth is not configured: no user exists (and auth is not
    forced), so every caller would be an anonymous admin. Loopback is always allowed.

    Example:
        >>> check_bind("0.0.0.0", open_store())  # no users yet
        ConfigError: refusing to serve on 0.0.0.0: no user exists, ...
          Fix: create an admin and a token first: `cadenza users create NAME --role admin`...
    """
    configured = (settings is not None and is_auth_forced(settings)) or \
        security_store(store).count_users() > 0
    check_bind_host(host, auth_configured=configured)
