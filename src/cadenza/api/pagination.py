"""Keyset pagination: opaque cursors and the `limit`/`cursor` query parameters.

Every list orders by a unique key (e.g. runs: created_at DESC, run_id DESC) and a page's
`next_cursor` encodes the last item's key. The next page asks for rows strictly after it
("seek"), which an index answers without reading the rows before it: page 2,000 of the runs
list costs what page 1 costs. OFFSET would read and drop every earlier row.

A cursor is base64url of a small JSON list, e.g. ["2026-12-06T16:49:46.123456+00:00",
"r-abc"]; clients treat it as opaque. A cursor that does not decode is a 422 on `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query

from cadenza.api.errors import FieldError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT,
                             description=f"Items per page (1-{MAX_LIMIT}).")]
Cursor = Annotated[str | None, Query(
    max_length=1000,
    description="Where the page starts: the `next_cursor` of the previous page.")]

_LOC = ("query", "cursor")


def encode_cursor(*values: str | int | datetime | None) -> str:
    """An opaque cursor for a key (datetimes as ISO 8601 text)."""
    data = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """The key a cursor encodes, one value per entry of `kinds` (str, int or datetime;
    a datetime may be None). FieldError (422 on `cursor`) when it is not such a cursor."""
    def bad(why: str) -> FieldError:
        return FieldError([_LOC], f"not a cursor of this list ({why}); pass the "
                          "`next_cursor` of the previous page, or leave it out for page 1")

    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise bad("it does not decode") from exc
    if not isinstance(data, list) or len(data) != len(kinds):
        raise bad(f"it holds no key of {len(kinds)} values")
    out: list[Any] = []
    for value, kind in zip(data, kinds, strict=True):
        if kind is datetime:
            if value is None:
                out.append(None)
                continue
            if not isinstance(value, str):
                raise bad("a time is not text")
            try:
                when = datetime.fromisoformat(value)
            except ValueError as exc:
                raise bad("a time does not parse") from exc
            if when.tzinfo is None:
                raise bad("a time has no time zone")
            try:  # year 1 at +05:00 has no UTC equivalent; the store binds UTC
                when = when.astimezone(UTC)
            except OverflowError as exc:
                raise bad("a time is out of range") from exc
            out.append(when)
        elif kind is int:
            if type(value) is not int:
                raise bad("a number is not a whole number")
            if not -(2**63) <= value < 2**63:  # a 64-bit column: the driver would overflow
                raise bad("a number is out of range")
            out.append(value)
        else:
            if not isinstance(value, str):
                raise bad("a name is not text")
            out.append(value)
    return out


def decode_after(cursor: str | None, kinds: tuple[type, ...]) -> tuple[Any, ...] | None:
    """The key to read a page after (None without a cursor: the first page), for keys whose
    values are never null; 422 on `cursor` as `decode_cursor` says."""
    if not cursor:
        return None
    key = decode_cursor(cursor, kinds)
    if any(v is None for v in key):
        raise FieldError([_LOC], "not a cursor of this list (a value is null); pass the "
                         "`next_cursor` of the previous page, or leave it out for page 1")
    return tuple(key)


def utc_query(name: str, value: datetime | None) -> datetime | None:
    """A query parameter's time in UTC; 422 on `name` without a time zone or out of range."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise FieldError([("query", name)], "give a time zone (e.g. 2026-01-01T00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # year 1 at +05:00, year 9999 at -05:00
        raise FieldError([("query", name)], "the time is out of range") from exc
