"""Units written by people: memory sizes ("4GiB", "512MB", 1024)."""

from __future__ import annotations

import math
import re
from typing import Any

from cadenza.core.errors import ConfigError

UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: Any, *, task: str | None = None) -> int:
    """Bytes for "4GiB", "512MB", "1.5G", "1024" or a number of bytes.

    Decimal units (KB, MB, GB, TB, or K, M, G, T) are powers of 1000; binary ones
    (KiB, MiB, GiB, TiB, or Ki, Mi, Gi, Ti) are powers of 1024. Case does not matter.
    Anything else raises ConfigError naming the task (when given) and the fix.
    """
    if isinstance(value, bool):
        raise _memory_error(value, task, "a boolean is not an amount of memory")
    if isinstance(value, int):
        if value < 0:
            raise _memory_error(value, task, "memory cannot be negative")
        return value
    if isinstance(value, float):
        if value < 0 or math.isnan(value):
            raise _memory_error(value, task, "memory must be a non-negative number")
        return int(value)
    if not isinstance(value, str):
        raise _memory_error(
            value, task, f"expected a string or a number, got {type(value).__name__}")
    match = _PATTERN.match(value)
    if match is None:
        raise _memory_error(value, task, "not a number followed by a unit")
    number, unit = match.groups()
    factor = UNITS.get(unit.lower())
    if factor is None:
        raise _memory_error(value, task, f"unknown unit '{unit}'")
    return int(float(number) * factor)


def _memory_error(value: object, task: str | None, why: str) -> ConfigError:
    return ConfigError(
        f"invalid memory amount {value!r}: {why}",
        task=task,
        hint='write it like "512MB", "4GiB" or "1.5G" (KB/MB/GB are 1000-based, '
        "KiB/MiB/GiB are 1024-based), or as a number of bytes",
    )
