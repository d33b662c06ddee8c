"""`/api/v1/secrets` (admin): set, list and delete the secrets tasks read.

Names only ever leave the server: a value goes in (PUT) and never comes back out. It is
encrypted with the server's secret key (CADENZA_SECRET_KEY, or CADENZA_HOME/secret.key,
created 0600 on first use); schedulers and workers running the tasks need the same key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from cadenza.api.auth import RequireAdmin
from cadenza.api.deps import SettingsDep, StoreDep
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from cadenza.api.schemas import Page, SecretIn, SecretOut
from cadenza.core.security import secret_key
from cadenza.store.security import security_store

router = APIRouter(prefix="/secrets", tags=["secrets"])

SecretName = Annotated[str, Path(description="The secret's name.", max_length=128)]


@router.get("", dependencies=[RequireAdmin])
def list_secrets(store: StoreDep, limit: Limit = DEFAULT_LIMIT,
                 cursor: Cursor = None) -> Page[SecretOut]:
    """Secret names by name (never values)."""
    after = decode_cursor(cursor, (str,))[0] if cursor else None
    items = [s for s in security_store(store).list_secrets() if after is None or s.name > after]
    page = items[:limit]
    nxt = encode_cursor(page[-1].name) if len(items) > limit else None
    return Page[SecretOut](items=[SecretOut(name=s.name, updated_at=s.updated_at) for s in page],
                           next_cursor=nxt)


@router.put("/{name}", dependencies=[RequireAdmin])
def set_secret(name: SecretName, body: SecretIn, store: StoreDep,
               settings: SettingsDep) -> SecretOut:
    """Create or replace a secret (stored encrypted; the response has its name only)."""
    key = secret_key(settings.home, create=True)
    assert key is not None  # create=True makes one
    info = security_store(store).set_secret(name, body.value, key=key)
    return SecretOut(name=info.name, updated_at=info.updated_at)


@router.delete("/{name}", status_code=204, dependencies=[RequireAdmin])
def delete_secret(name: SecretName, store: StoreDep) -> Response:
    security_store(store).delete_secret(name)
    return Response(status_code=204)


