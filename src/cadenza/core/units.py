"""Units written by people: memory sizes ("4GiB", "512MB", 1024)."""

from __future__ import annotations

import re
from typing import Any

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
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: Any) -> int:
    """Bytes in `value`: an int (bytes) or a string like "4GiB", "512MB", "1.5G"."""
    if isinstance(value, bool):
        raise ValueError(f"memory must be a size like '4GiB', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"memory must be >= 0, got {value!r}")
        return int(value)
    match = _PATTERN.match(str(value))
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(
            f"memory must be a size like '4GiB', '512MB' or a number of bytes, got {value!r}"
        )
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])
