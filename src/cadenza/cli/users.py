"""`cadenza users create|list|disable|enable|delete`: who may call the server's API.

What belongs here: reading and writing users through the store's security API, and asking
for a password without echoing it. What does not: what a role may do (`api/auth.py`),
hashing (`store/security.py`). Creating the first user turns auth on for `cadenza server`.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cadenza.cli.console import escape, format_time, out, print_json

app = typer.Typer(
    name="users",
    help="Users of the server's API and their roles (viewer < operator < admin).",
    no_args_is_help=True,
)


def security() -> Any:
    """The SecurityStore of the project's metadata store."""
    from cadenza.cli.runs import open_project_store
    from cadenza.store.security import security_store

    return security_store(open_project_store())


def _ask_password(name: str) -> str:
    from cadenza.core.errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError(
            f"user '{name}': no --password given and no terminal to ask for one",
            hint="pass --password P (or --no-password for a token-only user)",
        )
    password: str = typer.prompt(f"Password for {name}", hide_input=True,
                                 confirmation_prompt=True)
    return password


@app.command("create")
def create_user(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option("--role", "-r",
                                      help="viewer (reads), operator (also triggers, cancels, "
                                      "retries, pauses) or admin (also manages users, pools, "
                                      "secrets).")],
    password: Annotated[str | None, typer.Option(
        "--password", "-p", help="The password (asked for, without echo, if left out).")] = None,
    no_password: Annotated[bool, typer.Option(
        "--no-password", help="A token-only user (a service or a script).")] = False,
) -> None:
    """Create a user. The first user turns auth on: the API then needs a token."""
    from cadenza.core.security import Role, check_user_name

    parsed = Role.parse(role)
    check_user_name(name)
    if password is None and not no_password:
        password = _ask_password(name)
    sec = security()
    first = sec.count_users() == 0
    user = sec.create_user(name, parsed, password=None if no_password else password)
    out().print(f"Created user [bold]{escape(user.name)}[/] ({user.role.value}).")
    if first:
        out().print("Auth is on now: every API call needs a token. "
                    f"Create one: cadenza tokens create --user {escape(user.name)}")


@app.command("list")
def list_users(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (a list of users).")] = False,
) -> None:
    """List users, their roles and whether they are disabled."""
    users = security().list_users()
    if json_out:
        print_json([{"name": u.name, "role": u.role.value, "disabled": u.disabled,
                     "has_password": u.has_password, "created_at": u.created_at}
                    for u in users])
        return
    console = out()
    if not users:
        console.print("No users: auth is off and the server only binds loopback. Create one: "
                      "cadenza users create NAME --role admin")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("USER", "ROLE", "STATUS", "PASSWORD", "CREATED"):
        table.add_column(col)
    for u in users:
        table.add_row(escape(u.name), u.role.value, "disabled" if u.disabled else "active",
                      "yes" if u.has_password else "no", format_time(u.created_at))
    console.print(table)


@app.command("update")
def update_user(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str | None, typer.Option("--role", "-r", help="The new role.")] = None,
    password: Annotated[str | None, typer.Option(
        "--password", "-p", help="The new password.")] = None,
    ask_password: Annotated[bool, typer.Option(
        "--ask-password", help="Ask for the new password without echo.")] = False,
) -> None:
    """Change a user's role or password (their tokens follow within seconds)."""
    from cadenza.core.errors import UsageError
    from cadenza.core.security import Role

    parsed = Role.parse(role) if role is not None else None
    if ask_password:
        password = _ask_password(name)
    if parsed is None and password is None:
        raise UsageError(f"user '{name}': nothing to change",
                         hint=f"cadenza users update {name} --role operator  (or --password)")
    user = security().update_user(name, role=parsed, password=password)
    changed = [f"role {user.role.value}"] if parsed is not None else []
    if password is not None:
        changed.append("a new password")
    out().print(f"User [bold]{escape(user.name)}[/]: {' and '.join(changed)}.")


@app.command("disable")
def disable_user(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Disable a user: their tokens stop working at once (enable brings them back)."""
    security().update_user(name, disabled=True)
    out().print(f"Disabled user [bold]{escape(name)}[/].")


@app.command("enable")
def enable_user(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Enable a disabled user again."""
    security().update_user(name, disabled=False)
    out().print(f"Enabled user [bold]{escape(name)}[/].")


@app.command("delete")
def delete_user(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Delete a user and their tokens (the audit log keeps their name)."""
    security().delete_user(name)
    out().print(f"Deleted user [bold]{escape(name)}[/] and their tokens.")
