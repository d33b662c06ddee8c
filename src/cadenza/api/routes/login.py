"""`POST /api/v1/auth/login`: a user's name and password for a token (the web UI's login).

The one public route under /api/v1 (`create_app` mounts it without the viewer requirement):
it is how a caller without a token gets one. A wrong name and a wrong password get the same
401 after the same argon2 work, so the answer does not tell which names exist. The token
expires (12 hours unless asked otherwise) and is listed and revocable like any other.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request

from cadenza.api.deps import StoreDep
from cadenza.api.routes.tokens import token_out
from cadenza.api.schemas import LoginIn, TokenCreatedOut
from cadenza.core import clock
from cadenza.core.errors import NotAuthenticated
from cadenza.core.security import Principal
from cadenza.store.security import security_store

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", responses={401: {"description": "Wrong user name or password."}})
def login(body: LoginIn, store: StoreDep, request: Request) -> TokenCreatedOut:
    """A new token for the user whose name and password these are."""
    sec = security_store(store)
    user = sec.check_password(body.name, body.password)
    if user is None:
        raise NotAuthenticated("wrong user name or password (or the user is disabled)",
                               hint="an admin can set a password: PATCH /api/v1/users/NAME")
    made = sec.create_token(user.name, expires_in=timedelta(seconds=body.expires_in_s))
    request.state.principal = Principal(name=user.name, role=user.role,
                                        token_id=made.record.id)  # for the audit log
    out = token_out(made.record, clock.now())
    return TokenCreatedOut(**out.model_dump(), token=made.token)
