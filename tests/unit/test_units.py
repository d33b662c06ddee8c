"""core/units.py: memory sizes written by people."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.core.errors import ConfigError
from cadenza.core.units import parse_memory


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4GiB", 4 * 1024**3),
        ("4gib", 4 * 1024**3),
        ("4Gi", 4 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("1KiB", 1024),
        ("1TiB", 1024**4),
        ("512MB", 512 * 1000**2),
        ("512M", 512 * 1000**2),
        ("2GB", 2 * 1000**3),
        ("1.5G", 1_500_000_000),
        ("0.5GiB", 512 * 1024**2),
        ("10k", 10_000),
        ("1TB", 1000**4),
        ("100", 100),
        ("100B", 100),
        (" 2 GiB ", 2 * 1024**3),
        (1024, 1024),
        (0, 0),
        (2.9, 2),
    ],
)
def test_parse_memory(value: Any, expected: int) -> None:
    assert parse_memory(value) == expected
    assert type(parse_memory(value)) is int


@pytest.mark.parametrize("value", ["4XB", "GiB", "", "-1", "1e3", "four GiB", "4 G i B", None, [4]])
def test_parse_memory_rejects_what_is_not_a_size(value: Any) -> None:
    with pytest.raises(ConfigError, match="invalid memory amount") as info:
        parse_memory(value, task="train")
    assert info.value.task == "train" and "4GiB" in info.value.hint


def test_parse_memory_rejects_negative_numbers_and_bools() -> None:
    with pytest.raises(ConfigError, match="cannot be negative"):
        parse_memory(-1)
    with pytest.raises(ConfigError, match="boolean"):
        parse_memory(True)
