"""`/api/v1/users` (admin) and `/api/v1/me` (anyone): users and their roles.

Creating the first user turns auth on for this server: from then on every call needs a
token (see `api/auth.py`). A change here is seen by this server's token checks at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from cadenza.api.auth import Principal, RequireAdmin, RequireViewer, forget_credentials
from cadenza.api.deps import StoreDep
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from cadenza.api.schemas import MeOut, Page, UserIn, UserOut, UserPatchIn
from cadenza.core.security import Role, UserRecord
from cadenza.store.security import security_store

router = APIRouter(tags=["users"])

UserName = Annotated[str, Path(description="The user's name.", max_length=64)]


def user_out(user: UserRecord) -> UserOut:
    return UserOut(name=user.name, role=user.role.value, disabled=user.disabled,
                   has_password=user.has_password, created_at=user.created_at)


@router.get("/me")
def get_me(who: Annotated[Principal, RequireViewer]) -> MeOut:
    """Who the caller is: the token's user and role (the anonymous admin while no user
    exists)."""
    return MeOut(name=who.name, role=who.role.value, anonymous=who.is_anonymous,
                 token_id=who.token_id)


@router.get("/users", dependencies=[RequireAdmin])
def list_users(store: StoreDep, limit: Limit = DEFAULT_LIMIT,
               cursor: Cursor = None) -> Page[UserOut]:
    """Users by name."""
    after = decode_cursor(cursor, (str,))[0] if cursor else None
    users = [u for u in security_store(store).list_users() if after is None or u.name > after]
    page = users[:limit]
    nxt = encode_cursor(page[-1].name) if len(users) > limit else None
    return Page[UserOut](items=[user_out(u) for u in page], next_cursor=nxt)


@router.post("/users", status_code=201, dependencies=[RequireAdmin],
             responses={409: {"description": "A user of this name exists."}})
def create_user(body: UserIn, store: StoreDep, request: Request) -> UserOut:
    """Create a user (without `password`: a token-only user). The first user turns auth
    on."""
    user = security_store(store).create_user(body.name, Role(body.role), password=body.password)
    forget_credentials(request)
    return user_out(user)


@router.get("/users/{name}", dependencies=[RequireAdmin])
def get_user(name: UserName, store: StoreDep) -> UserOut:
    return user_out(security_store(store).get_user(name))


@router.patch("/users/{name}", dependencies=[RequireAdmin])
def update_user(name: UserName, body: UserPatchIn, store: StoreDep, request: Request) -> UserOut:
    """Change a user's role, disable or enable them, or set their password. Their tokens
    follow at once (a disabled user's are refused)."""
    user = security_store(store).update_user(
        name, role=Role(body.role) if body.role is not None else None,
        disabled=body.disabled, password=body.password)
    forget_credentials(request)
    return user_out(user)


@router.delete("/users/{name}", status_code=204, dependencies=[RequireAdmin])
def delete_user(name: UserName, store: StoreDep, request: Request) -> Response:
    """Delete a user and their tokens (the audit log keeps the name)."""
    security_store(store).delete_user(name)
    forget_credentials(request)
    return Response(status_code=204)
