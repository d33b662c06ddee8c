"""Fixtures shared by the integration tests that drive the `cadenza` CLI on a project."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cadenza.core import settings as settings_mod


@pytest.fixture
def project_settings(proj: object, monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[settings_mod.Settings]:
    """This process's settings on the store of the module's `proj` fixture (a CLI test
    project), for tests that write into it directly (say, record event messages)."""
    env = proj.env  # type: ignore[attr-defined]
    monkeypatch.setenv("CADENZA_HOME", env["CADENZA_HOME"])
    monkeypatch.setenv("CADENZA_DATABASE_URL", env["CADENZA_DATABASE_URL"])
    s = settings_mod.load_settings(proj.root)  # type: ignore[attr-defined]
    settings_mod.set_settings(s)
    yield s
    settings_mod.set_settings(None)
