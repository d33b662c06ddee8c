"""Users, roles, API tokens, secrets and audit records, and the pure rules about them.

What belongs here: the records the store takes and returns for the server's security
(`UserRecord`, `TokenRecord`, `SecretInfo`, `AuditRecord`), the role order, the token format
and its SHA-256 digest, and the rules for secret names. Re-exported from core/task_secrets.py
(what a run imports without the records here): where the secrets' encryption key comes from,
the masking that replaces a secret's value with `***` in task logs and error text (`Masker`),
and the mapping a task reads its secrets from (`Secrets`, what `get_context().secrets` is).
What does not: hashing passwords and encrypting secrets (`store/security.py`, where
argon2-cffi and cryptography are imported), checking a request (`api/auth.py`).

Only the standard library here: core imports no third-party package but pydantic.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cadenza.core.errors import ConfigError, UsageError
from cadenza.core.task_secrets import (
    MASK,
    MIN_MASKED_LEN,
    NO_SECRETS,
    SECRET_KEY_ENV,
    SECRET_KEY_FILE,
    Masker,
    Secrets,
    key_file,
    secret_key,
)

# --- roles and users ---------------------------------------------------------------------------


class Role(enum.StrEnum):
    """What a user may do through the API: viewer < operator < admin.

    viewer reads everything (never a secret's value); operator also triggers, cancels,
    resumes and retries runs and pauses pipelines; admin also manages users, tokens, pools
    and secrets and reads the audit log."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """True when this role may do what `needed` may."""
        return _RANK[self] >= _RANK[needed]

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise UsageError(
                f"unknown role '{text}'",
                hint=f"use one of: {', '.join(r.value for r in cls)} (viewer < operator < admin)",
            ) from None


_RANK: Final = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def check_user_name(name: str) -> str:
    """`name` if it can name a user: 1-64 letters, digits, `_.@-`, not starting with a
    symbol (it appears in the audit log and in URLs)."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' cannot be a user name",
            hint="use 1-64 letters, digits or _ . @ -, starting with a letter or digit",
        )
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    name: str
    role: Role
    created_at: datetime
    disabled: bool = False
    has_password: bool = False


# --- API tokens --------------------------------------------------------------------------------

# Tokens look like `cdz_<43 url-safe characters>`: recognisable by secret scanners and in a
# leaked log, 256 random bits. The store keeps only their SHA-256: a token has full entropy, so
# a fast hash is enough (a slow one, as for passwords, would only slow every request down).
TOKEN_PREFIX: Final = "cdz_"


def new_token() -> tuple[str, str]:
    """(id, token): a short public id to list and revoke it by, and the secret token that is
    shown once."""
    import secrets

    return secrets.token_hex(6), TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 (hex) the store keeps of a token and looks it up by."""
    import hashlib

    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_token_shaped(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 200


_DURATION = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '90m', '2w', '3600s' -> timedelta (what `--expires` takes)."""
    m = _DURATION.fullmatch(text)
    if m is None or int(m.group(1)) <= 0:
        raise UsageError(
            f"'{text}' is not a duration",
            hint="write a positive number and a unit: 90m, 12h, 30d or 2w",
        )
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """An API token, never its value."""

    id: str
    user: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewToken:
    """A token just created: its record and the token itself, which is shown once."""

    record: TokenRecord
    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling: a user and the role they act with. `token_id` is None for the
    anonymous admin of a server without users (loopback only)."""

    name: str
    role: Role
    token_id: str | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.token_id is None


# --- binding --------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str, *, auth_configured: bool) -> None:
    """Refuse (ConfigError with the reason and the fix) to serve on an address other machines
    can reach while auth is not configured: every caller would be an anonymous admin."""
    if auth_configured or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host}: no user exists, so auth is off and every caller "
        "would be an anonymous admin (auth is off by default only on loopback)",
        hint="create an admin and a token first: `cadenza users create NAME --role admin`, "
        "then `cadenza tokens create --user NAME`; or bind 127.0.0.1",
    )


# --- audit -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One mutating API call: who, what (method and path), how it ended (status), when."""

    id: int
    at: datetime
    who: str
    method: str
    path: str
    status: int
    detail: str | None = None


# --- secrets -----------------------------------------------------------------------------------
# The mapping a task reads, the masking and the encryption key are in core/task_secrets.py
# (imported by the run path, which needs none of the server's records above).

_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


def check_secret_name(name: str) -> str:
    if not _SECRET_NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' cannot be a secret name",
            hint="use 1-128 letters, digits or _ . -, starting with a letter or _ "
            "(for example OPENAI_API_KEY)",
        )
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretInfo:
    """A secret without its value (what lists show)."""

    name: str
    updated_at: datetime


__all__ = [
    "MASK", "MIN_MASKED_LEN", "NO_SECRETS", "SECRET_KEY_ENV", "SECRET_KEY_FILE", "AuditRecord",
    "Masker", "NewToken", "Principal", "Role", "SecretInfo", "Secrets", "TokenRecord",
    "UserRecord", "check_bind_host", "check_secret_name", "check_user_name", "is_loopback",
    "is_token_shaped", "key_file", "new_token", "parse_duration", "secret_key", "token_digest",
]
