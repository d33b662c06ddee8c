"""What a run hands its tasks: the secrets a task reads (`Secrets`, what
`get_context().secrets` is), the masking that replaces their values with `***` in task logs
and error text (`Masker`), and the key they are encrypted with (`secret_key`).

What does not belong here: users, roles, tokens, audit records and the rules about secret
names (`core/security.py`, which re-exports these names), encrypting and decrypting
(`store/security.py`). Split from core/security.py so that a run's driver and its worker
processes import only this: the server's records there are six dataclasses, ~25 M
instructions of a cold start (bench/cold_start.py).

Only the standard library here: core imports no third-party package but pydantic.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from cadenza.core.errors import ConfigError, SecretNotFound

if TYPE_CHECKING:
    # Only the callers' paths are used (a worker process, which imports this module, has no
    # other use for pathlib: ~14 M instructions of the forkserver's preload).
    from pathlib import Path

log = logging.getLogger(__name__)

SECRET_KEY_ENV: Final = "CADENZA_SECRET_KEY"
SECRET_KEY_FILE: Final = "secret.key"
MASK: Final = "***"
# Shorter values are not masked: masking "ab" would garble every log that contains it.
MIN_MASKED_LEN: Final = 4


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
