"""Users, roles, API tokens, secrets and audit records, and the pure rules about them.

What belongs here: the records the store takes and returns for the server's security
(`UserRecord`, `TokenRecord`, `SecretInfo`, `AuditRecord`), the role order, the token format
and its SHA-256 digest, where the secrets' encryption key comes from, and the masking that
replaces a secret's value with `***` in task logs and error text (`Masker`), plus the mapping
a task reads its secrets from (`Secrets`, what `get_context().secrets` is).
What does not: hashing passwords and encrypting secrets (`store/security.py`, where
argon2-cffi and cryptography are imported), checking a request (`api/auth.py`).

Only the standard library here: core imports no third-party package but pydantic.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cadenza.core.errors import ConfigError, SecretNotFound, UsageError

log = logging.getLogger(__name__)


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

SECRET_KEY_ENV: Final = "CADENZA_SECRET_KEY"
SECRET_KEY_FILE: Final = "secret.key"
MASK: Final = "***"
# Shorter values are not masked: masking "ab" would garble every log that contains it.
MIN_MASKED_LEN: Final = 4

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


def _check_key(raw: bytes, where: str) -> bytes:
    import base64
    import binascii

    key = raw.strip()
    try:
        ok = len(base64.urlsafe_b64decode(key)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"the secret key in {where} is not a Fernet key (32 url-safe base64-encoded bytes)",
            hint=f"set {SECRET_KEY_ENV} to the output of `python -c \"import base64, os; "
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"`, or unset it to use "
            "the key file",
        )
    return key


def key_file(home: Path) -> Path:
    return home / SECRET_KEY_FILE


def secret_key(home: Path, *, create: bool, environ: Mapping[str, str] | None = None
               ) -> bytes | None:
    """The key secrets are encrypted with: `CADENZA_SECRET_KEY`, else `<home>/secret.key`.

    With `create`, a missing key file is made (32 random bytes, mode 0600, created
    exclusively so two processes cannot both write one); without, a missing key is None.
    Every server, scheduler and worker that runs tasks needing secrets must see the same key:
    on several machines set CADENZA_SECRET_KEY.
    """
    env = os.environ if environ is None else environ
    raw = env.get(SECRET_KEY_ENV)
    if raw:
        return _check_key(raw.encode("ascii", "replace"), SECRET_KEY_ENV)
    path = key_file(home)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        return _create_key_file(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the secret key file {path}: {exc}",
                          hint=f"make it readable by this user, or set {SECRET_KEY_ENV}") from exc
    _warn_if_shared(path)
    return _check_key(data, str(path))


def _create_key_file(path: Path) -> bytes:
    import base64

    key = base64.urlsafe_b64encode(os.urandom(32))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _check_key(path.read_bytes(), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot create the secret key file {path}: {exc}",
                          hint=f"make {path.parent} writable, or set {SECRET_KEY_ENV}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    log.info("created the secret key file %s (mode 0600)", path)
    return key


def _warn_if_shared(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the secret key file %s can be read by other users (mode %o); "
                    "run: chmod 600 %s", path, stat.S_IMODE(mode), path)


class Masker:
    """Replaces every secret value (of MIN_MASKED_LEN characters or more) with `***`.

    Longer values are replaced first, so a value containing another is masked whole. A value
    split across two separate writes is not seen (each write is masked on its own); the
    worker writes a log line by line in practice (print, logging, tracebacks)."""

    __slots__ = ("_pattern",)

    def __init__(self, values: Iterable[str]) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_MASKED_LEN}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, kept))) if kept else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)


class Secrets(Mapping[str, str]):
    """The secrets a task can read: `get_context().secrets["NAME"]`.

    A missing name raises SecretNotFound (a KeyError) naming the fix. Its repr shows names
    only, so printing it leaks nothing. Secrets whose value could not be decrypted (another
    key) are listed in `unavailable` with the reason, which their lookup raises."""

    __slots__ = ("_unavailable", "_values")

    def __init__(self, values: Mapping[str, str] | None = None,
                 unavailable: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        self._unavailable = dict(unavailable or {})

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            pass
        reason = self._unavailable.get(name)
        if reason is not None:
            raise SecretNotFound(f"secret '{name}' cannot be read: {reason}",
                                 hint=f"set {SECRET_KEY_ENV} to the key it was set with, or "
                                 f"set it again: cadenza secrets set {name}")
        known = ", ".join(sorted(self._values)) or "none"
        raise SecretNotFound(f"no secret named '{name}' (secrets set: {known})",
                             hint=f"cadenza secrets set {name}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{n}=***' for n in sorted(self._values))})"

    @property
    def unavailable(self) -> Mapping[str, str]:
        return dict(self._unavailable)

    def masker(self) -> Masker:
        return Masker(self._values.values())

    def __reduce__(self) -> tuple[type[Secrets], tuple[dict[str, str], dict[str, str]]]:
        return (Secrets, (self._values, self._unavailable))


NO_SECRETS: Final = Secrets()
