"""`/api/v1/tokens` (admin): create, list and revoke API tokens.

A token is in the response of its creation only; the store keeps its SHA-256.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from cadenza.api.auth import RequireAdmin, forget_credentials
from cadenza.api.deps import StoreDep
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from cadenza.api.schemas import Page, TokenCreatedOut, TokenIn, TokenOut
from cadenza.core import clock
from cadenza.core.security import TokenRecord
from cadenza.store.security import security_store

router = APIRouter(prefix="/tokens", tags=["tokens"])

TokenId = Annotated[str, Path(description="The token's id (not the token).", max_length=32)]


def token_out(token: TokenRecord, now: datetime) -> TokenOut:
    return TokenOut(id=token.id, user=token.user, status=token.status(now),
                    created_at=token.created_at, expires_at=token.expires_at,
                    revoked_at=token.revoked_at, last_used_at=token.last_used_at)


@router.get("", dependencies=[RequireAdmin])
def list_tokens(
    store: StoreDep,
    user: Annotated[str | None, Query(max_length=64, description="Only this user's.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[TokenOut]:
    """Tokens, oldest first (ids, users, status; never the tokens)."""
    tokens = security_store(store).list_tokens(user)
    if cursor:
        at, tid = decode_cursor(cursor, (datetime, str))
        tokens = [t for t in tokens if (t.created_at, t.id) > (at, tid)]
    page = tokens[:limit]
    nxt = encode_cursor(page[-1].created_at, page[-1].id) if len(tokens) > limit else None
    now = clock.now()
    return Page[TokenOut](items=[token_out(t, now) for t in page], next_cursor=nxt)


@router.post("", status_code=201, dependencies=[RequireAdmin])
def create_token(body: TokenIn, store: StoreDep) -> TokenCreatedOut:
    """Create a token for a user; the response holds the token, shown this once."""
    lifetime = timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    made = security_store(store).create_token(body.user, expires_in=lifetime)
    out = token_out(made.record, clock.now())
    return TokenCreatedOut(**out.model_dump(), token=made.token)


@router.delete("/{token_id}", dependencies=[RequireAdmin])
def revoke_token(token_id: TokenId, store: StoreDep, request: Request) -> TokenOut:
    """Revoke a token: refused from now on (by this server at once)."""
    token = security_store(store).revoke_token(token_id)
    forget_credentials(request)
    return token_out(token, clock.now())
