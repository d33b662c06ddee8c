"""`/api/v1/pools`: list, read and set pools (how many task instances of a pool run at
once). Reading needs a viewer; setting an admin (SPEC §6: admins manage pools)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from cadenza.api.auth import RequireAdmin, RequireViewer
from cadenza.api.deps import StoreDep
from cadenza.api.errors import FieldError
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_after, encode_cursor
from cadenza.api.schemas import Page, PoolIn, PoolOut
from cadenza.core.errors import NotFound
from cadenza.core.records import PoolRecord
from cadenza.core.suggest import did_you_mean
from cadenza.store.browse import browse_store

router = APIRouter(prefix="/pools", tags=["pools"])

# Any name `@task(pool=...)` and `cadenza pools set` take (spaces and '/' included), without
# control characters.
PoolName = Annotated[str, Path(description="The pool's name.", min_length=1, max_length=200,
                               pattern=r"^[^\x00-\x1f\x7f]+$")]


def pool_out(p: PoolRecord) -> PoolOut:
    return PoolOut(name=p.name, slots=p.slots, description=p.description)


@router.get("", dependencies=[RequireViewer])
def list_pools(store: StoreDep, limit: Limit = DEFAULT_LIMIT,
               cursor: Cursor = None) -> Page[PoolOut]:
    """Pools by name."""
    after = decode_after(cursor, (str,))
    got = browse_store(store).pools_page(after=after, limit=limit)
    return Page[PoolOut](items=[pool_out(p) for p in got.items],
                         next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("/{name:path}", dependencies=[RequireViewer])
def get_pool(name: PoolName, store: StoreDep) -> PoolOut:
    """One pool."""
    pool = store.get_pool(name)
    if pool is None:
        names = [p.name for p in store.list_pools()]
        raise NotFound(f"no pool named '{name}'." + did_you_mean(name, names),
                       hint=f"pools: {', '.join(names[:20]) or '(none)'}; create one with "
                       f"PUT /api/v1/pools/{name} (admin)")
    return pool_out(pool)


@router.put("/{name:path}", dependencies=[RequireAdmin])
def set_pool(name: PoolName, body: PoolIn, store: StoreDep) -> PoolOut:
    """Create or replace a pool (admin). 0 slots pauses it: its task instances wait."""
    if not name.strip():
        raise FieldError([("path", "name")], "a pool name cannot be blank")
    return pool_out(store.set_pool(name, body.slots, body.description))
