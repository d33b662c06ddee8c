"""`/api/v1/audit` (admin): every mutating API call, newest first (api/audit.py records
them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cadenza.api.auth import RequireAdmin
from cadenza.api.deps import StoreDep
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from cadenza.api.schemas import AuditOut, Page
from cadenza.store.security import security_store

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", dependencies=[RequireAdmin])
def list_audit(
    store: StoreDep,
    who: Annotated[str | None, Query(max_length=64, description="Only this caller's.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AuditOut]:
    """Mutating calls (POST, PUT, PATCH, DELETE under /api/v1): who, method, path, status,
    when; newest first."""
    before = int(decode_cursor(cursor, (int,))[0]) if cursor else None
    rows = security_store(store).list_audit(limit=limit + 1, before_id=before, who=who)
    page = rows[:limit]
    nxt = encode_cursor(page[-1].id) if len(rows) > limit else None
    return Page[AuditOut](
        items=[AuditOut(id=a.id, at=a.at, who=a.who, method=a.method, path=a.path,
                        status=a.status, detail=a.detail) for a in page],
        next_cursor=nxt)
