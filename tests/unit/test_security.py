"""Pure rules of core/security.py: roles, token format, durations, the key file, masking and
the Secrets mapping a task reads."""

from __future__ import annotations

import pickle
import re
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from cadenza.core.errors import ConfigError, SecretNotFound, UsageError
from cadenza.core.security import (
    MASK,
    Masker,
    Role,
    Secrets,
    check_bind_host,
    check_secret_name,
    is_token_shaped,
    new_token,
    parse_duration,
    secret_key,
    token_digest,
)


def test_roles_are_ordered_viewer_operator_admin() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR)
    assert not Role.OPERATOR.allows(Role.ADMIN)
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(UsageError, match="unknown role 'root'"):
        Role.parse("root")


def test_tokens_are_prefixed_random_and_hashed() -> None:
    (id1, t1), (id2, t2) = new_token(), new_token()
    assert t1 != t2 and id1 != id2
    assert t1.startswith("cdz_") and is_token_shaped(t1) and not is_token_shaped("abc")
    assert token_digest(t1) == token_digest(t1) != token_digest(t2)
    assert len(token_digest(t1)) == 64


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("30", "0d", "d", "3y", "-1d"):
        with pytest.raises(UsageError, match="not a duration"):
            parse_duration(bad)


def test_the_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    assert secret_key(tmp_path, create=False, environ={}) is None
    key = secret_key(tmp_path, create=True, environ={})
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key(tmp_path, create=True, environ={}) == key
    assert secret_key(tmp_path, create=False, environ={}) == key


def test_the_environment_key_wins_and_is_checked(tmp_path: Path) -> None:
    env_key = b"A" * 43 + b"="
    assert secret_key(tmp_path, create=True, environ={"CADENZA_SECRET_KEY": env_key.decode()}) \
        == env_key
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(ConfigError, match="not a Fernet key"):
        secret_key(tmp_path, create=True, environ={"CADENZA_SECRET_KEY": "short"})


def test_secret_names_are_checked() -> None:
    assert check_secret_name("OPENAI_API_KEY") == "OPENAI_API_KEY"
    with pytest.raises(UsageError, match="cannot be a secret name"):
        check_secret_name("has space")


def test_masker_replaces_values_longest_first_and_ignores_short_ones() -> None:
    m = Masker(["hunter2", "hunter2-extended", "ab", ""])
    assert m.mask("pw=hunter2-extended and hunter2, ab") == f"pw={MASK} and {MASK}, ab"
    assert m.mask("a.b*c") == "a.b*c"
    assert Masker(["a.b*c"]).mask("x a.b*c y") == f"x {MASK} y"  # regex characters are literal
    assert not Masker([]) and Masker([]).mask("hunter2") == "hunter2"


def test_secrets_mapping_names_the_fix_and_hides_values() -> None:
    s = Secrets({"API_KEY": "sk-12345"}, unavailable={"OLD": "it was encrypted with another key"})
    assert s["API_KEY"] == "sk-12345" and s.get("NOPE") is None and "NOPE" not in s
    with pytest.raises(SecretNotFound, match=r"no secret named 'NOPE' \(secrets set: API_KEY\)"):
        s["NOPE"]
    with pytest.raises(KeyError):  # a KeyError too, as from a dict
        s["NOPE"]
    with pytest.raises(SecretNotFound, match="another key") as info:
        s["OLD"]
    assert "cadenza secrets set OLD" in str(info.value)
    assert "sk-12345" not in repr(s) and "API_KEY=***" in repr(s)
    again = pickle.loads(pickle.dumps(s))
    assert dict(again) == {"API_KEY": "sk-12345"} and "OLD" in again.unavailable
    assert s.masker().mask("key sk-12345!") == f"key {MASK}!"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"])
def test_loopback_binds_need_no_auth(host: str) -> None:
    check_bind_host(host, auth_configured=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_other_binds_need_auth(host: str) -> None:
    with pytest.raises(ConfigError, match=f"refusing to serve on {re.escape(host)}") as info:
        check_bind_host(host, auth_configured=False)
    assert "cadenza users create NAME --role admin" in str(info.value)
    check_bind_host(host, auth_configured=True)
