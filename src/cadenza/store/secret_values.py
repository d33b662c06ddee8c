"""Stored secrets -> the `Secrets` a run hands its tasks: decryption (Fernet, cryptography,
imported only when a secret exists) and the rule for one that cannot be decrypted.

What belongs here: turning (name, ciphertext) rows into `core.security.Secrets`, for both
store paths: `store/security.py` (SQLAlchemy) and the SQLite run path (`sqlite_store.py`,
which imports no SQLAlchemy). What does not: the SELECT (each path runs its own rendering of
`security.SELECT_SECRETS`), encrypting (`store/security.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from cadenza.core.errors import ConfigError
from cadenza.core.task_secrets import Secrets

log = logging.getLogger(__name__)


def fernet(key: bytes) -> Any:
    from cryptography.fernet import Fernet

    return Fernet(key)


def decrypt_secrets(rows: Sequence[tuple[str, str]],
                    key: bytes | None | Callable[[], bytes | None]) -> Secrets:
    """The secrets of `rows` (name, ciphertext), decrypted with `key` (or what it returns:
    read only when there is a row). A secret that `key` cannot decrypt (or with no key at
    all) is listed as unavailable with the reason, so only a task that reads it fails."""
    if not rows:
        return Secrets()
    reason = ("no secret key here: CADENZA_SECRET_KEY is unset and there is no "
              "secret.key in CADENZA_HOME")
    if callable(key):
        try:
            key = key()
        except ConfigError as exc:  # a broken key fails only the tasks reading a secret
            log.warning("secrets cannot be decrypted: %s", exc)
            key, reason = None, exc.message
    if key is None:
        return Secrets(unavailable={name: reason for name, _ in rows})
    from cryptography.fernet import InvalidToken

    box = fernet(key)
    values: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for name, ciphertext in rows:
        try:
            values[name] = box.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            unavailable[name] = "it was encrypted with another secret key"
    if unavailable:
        log.warning("secrets %s cannot be decrypted with this secret key; tasks reading "
                    "them will fail", ", ".join(sorted(unavailable)))
    return Secrets(values, unavailable)
