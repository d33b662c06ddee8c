"""The store's errors: a database error, a bad value or a missing row, as a `StoreError` that
names the (password-masked) URL, what was being done and the fix.

What belongs here: the translation both write paths share, SQLAlchemy's (`db.py`, `dml.py`)
and the SQLite run path's on plain `sqlite3` (`sqlite_store.py`). It works on a DBAPI error
as well as on SQLAlchemy's wrapper of one (its `orig`).
What does not: catching (each caller knows which errors its driver raises).

No SQLAlchemy at import: the SQLite run path never imports it (store/sqlite_store.py). Only
`mask_url` of a URL that may hold a password asks SQLAlchemy to parse it.
"""

from __future__ import annotations

from typing import Any

from cadenza.core.errors import RunTakenOver, StoreError, UsageError

SQLITE_BUSY_TIMEOUT_S = 30.0

# Characters a SQLite file URL may hold for SQLAlchemy to render it back unchanged (its
# `render_as_string` quotes others, such as non-ASCII letters, '%', '#' and '@').
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+ ")
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def plain_sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL in its plain form (`sqlite:///relative/path.db`,
    `sqlite:////absolute/path.db`, also `sqlite+pysqlite:`), or None for any other URL:
    other databases, in-memory SQLite, a query string, a `~`, characters SQLAlchemy would
    quote. For a plain one SQLAlchemy reads the same path and renders the URL unchanged
    (tests/unit/test_sqlite_sql.py compares both)."""
    for prefix in _SQLITE_PREFIXES:
        if url.startswith(prefix):
            path = url[len(prefix):]
            if path and path != ":memory:" and _PLAIN.issuperset(path):
                return path
            return None
    return None


def mask_url(url: Any) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    if isinstance(url, str) and plain_sqlite_path(url) is not None:
        return url  # no password, rendered unchanged (no SQLAlchemy import on a run's path)
    from sqlalchemy import exc
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparseable database URL>"


def _sqlite_hint(where: str) -> str:
    return (f"check that {where} is on a local disk and its folder is writable, "
            "or set CADENZA_DATABASE_URL")


def hint_for(url: Any) -> str:
    """What to check when the database at `url` cannot be used."""
    if isinstance(url, str):
        path = plain_sqlite_path(url)
        if path is not None:
            return _sqlite_hint(path)
    from sqlalchemy import exc
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except exc.ArgumentError:
        return (
            "set CADENZA_DATABASE_URL to sqlite:///path/to/cadenza.db or postgresql+psycopg://..."
        )
    if u.get_backend_name() == "sqlite":
        return _sqlite_hint(u.database or ":memory:")
    if u.get_backend_name() == "postgresql":
        return (
            f"is PostgreSQL running at {u.host or 'localhost'}:{u.port or 5432} and does "
            f"database '{u.database}' exist? Set the URL in CADENZA_DATABASE_URL or "
            "database_url in cadenza.toml"
        )
    return "Cadenza supports sqlite:/// and postgresql+psycopg:// URLs; set CADENZA_DATABASE_URL"


def store_error(exc_: BaseException, url: Any, action: str) -> StoreError | UsageError:
    """Translate a database error (SQLAlchemy's or the DBAPI's) raised while doing `action`
    into a StoreError, or into a UsageError when the caller's value is what the database
    refuses (PostgreSQL stores no NUL character in text or JSON: that is bad input, not a
    store outage)."""
    orig = getattr(exc_, "orig", None) or exc_
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    kinds = {c.__name__ for c in type(orig).__mro__} | {type(exc_).__name__}
    lowered = detail.lower()
    if "DataError" in kinds and ("nul (0x00)" in lowered or "\\u0000" in str(orig).lower()):
        return UsageError(f"{action}: a value holds a NUL character (\\x00), which the "
                          "metadata store (PostgreSQL) cannot keep",
                          hint="remove the NUL character from the name or value")
    if "IntegrityError" in kinds:
        hint = (
            "a row with this key already exists, or refers to a row that does not; "
            "use a new run id, or report this as a Cadenza bug"
        )
    elif "ProgrammingError" in kinds or "no such table" in lowered or "no such column" in lowered:
        hint = (
            "the database schema does not match this Cadenza: run `cadenza db upgrade`, or "
            "point CADENZA_DATABASE_URL at another database"
        )
    elif "database is locked" in lowered:
        hint = (
            f"another process held the SQLite write lock for over {SQLITE_BUSY_TIMEOUT_S:g} s; "
            "use PostgreSQL (CADENZA_DATABASE_URL) for many concurrent writers"
        )
    else:
        hint = hint_for(url)
    return StoreError(f"metadata store {mask_url(url)}: {action} failed: {detail}", hint=hint)


def bad_values(e: Exception, action: str) -> StoreError:
    """A value the store cannot keep (a naive datetime, something not JSON)."""
    return StoreError(
        f"metadata store: cannot store these values while {action}: {e}",
        hint="records must hold UTC-aware datetimes and JSON-serialisable params and outputs",
    )


def missing_rows(count: int, keys: list[tuple[str, ...]], total: int, what: str) -> StoreError:
    """An UPDATE matched `count` of `total` rows (`keys`: the first few rows' keys)."""
    return StoreError(
        f"metadata store: {count} of {total} {what} updated; the others do not exist "
        f"(keys: {keys})",
        hint="insert rows before updating them (WriteBatch.new_*); this is a bug in the caller",
    )


def taken_over(run_id: str, holder: str | None) -> RunTakenOver:
    """A write fenced on `WriteBatch.fence` found the run's row naming `holder` (None: no
    driver, or no row) instead of the writing driver: nothing of the batch was written."""
    who = f"driver {holder}" if holder else "another driver"
    return RunTakenOver(
        f"run {run_id} was taken over by {who} while this one was stopped; this driver "
        "wrote nothing more and stops",
        hint=f"nothing to fix here: see how the run goes on with `cadenza runs show {run_id}`",
    )
