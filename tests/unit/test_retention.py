"""Retention's pure parts and the artifact store's side of the race with concurrent writers
(a local artifact folder; no database)."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from cadenza.artifacts.store import ArtifactStore, claim_artifact
from cadenza.core.errors import ConfigError
from cadenza.core.retention import format_bytes, parse_duration


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
    ("45s", timedelta(seconds=45)), ("2w", timedelta(weeks=2)), (" 1.5H ", timedelta(hours=1.5)),
    ("0s", timedelta(0)),
])
def test_durations_people_write(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "30x", "-1d", "", "1 day"])
def test_a_bad_duration_names_the_option_and_the_fix(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, option="--grace")
    assert f"--grace '{text}' is not a duration" in str(info.value)
    assert "30d" in (info.value.hint or "")


def test_bytes_in_human_units() -> None:
    assert [format_bytes(n) for n in (0, 512, 1536, 12 * 1024**2, int(3.25 * 1024**3))] == [
        "0 B", "512 B", "1.5 KiB", "12.0 MiB", "3.2 GiB"]


def _aged(path: str, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_an_old_unused_artifact_is_deleted_and_its_size_returned(tmp_path: Path) -> None:
    files = ArtifactStore(str(tmp_path))
    uri, _ = files.put_bytes(b"x" * 100, ".bin")
    _aged(uri, 7200)

    assert files.delete(uri, grace_s=3600, dry_run=True) == 100
    assert os.path.exists(uri)
    assert files.delete(uri, grace_s=3600) == 100
    assert not os.path.exists(uri)
    assert files.delete(uri, grace_s=3600) == 0  # already gone
    assert os.listdir(os.path.dirname(uri)) == []  # nothing left aside


def test_a_writer_reusing_the_same_bytes_protects_them_from_gc(tmp_path: Path) -> None:
    files = ArtifactStore(str(tmp_path))
    uri, _ = files.put_bytes(b"same bytes", ".bin")
    _aged(uri, 7200)

    again, _ = files.put_bytes(b"same bytes", ".bin")  # a concurrent run writes them again

    assert again == uri
    assert files.delete(uri, grace_s=3600) is None  # touched: kept
    assert Path(uri).read_bytes() == b"same bytes"
    assert [p for p in os.listdir(os.path.dirname(uri)) if ".gc-" in p] == []


def test_a_cache_hit_protects_the_artifact_it_serves(tmp_path: Path) -> None:
    files = ArtifactStore(str(tmp_path))
    uri, _ = files.put_bytes(b"cached output", ".bin")
    _aged(uri, 7200)

    assert claim_artifact(uri) is True
    assert files.delete(uri, grace_s=3600) is None
    assert claim_artifact(str(tmp_path / "ab" / "missing.bin")) is False


def test_a_writer_that_finds_the_artifact_moved_aside_writes_it_again(tmp_path: Path) -> None:
    files = ArtifactStore(str(tmp_path))
    uri, _ = files.put_bytes(b"payload", ".bin")
    os.rename(uri, uri + ".gc-deadbeef")  # gc has just moved it aside to look at it

    files.put_bytes(b"payload", ".bin")

    assert Path(uri).read_bytes() == b"payload"
