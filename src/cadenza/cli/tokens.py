"""`cadenza tokens create|list|revoke`: API tokens (`Authorization: Bearer <token>`).

What belongs here: creating, listing and revoking tokens through the store's security API.
A token is printed once, when it is created; the store keeps only its SHA-256.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cadenza.cli.console import escape, format_time, out, print_json

app = typer.Typer(
    name="tokens",
    help="API tokens for the server (shown once when created, revocable).",
    no_args_is_help=True,
)


@app.command("create")
def create_token(
    user: Annotated[str, typer.Option("--user", "-u", help="The user the token acts as.")],
    expires: Annotated[str | None, typer.Option(
        "--expires", help="Lifetime: 90m, 12h, 30d, 2w (default: never expires).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (id, token, ...).")] = False,
) -> None:
    """Create a token for USER and print it (the only time it is shown)."""
    from cadenza.cli.users import security
    from cadenza.core.security import parse_duration

    lifetime = parse_duration(expires) if expires is not None else None
    made = security().create_token(user, expires_in=lifetime)
    rec = made.record
    if json_out:
        print_json({"id": rec.id, "user": rec.user, "token": made.token,
                    "created_at": rec.created_at, "expires_at": rec.expires_at})
        return
    console = out()
    console.print(made.token, markup=False, highlight=False)
    until = f"expires {format_time(rec.expires_at)}" if rec.expires_at else "never expires"
    from cadenza.cli.console import err

    err().print(f"Token [bold]{rec.id}[/] for {escape(rec.user)} ({until}). Copy it now: it "
                "is not shown again. Use it as `Authorization: Bearer <token>`; revoke it with "
                f"`cadenza tokens revoke {rec.id}`.")


@app.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List tokens (ids, users, status; never the tokens themselves)."""
    from cadenza.cli.users import security
    from cadenza.core import clock

    tokens = security().list_tokens(user)
    now = clock.now()
    if json_out:
        print_json([{"id": t.id, "user": t.user, "status": t.status(now),
                     "created_at": t.created_at, "expires_at": t.expires_at,
                     "revoked_at": t.revoked_at, "last_used_at": t.last_used_at}
                    for t in tokens])
        return
    console = out()
    if not tokens:
        console.print("No tokens. Create one: cadenza tokens create --user NAME")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "USER", "STATUS", "CREATED", "EXPIRES", "LAST USED"):
        table.add_column(col)
    for t in tokens:
        table.add_row(t.id, escape(t.user), t.status(now), format_time(t.created_at),
                      format_time(t.expires_at) if t.expires_at else "never",
                      format_time(t.last_used_at) if t.last_used_at else "-")
    console.print(table)


@app.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="Token id (tokens list).")]) -> None:
    """Revoke a token: the API refuses it from now on."""
    from cadenza.cli.users import security

    rec = security().revoke_token(token_id)
    out().print(f"Revoked token [bold]{rec.id}[/] of {escape(rec.user)}.")
