"""The runtime of `@task.sql` and `sql_task` (SPEC §9): run a query through SQLAlchemy.

What belongs here: resolving the URL (a literal, `secret://NAME`, `env://NAME`), running the
statements in one transaction, turning a SELECT into a DataFrame and anything else into the
number of rows it changed, and translating the driver's errors into QueryFailed (the query is
wrong: no retry by default) or DatabaseUnavailable (the database cannot be reached: retried
by the task's `retries`). Any dialect whose driver is installed works; PostgreSQL (psycopg) and
MariaDB/MySQL (PyMySQL) are tested.

One engine per attempt, without a pool (`NullPool`): a worker process may run tasks for many
databases, and a pooled connection must never cross a fork.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cadenza.core.context import task_where
from cadenza.core.errors import DatabaseUnavailable, QueryFailed
from cadenza.integrations.references import resolve

_EXCERPT = 300


def _excerpt(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _statements(request: Any) -> tuple[list[str], Mapping[str, Any] | None]:
    """(statements, params) from what the task's function returned, or sql_task's arguments.

    A query string; a list of statement strings (run in order, in one transaction); a
    `(query, params)` pair; a dict with `query` and `params`."""
    params: Any = None
    if isinstance(request, Mapping):
        params = request.get("params")
        request = request.get("query")
    elif isinstance(request, tuple) and len(request) == 2 and isinstance(request[1], Mapping):
        request, params = request
    if isinstance(request, str):
        statements = [request]
    elif isinstance(request, Sequence) and request and all(isinstance(q, str) for q in request):
        statements = list(request)
    else:
        raise QueryFailed(
            f"the task gave {type(request).__name__} {request!r:.200}, not a query",
            **task_where(),
            hint='return a string ("SELECT ..."), a list of statements, or a pair '
            '("SELECT ... WHERE day = :day", {"day": day})')
    statements = [q for q in statements if q.strip()]
    if not statements:
        raise QueryFailed("the query is empty", **task_where(),
                          hint='return the SQL to run: "SELECT * FROM users"')
    if params is not None and not isinstance(params, Mapping):
        raise QueryFailed(f"params must be a dict of bound values, got {params!r:.200}",
                          **task_where(), hint='params={"day": "2026-01-01"} for :day')
    return statements, params


def _engine(raw_url: str) -> tuple[Any, str]:
    """A pool-less engine for the URL and how to show it (password hidden)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    url = resolve(raw_url, "url", QueryFailed)
    try:
        parsed = make_url(url)
    except ArgumentError:
        shown = raw_url if raw_url != url else "the URL given"
        raise QueryFailed(f"{shown} is not a database URL", **task_where(),
                          hint='use a SQLAlchemy URL: "postgresql+psycopg://user@host:5432/db", '
                          '"mysql+pymysql://root@127.0.0.1:3306/db", "sqlite:///file.db"',
                          ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed, poolclass=NullPool)
    except NoSuchModuleError:
        raise QueryFailed(f"SQLAlchemy has no dialect '{parsed.drivername}' ({shown})",
                          **task_where(),
                          hint="check the URL's scheme (postgresql+psycopg, mysql+pymysql, "
                          "sqlite...)") from None
    except ImportError as exc:
        raise QueryFailed(f"the database driver for {parsed.drivername} is not installed: "
                          f"{exc}", **task_where(),
                          hint="pip install 'cadenza[sql]' (psycopg, PyMySQL) or the driver "
                          "your dialect names") from None
    return engine, shown


def _translate(exc: Exception, shown: str, query: str) -> QueryFailed:
    from sqlalchemy import exc as sa_exc

    orig = getattr(exc, "orig", None)
    reason = str(orig if orig is not None else exc).strip()
    first = reason.splitlines()[0] if reason else type(exc).__name__
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                        sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return DatabaseUnavailable(
            f"the database at {shown} failed: {first}", **task_where(),
            hint="check that the database is up and the URL (host, port, user, database) is "
            "right; with retries=N the task tries again")
    return QueryFailed(
        f"the query failed on {shown}: {first}\n  query: {_excerpt(query)}", **task_where(),
        hint="fix the query (or the table it reads); run it by hand with the same URL to see "
        "the database's full message")


def run_sql(request: Any, config: Mapping[str, Any]) -> Any:
    """Run what a SQL task asked for; see the module docstring.

    Outcomes, by case:
      1. the last statement returns rows (SELECT, RETURNING...) -> a pandas DataFrame;
      2. otherwise -> the number of rows the statements changed (0 for DDL);
      3. the database cannot be reached, or drops the connection -> DatabaseUnavailable;
      4. the query is wrong (syntax, missing table, constraint) -> QueryFailed, rolled back;
      5. the URL names a secret or variable that is not set -> QueryFailed naming it.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    statements, params = _statements(request)
    engine, shown = _engine(str(config.get("url", "")))
    current = statements[0]
    try:
        started = time.monotonic()
        changed = 0
        rows: list[Any] | None = None
        columns: list[str] = []
        with engine.begin() as conn:
            for i, current in enumerate(statements):
                print(f"[cadenza] sql on {shown}: {_excerpt(current)}", flush=True)
                result = conn.execute(text(current), dict(params or {}))
                if result.returns_rows:
                    if i == len(statements) - 1:
                        columns = list(result.keys())
                        rows = list(result.fetchall())
                    else:
                        result.close()
                elif result.rowcount and result.rowcount > 0:
                    changed += result.rowcount
    except SQLAlchemyError as exc:
        raise _translate(exc, shown, current) from None
    finally:
        engine.dispose()
    took = time.monotonic() - started
    if rows is None:
        print(f"[cadenza] sql: {changed} rows changed in {took:.3f} s", flush=True)
        return changed
    print(f"[cadenza] sql: {len(rows)} rows x {len(columns)} columns in {took:.3f} s", flush=True)
    try:
        import pandas as pd
    except ImportError:
        raise QueryFailed("a SELECT's rows become a pandas DataFrame, and pandas is not "
                          "installed", **task_where(),
                          hint="pip install 'cadenza[sql]'") from None
    return pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)
