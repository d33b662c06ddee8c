"""Who is calling, and may they: `Principal` and the role dependencies of the routes.

Roles are ordered viewer < operator < admin: viewers read, operators trigger, cancel,
retry and pause, admins also manage users, pools and secrets. A route declares the least
role it needs with `dependencies=[RequireOperator]` (or takes the principal:
`who: Annotated[Principal, RequireOperator]`).

First version (issue 13's auth helper adds users and tokens): auth is not configured, so
every caller is the anonymous admin, and `cadenza server` may only bind loopback then.
`app.state.authenticate` is the one function that decides; replace it to check tokens.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from cadenza.core.errors import PermissionDenied


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    name: str
    role: Role
    anonymous: bool = False


ANONYMOUS_ADMIN = Principal(name="anonymous", role=Role.ADMIN, anonymous=True)


def anonymous(request: Request) -> Principal:
    """The authenticator while auth is not configured: everyone is the anonymous admin."""
    return ANONYMOUS_ADMIN


def current_principal(request: Request) -> Principal:
    """The caller, as `app.state.authenticate` says (401 from it when it cannot tell)."""
    authenticate: Callable[[Request], Principal] = request.app.state.authenticate
    principal = authenticate(request)
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[..., Principal]:
    """A dependency that lets callers with `role` or higher through, 403 for the others."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise PermissionDenied(
                f"'{principal.name}' is a {principal.role}; this needs {role} or higher",
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
