"""Users, API tokens, secrets and audit records in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cadenza.core import clock
from cadenza.core.errors import (
    NotAuthenticated,
    SecretNotFound,
    StateConflict,
    TokenNotFound,
    UsageError,
    UserNotFound,
)
from cadenza.core.security import Role, secret_key, token_digest
from cadenza.store import RunStore
from cadenza.store.security import security_store
from cadenza.store.tables import api_tokens_table, secrets_table, users_table


def _raw(store: RunStore, table: object) -> list[dict[str, object]]:
    with store._engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]  # type: ignore[call-overload]


def test_users_are_created_listed_and_their_passwords_hashed(store: RunStore) -> None:
    sec = security_store(store)
    assert sec.count_users() == 0
    ana = sec.create_user("ana", Role.OPERATOR, password="correct horse")
    sec.create_user("bot", Role.VIEWER, password=None)
    assert ana.role is Role.OPERATOR and ana.has_password
    assert [(u.name, u.role, u.has_password) for u in sec.list_users()] == [
        ("ana", Role.OPERATOR, True), ("bot", Role.VIEWER, False)]
    assert sec.count_users() == 2

    stored = {r["name"]: r for r in _raw(store, users_table)}
    assert "correct horse" not in str(stored["ana"]["password_hash"])
    assert str(stored["ana"]["password_hash"]).startswith("$argon2id$")
    assert sec.check_password("ana", "correct horse") is not None
    assert sec.check_password("ana", "wrong") is None
    assert sec.check_password("bot", "") is None

    with pytest.raises(StateConflict, match="already exists"):
        sec.create_user("ana", Role.ADMIN, password="x1234")
    with pytest.raises(UsageError, match="cannot be a user name"):
        sec.create_user("-bad name", Role.ADMIN, password="x1234")
    with pytest.raises(UserNotFound, match="no user named 'zed'"):
        sec.get_user("zed")
    assert sec.update_user("ana", role=Role.ADMIN).role is Role.ADMIN


def test_a_token_is_stored_as_its_digest_and_identifies_its_user(store: RunStore) -> None:
    sec = security_store(store)
    sec.create_user("ana", Role.OPERATOR, password=None)
    made = sec.create_token("ana", expires_in=timedelta(days=30))
    assert made.token.startswith("cdz_")
    rows = _raw(store, api_tokens_table)
    assert len(rows) == 1
    assert made.token not in str(rows[0])
    assert rows[0]["token_hash"] == token_digest(made.token)

    who = sec.authenticate(made.token)
    assert (who.name, who.role, who.token_id) == ("ana", Role.OPERATOR, made.record.id)
    assert sec.list_tokens()[0].last_used_at is not None

    with pytest.raises(NotAuthenticated, match="unknown API token"):
        sec.authenticate(made.token[:-2] + "xx")
    with pytest.raises(NotAuthenticated, match="not a Cadenza API token"):
        sec.authenticate("hunter2")
    with pytest.raises(UserNotFound):
        sec.create_token("nobody")


def test_revoked_expired_and_disabled_tokens_are_refused(store: RunStore) -> None:
    sec = security_store(store)
    sec.create_user("ana", Role.ADMIN, password=None)
    revoked = sec.create_token("ana")
    assert sec.revoke_token(revoked.record.id).revoked_at is not None
    with pytest.raises(NotAuthenticated, match="was revoked"):
        sec.authenticate(revoked.token)
    with pytest.raises(TokenNotFound):
        sec.revoke_token("nope")

    expired = sec.create_token("ana", expires_in=timedelta(seconds=60))
    sec.authenticate(expired.token)
    later = clock.now() + timedelta(seconds=61)
    with clock.use_clock(clock.FakeClock(later)), pytest.raises(NotAuthenticated, match="expired"):
        sec.authenticate(expired.token)

    live = sec.create_token("ana")
    sec.update_user("ana", disabled=True)
    with pytest.raises(NotAuthenticated, match="disabled"):
        sec.authenticate(live.token)
    sec.update_user("ana", disabled=False)
    assert sec.authenticate(live.token).name == "ana"
    assert [t.status(clock.now()) for t in sec.list_tokens("ana")] == [
        "revoked", "active", "active"]

    sec.delete_user("ana")
    assert sec.list_tokens() == []


def test_secrets_are_encrypted_at_rest_and_decrypted_with_the_key(
        store: RunStore, tmp_path: Path) -> None:
    sec = security_store(store)
    key = secret_key(tmp_path, create=True, environ={})
    assert key is not None
    assert sec.load_secrets(key) == {}
    sec.set_secret("API_KEY", "sk-live-1234567890", key=key)
    sec.set_secret("API_KEY", "sk-live-0987654321", key=key)  # replaced
    sec.set_secret("DB_PASSWORD", "pässwörd-ü", key=key)
    assert [s.name for s in sec.list_secrets()] == ["API_KEY", "DB_PASSWORD"]
    stored = str(_raw(store, secrets_table))
    assert "sk-live" not in stored and "pässwörd" not in stored

    loaded = sec.load_secrets(key)
    assert dict(loaded) == {"API_KEY": "sk-live-0987654321", "DB_PASSWORD": "pässwörd-ü"}
    assert "sk-live" not in repr(loaded)

    other = secret_key(tmp_path / "elsewhere", create=True, environ={})
    wrong = sec.load_secrets(other)
    assert len(wrong) == 0
    with pytest.raises(SecretNotFound, match="encrypted with another secret key"):
        wrong["API_KEY"]
    with pytest.raises(SecretNotFound, match="no secret key here"):
        sec.load_secrets(None)["API_KEY"]

    sec.delete_secret("API_KEY")
    with pytest.raises(SecretNotFound, match="no secret named 'API_KEY'"):
        sec.delete_secret("API_KEY")
    assert list(sec.load_secrets(key)) == ["DB_PASSWORD"]


def test_audit_records_page_newest_first(store: RunStore) -> None:
    sec = security_store(store)
    for i in range(5):
        sec.record_audit(who="ana", method="POST", path=f"/api/v1/x/{i}", status=201)
    sec.record_audit(who="bob", method="DELETE", path="/api/v1/secrets/A", status=204,
                     detail="x" * 5000)
    first = sec.list_audit(limit=3)
    assert [a.path for a in first] == ["/api/v1/secrets/A", "/api/v1/x/4", "/api/v1/x/3"]
    assert len(first[0].detail or "") < 2100
    rest = sec.list_audit(limit=10, before_id=first[-1].id)
    assert [a.path for a in rest] == ["/api/v1/x/2", "/api/v1/x/1", "/api/v1/x/0"]
    assert [a.who for a in sec.list_audit(who="bob")] == ["bob"]
