"""`cadenza db upgrade`: create or migrate the metadata store's schema (Alembic).

What belongs here: the command; the migration itself is `cadenza.store.upgrade_database`.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from cadenza.cli.console import escape, out

app = typer.Typer(name="db", help="The metadata store's schema.", no_args_is_help=True)


def mask_url(url: str) -> str:
    """postgresql+psycopg://user:secret@host/db -> postgresql+psycopg://user:***@host/db"""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@app.command("upgrade")
def upgrade(
    url: Annotated[str | None, typer.Option(
        "--url", help="Database URL (default: CADENZA_DATABASE_URL, cadenza.toml, or "
        ".cadenza/cadenza.db in the project).")] = None,
) -> None:
    """Create the schema on an empty database, or migrate it to this version's."""
    from cadenza.core.settings import get_settings
    from cadenza.store import upgrade_database

    target = url or get_settings().database_url
    revision = upgrade_database(target)
    out().print(f"Metadata store {escape(mask_url(target))} is at schema revision "
                f"[bold]{escape(revision)}[/].")
