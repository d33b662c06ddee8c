"""Fixture for tests/unit/test_fingerprint.py: a project module whose attributes tasks read as
`fingerprint_settings.SCALE`, and a helper in it that reads a module-level dict."""

from __future__ import annotations

SCALE = 3
CONFIG = {"factor": 2, "layers": [64, 32]}


def factor() -> int:
    return int(CONFIG["factor"])


OFFSET = 1
