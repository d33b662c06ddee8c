"""`cadenza secrets set|list|delete`: values tasks read with `get_context().secrets[NAME]`.

What belongs here: reading a value (argument, stdin or a hidden prompt) and writing it
through the store's security API, encrypted with the project's secret key
(CADENZA_SECRET_KEY, or CADENZA_HOME/secret.key, created 0600 on first use). Values are never
printed: `list` shows names only.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cadenza.cli.console import err, escape, format_time, out, print_json

app = typer.Typer(
    name="secrets",
    help="Secrets tasks read with get_context().secrets[NAME], encrypted at rest and "
    "masked as *** in task logs and errors.",
    no_args_is_help=True,
)


def _read_value(name: str, value: str | None) -> str:
    from cadenza.core.errors import UsageError

    if value == "-" or (value is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
        if text.endswith("\n"):  # `echo ... |` and here-strings add one
            text = text[:-1]
            text = text.removesuffix("\r")
        value = text
    elif value is None:
        value = typer.prompt(f"Value of {name}", hide_input=True)
    if not value:
        raise UsageError(f"secret '{name}': the value is empty",
                         hint=f"cadenza secrets set {name} -   (reads the value from stdin)")
    return value


@app.command("set")
def set_secret(
    name: Annotated[str, typer.Argument(help="Secret name, e.g. OPENAI_API_KEY.")],
    value: Annotated[str | None, typer.Argument(
        help="The value; '-' reads it from stdin; left out, it is asked for without echo. "
        "(A value on the command line stays in your shell history: prefer '-'.)")] = None,
) -> None:
    """Create or replace a secret (stored encrypted)."""
    from cadenza.cli.runs import open_project_store
    from cadenza.core.security import MIN_MASKED_LEN, check_secret_name, secret_key
    from cadenza.core.settings import get_settings
    from cadenza.store.security import security_store

    check_secret_name(name)
    plain = _read_value(name, value)
    store = open_project_store()
    key = secret_key(get_settings().home, create=True)
    assert key is not None  # create=True makes one
    sec = security_store(store)
    existed = any(s.name == name for s in sec.list_secrets())
    sec.set_secret(name, plain, key=key)
    out().print(f"{'Replaced' if existed else 'Set'} secret [bold]{escape(name)}[/] "
                "(encrypted; tasks read it with get_context().secrets"
                f"[{escape(repr(name))}]).")
    if len(plain) < MIN_MASKED_LEN:
        err().print(f"[yellow]warning:[/] a value shorter than {MIN_MASKED_LEN} characters is "
                    "not masked in task logs.")


@app.command("list")
def list_secrets(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (names only).")] = False,
) -> None:
    """List secret names (never their values)."""
    from cadenza.cli.users import security

    secrets = security().list_secrets()
    if json_out:
        print_json([{"name": s.name, "updated_at": s.updated_at} for s in secrets])
        return
    console = out()
    if not secrets:
        console.print("No secrets. Set one: cadenza secrets set NAME -  (reads stdin)")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("SECRET")
    table.add_column("UPDATED")
    for s in secrets:
        table.add_row(escape(s.name), format_time(s.updated_at))
    console.print(table)


@app.command("delete")
def delete_secret(name: Annotated[str, typer.Argument(help="Secret name.")]) -> None:
    """Delete a secret."""
    from cadenza.cli.users import security

    security().delete_secret(name)
    out().print(f"Deleted secret [bold]{escape(name)}[/].")
