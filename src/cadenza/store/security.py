"""Users, API tokens, secrets and the audit log in the metadata store.

What belongs here: the queries and transactions behind `cadenza users|tokens|secrets` and
the API's authentication, password hashing (argon2id, argon2-cffi) and the encryption of
secrets at rest (Fernet, cryptography). Both libraries are imported on first use only: a run
that reads no secret, and `import cadenza`, never load them.
What does not: where the encryption key comes from and masking (`core/security.py`), what a
role may do and HTTP (`api/auth.py`).

What is kept, and what never is:
  1. a password: only its argon2id hash (salted, slow on purpose);
  2. an API token: only its SHA-256 (a token is 256 random bits, so a fast hash is safe and
     keeps every request cheap); the token itself is returned once, by `create_token`;
  3. a secret: only its Fernet ciphertext (AES-128-CBC + HMAC-SHA256); the key is never in
     the database.

Get one with `security_store(run_store)`; it shares the RunStore's engine. Takes and returns
the records of `cadenza.core.security`; SQLAlchemy errors become StoreError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from cadenza.core import clock
from cadenza.core.errors import (
    NotAuthenticated,
    SecretNotFound,
    StateConflict,
    TokenNotFound,
    UsageError,
    UserNotFound,
)
from cadenza.core.security import (
    AuditRecord,
    NewToken,
    Principal,
    Role,
    SecretInfo,
    Secrets,
    TokenRecord,
    UserRecord,
    check_secret_name,
    check_user_name,
    is_token_shaped,
    new_token,
    token_digest,
)
from cadenza.store.db import translated
from cadenza.store.runs import RunStore
from cadenza.store.secret_values import decrypt_secrets, fernet
from cadenza.store.tables import api_tokens_table, audit_table, secrets_table, users_table

log = logging.getLogger(__name__)

_users = users_table
_tokens = api_tokens_table
_secrets = secrets_table
_audit = audit_table

# A token's last_used_at is written at most this often: every API call checks a token, and a
# write per call would double the store's load under many polling clients.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_AUDIT_DETAIL = 2000
# What a run reads to hand its tasks their secrets (also rendered for the SQLite run path).
SELECT_SECRETS = select(_secrets.c.name, _secrets.c.ciphertext)


def _user_from_row(row: Any) -> UserRecord:
    return UserRecord(name=row.name, role=Role(row.role), created_at=row.created_at,
                      disabled=bool(row.disabled), has_password=row.password_hash is not None)


def _token_from_row(row: Any) -> TokenRecord:
    return TokenRecord(id=row.id, user=row.user, created_at=row.created_at,
                       expires_at=row.expires_at, revoked_at=row.revoked_at,
                       last_used_at=row.last_used_at)


def _audit_from_row(row: Any) -> AuditRecord:
    return AuditRecord(id=int(row.id), at=row.at, who=row.who, method=row.method,
                       path=row.path, status=int(row.status), detail=row.detail)


_USER_COLUMNS = (_users.c.name, _users.c.role, _users.c.created_at, _users.c.disabled,
                 _users.c.password_hash)
_TOKEN_COLUMNS = (_tokens.c.id, _tokens.c.user, _tokens.c.created_at, _tokens.c.expires_at,
                  _tokens.c.revoked_at, _tokens.c.last_used_at)


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    if not password:
        raise UsageError("a password cannot be empty",
                         hint="give one with --password, or leave it out to be asked")
    return str(_hasher().hash(password))


_dummy: list[str] = []


def _dummy_hash() -> str:
    """A hash no password matches in practice, verified in place of a missing one."""
    if not _dummy:
        import secrets

        _dummy.append(str(_hasher().hash(secrets.token_urlsafe(32))))
    return _dummy[0]


_fernet = fernet


class SecurityStore:
    """Users, API tokens, secrets and audit records (see the module docstring).

    Example:
        >>> sec = security_store(open_store())
        >>> sec.create_user("ana", Role.OPERATOR, password="s3cret!")
        >>> made = sec.create_token("ana", expires_in=timedelta(days=30))
        >>> sec.authenticate(made.token).name
        'ana'
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.url = store.url
        self._engine = store._engine
        self._read_engine = store._read_engine

    # -- users ----------------------------------------------------------------------------------

    @translated("creating a user")
    def create_user(self, name: str, role: Role, *, password: str | None) -> UserRecord:
        """A new user. UsageError if the name is taken or malformed. `password` None makes a
        token-only user (a service)."""
        check_user_name(name)
        hashed = hash_password(password) if password is not None else None
        now = clock.now()
        with self._engine.begin() as conn:
            if conn.execute(select(_users.c.name).where(_users.c.name == name)).first():
                raise StateConflict(f"user '{name}' already exists",
                                 hint="pick another name, or see `cadenza users list`")
            conn.execute(insert(_users).values(name=name, role=role.value, password_hash=hashed,
                                               created_at=now, disabled=False))
        return UserRecord(name=name, role=role, created_at=now, has_password=hashed is not None)

    @translated("reading users")
    def list_users(self) -> list[UserRecord]:
        with self._read_engine.connect() as conn:
            rows = conn.execute(select(*_USER_COLUMNS).order_by(_users.c.name))
            return [_user_from_row(r) for r in rows]

    @translated("counting users")
    def count_users(self) -> int:
        """How many users exist (disabled ones too): auth is configured when above 0."""
        with self._read_engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_users)).scalar_one())

    @translated("reading a user")
    def get_user(self, name: str) -> UserRecord:
        with self._read_engine.connect() as conn:
            row = conn.execute(select(*_USER_COLUMNS).where(_users.c.name == name)).first()
        if row is None:
            raise _no_user(name)
        return _user_from_row(row)

    @translated("changing a user")
    def update_user(self, name: str, *, role: Role | None = None, disabled: bool | None = None,
                    password: str | None = None) -> UserRecord:
        """Change a user's role, disable or enable them, or set their password. A disabled
        user's tokens stop working at once (and work again when they are enabled)."""
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = role.value
        if disabled is not None:
            values["disabled"] = bool(disabled)
        if password is not None:
            values["password_hash"] = hash_password(password)
        with self._engine.begin() as conn:
            if values:
                done = conn.execute(update(_users).where(_users.c.name == name).values(**values))
                if done.rowcount == 0:
                    raise _no_user(name)
            row = conn.execute(select(*_USER_COLUMNS).where(_users.c.name == name)).first()
        if row is None:
            raise _no_user(name)
        return _user_from_row(row)

    @translated("deleting a user")
    def delete_user(self, name: str) -> None:
        """Delete a user and their tokens (the audit log keeps their name)."""
        with self._engine.begin() as conn:
            conn.execute(delete(_tokens).where(_tokens.c.user == name))
            if conn.execute(delete(_users).where(_users.c.name == name)).rowcount == 0:
                raise _no_user(name)

    @translated("checking a password")
    def check_password(self, name: str, password: str) -> UserRecord | None:
        """The user if `password` is theirs and they are enabled, else None. An unknown or
        password-less user costs the same argon2 verification, so the time taken does not
        tell which names exist."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with self._read_engine.connect() as conn:
            row = conn.execute(select(*_USER_COLUMNS).where(_users.c.name == name)).first()
        stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
        try:
            _hasher().verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.password_hash is None or row.disabled:
            return None
        return _user_from_row(row)

    # -- API tokens -----------------------------------------------------------------------------

    @translated("creating an API token")
    def create_token(self, user: str, *, expires_in: timedelta | None = None) -> NewToken:
        """A new token for `user` (UserNotFound if none). The token is in the result and
        nowhere else: only its SHA-256 is stored."""
        token_id, token = new_token()
        now = clock.now()
        expires_at = now + expires_in if expires_in is not None else None
        with self._engine.begin() as conn:
            if conn.execute(select(_users.c.name).where(_users.c.name == user)).first() is None:
                raise _no_user(user)
            conn.execute(insert(_tokens).values(
                id=token_id, user=user, token_hash=token_digest(token), created_at=now,
                expires_at=expires_at, revoked_at=None, last_used_at=None))
        record = TokenRecord(id=token_id, user=user, created_at=now, expires_at=expires_at)
        return NewToken(record=record, token=token)

    @translated("reading API tokens")
    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        query = select(*_TOKEN_COLUMNS).order_by(_tokens.c.created_at, _tokens.c.id)
        if user is not None:
            query = query.where(_tokens.c.user == user)
        with self._read_engine.connect() as conn:
            return [_token_from_row(r) for r in conn.execute(query)]

    @translated("revoking an API token")
    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token (TokenNotFound if no token has this id). Revoking twice keeps the
        first time."""
        now = clock.now()
        with self._engine.begin() as conn:
            conn.execute(update(_tokens).where(_tokens.c.id == token_id,
                                               _tokens.c.revoked_at.is_(None))
                         .values(revoked_at=now))
            row = conn.execute(select(*_TOKEN_COLUMNS).where(_tokens.c.id == token_id)).first()
        if row is None:
            raise TokenNotFound(f"no API token has the id '{token_id}'",
                                hint="see the ids with `cadenza tokens list`")
        return _token_from_row(row)

    @translated("checking an API token")
    def authenticate(self, token: str) -> Principal:
        """Who `token` belongs to. NotAuthenticated, saying why, if it is unknown, expired or
        revoked, or its user is disabled. Updates the token's last_used_at (at most once a
        minute)."""
        if not is_token_shaped(token):
            raise NotAuthenticated("the bearer token is not a Cadenza API token",
                                   hint="create one with `cadenza tokens create --user NAME`")
        query = (select(_tokens.c.id, _tokens.c.expires_at, _tokens.c.revoked_at,
                        _tokens.c.last_used_at, _users.c.name, _users.c.role,
                        _users.c.disabled)
                 .join(_users, _users.c.name == _tokens.c.user)
                 .where(_tokens.c.token_hash == token_digest(token)))
        with self._read_engine.connect() as conn:
            row = conn.execute(query).first()
        now = clock.now()
        if row is None:
            raise NotAuthenticated("unknown API token",
                                   hint="create one with `cadenza tokens create --user NAME`")
        if row.revoked_at is not None:
            raise NotAuthenticated(f"API token {row.id} was revoked",
                                   hint="create a new one with `cadenza tokens create`")
        if row.expires_at is not None and now >= row.expires_at:
            raise NotAuthenticated(
                f"API token {row.id} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC",
                hint="create a new one with `cadenza tokens create --expires 30d`")
        if row.disabled:
            raise NotAuthenticated(f"user '{row.name}' is disabled",
                                   hint="an admin can enable them again")
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            with self._engine.begin() as conn:
                conn.execute(update(_tokens).where(_tokens.c.id == row.id)
                             .values(last_used_at=now))
        return Principal(name=row.name, role=Role(row.role), token_id=row.id)

    # -- secrets --------------------------------------------------------------------------------

    @translated("setting a secret")
    def set_secret(self, name: str, value: str, *, key: bytes) -> SecretInfo:
        """Create or replace a secret; its value is stored encrypted with `key`."""
        check_secret_name(name)
        ciphertext = _fernet(key).encrypt(value.encode("utf-8")).decode("ascii")
        now = clock.now()
        with self._engine.begin() as conn:
            done = conn.execute(update(_secrets).where(_secrets.c.name == name)
                                .values(ciphertext=ciphertext, updated_at=now))
            if done.rowcount == 0:
                conn.execute(insert(_secrets).values(name=name, ciphertext=ciphertext,
                                                     updated_at=now))
        return SecretInfo(name=name, updated_at=now)

    @translated("reading secrets")
    def list_secrets(self) -> list[SecretInfo]:
        """Names and update times, never values."""
        with self._read_engine.connect() as conn:
            rows = conn.execute(select(_secrets.c.name, _secrets.c.updated_at)
                                .order_by(_secrets.c.name))
            return [SecretInfo(name=r.name, updated_at=r.updated_at) for r in rows]

    @translated("deleting a secret")
    def delete_secret(self, name: str) -> None:
        with self._engine.begin() as conn:
            if conn.execute(delete(_secrets).where(_secrets.c.name == name)).rowcount == 0:
                raise SecretNotFound(f"no secret named '{name}'",
                                     hint="see the names with `cadenza secrets list`")

    @translated("reading secrets")
    def load_secrets(self, key: bytes | None | Callable[[], bytes | None],
                     names: Sequence[str] | None = None) -> Secrets:
        """The secrets' values, decrypted (what a run hands its tasks). One SELECT; with no
        secrets stored, the key is not read (`key` may be a function returning it) and
        cryptography not even imported. A secret that `key` cannot decrypt (or with no key
        at all) is listed as unavailable with the reason, so only a task that reads it
        fails."""
        query = SELECT_SECRETS
        if names is not None:
            query = query.where(_secrets.c.name.in_(list(names)))
        with self._read_engine.connect() as conn:
            rows = [(r.name, r.ciphertext) for r in conn.execute(query)]
        return decrypt_secrets(rows, key)

    # -- audit ----------------------------------------------------------------------------------

    @translated("recording an audit entry")
    def record_audit(self, *, who: str, method: str, path: str, status: int,
                     detail: str | None = None, at: datetime | None = None) -> None:
        if detail is not None and len(detail) > MAX_AUDIT_DETAIL:
            detail = detail[:MAX_AUDIT_DETAIL] + "..."
        with self._engine.begin() as conn:
            conn.execute(insert(_audit).values(at=at or clock.now(), who=who[:64],
                                               method=method[:16], path=path, status=status,
                                               detail=detail))

    @translated("reading the audit log")
    def list_audit(self, *, limit: int = 50, before_id: int | None = None,
                   who: str | None = None) -> list[AuditRecord]:
        """Newest first; `before_id` pages on (keyset: ids only grow)."""
        query = select(*_audit.columns).order_by(_audit.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(_audit.c.id < before_id)
        if who is not None:
            query = query.where(_audit.c.who == who)
        with self._read_engine.connect() as conn:
            return [_audit_from_row(r) for r in conn.execute(query)]


def _no_user(name: str) -> UserNotFound:
    return UserNotFound(f"no user named '{name}'", hint="see `cadenza users list`")


def security_store(store: RunStore) -> SecurityStore:
    """The SecurityStore sharing `store`'s engine (one per RunStore)."""
    sec: SecurityStore | None = getattr(store, "_security", None)
    if sec is None:
        sec = SecurityStore(store)
        store._security = sec  # type: ignore[attr-defined]
    return sec


__all__ = ["SecurityStore", "hash_password", "security_store"]
