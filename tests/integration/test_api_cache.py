"""The response cache and ETags of the polled reads (api/cache.py), through a live server on
SQLite and PostgreSQL: a change made behind the API's back shows once the TTL has passed
(and not before, with a long TTL), a change made through the API shows at once, ETag and
If-None-Match give a 304, and the cache never lets a request past authentication: no token
is still a 401, and an answer cached for an admin is never served to a viewer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cadenza.api import create_app
from cadenza.core.errors import ConfigError
from cadenza.core.security import Role
from cadenza.engine.api import new_run
from cadenza.store import open_store
from cadenza.store.security import security_store
from tests.fixtures.server import make_api_project, project_settings_for, serve
from tests.fixtures.waiting import wait_for


@contextmanager
def cached_server(db_url: str, tmp_path: Path, ttl_s: float
                  ) -> Iterator[tuple[httpx.Client, Any]]:
    root = make_api_project(tmp_path / "proj")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    app = create_app(project_settings_for(root, db_url, home), cache_ttl_s=ttl_s)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        yield client, app


def add_run(app: Any, pipeline: str = "etl") -> str:
    """A run created in the store directly, as a scheduler in another process would."""
    run, tis = new_run(app.state.catalog.get().get(pipeline), {"n": 1}, trigger="manual")
    app.state.store.create_run(run, tis)
    return run.run_id


def run_ids(client: httpx.Client, **params: Any) -> list[str]:
    r = client.get("/api/v1/runs", params=params)
    assert r.status_code == 200, r.text
    return [item["run_id"] for item in r.json()["items"]]


def test_a_change_behind_the_api_shows_after_the_ttl(db_url: str, tmp_path: Path) -> None:
    with cached_server(db_url, tmp_path / "long", ttl_s=3600) as (client, app):
        first = add_run(app)
        assert run_ids(client) == [first]
        second = add_run(app)
        # Within the TTL the cached list answers, without the new run, and so does the
        # cached detail of the first run.
        assert run_ids(client) == [first]
        assert app.state.response_cache.hits >= 1
        assert client.get(f"/api/v1/runs/{second}").status_code == 200  # not cached: read
        # Other queries are other entries: they read the store.
        assert run_ids(client, pipeline="etl") == [second, first]

    with cached_server(db_url, tmp_path / "short", ttl_s=0.3) as (client, app):
        before = run_ids(client)
        newer = add_run(app)
        wait_for(lambda: newer in run_ids(client), timeout_s=30,
                 what="the new run in the list once the cached one expired")
        assert run_ids(client)[1:] == before


def test_a_change_through_this_server_shows_at_once(db_url: str, tmp_path: Path) -> None:
    with cached_server(db_url, tmp_path, ttl_s=3600) as (client, _app):
        assert run_ids(client) == []
        made = client.post("/api/v1/pipelines/etl/runs", json={"params": {"n": 2}})
        assert made.status_code == 201
        assert run_ids(client) == [made.json()["run_id"]]
        assert client.post("/api/v1/pipelines/etl/pause").status_code == 200
        pipelines = client.get("/api/v1/pipelines").json()["items"]
        assert {p["name"]: p["paused"] for p in pipelines}["etl"] is True


def test_etag_and_if_none_match_give_304(db_url: str, tmp_path: Path) -> None:
    with cached_server(db_url, tmp_path, ttl_s=0.3) as (client, app):
        run_id = add_run(app)
        for path in ("/api/v1/runs", f"/api/v1/runs/{run_id}", "/api/v1/pipelines/etl/runs",
                     "/api/v1/pipelines"):
            full = client.get(path)
            etag = full.headers["etag"]
            assert full.status_code == 200 and etag.startswith('"') and full.content
            again = client.get(path, headers={"If-None-Match": etag})
            assert again.status_code == 304, path
            assert again.content == b"" and again.headers["etag"] == etag
            other = client.get(path, headers={"If-None-Match": '"not-this-one"'})
            assert other.status_code == 200 and other.content == full.content
        old = client.get("/api/v1/runs").headers["etag"]
        add_run(app)
        changed = wait_for(
            lambda: (r := client.get("/api/v1/runs", headers={"If-None-Match": old}))
            .status_code == 200 and r, timeout_s=30, what="a 200 once the list changed")
        assert changed.headers["etag"] != old and len(changed.json()["items"]) == 2
        # Not the live streams, logs or other reads: no ETag there.
        attempts = client.get(f"/api/v1/runs/{run_id}/attempts")
        assert attempts.status_code == 200 and "etag" not in attempts.headers


def test_the_cache_never_skips_authentication(db_url: str, tmp_path: Path) -> None:
    with cached_server(db_url, tmp_path, ttl_s=3600) as (client, app):
        run_id = add_run(app)
        sec = security_store(open_store(db_url))
        tokens = {}
        for name, role in (("vera", Role.VIEWER), ("ada", Role.ADMIN)):
            sec.create_user(name, role, password=None)
            tokens[role] = {"Authorization":
                            "Bearer " + sec.create_token(name, expires_in=timedelta(days=1)).token}
        wait_for(lambda: client.get("/api/v1/pipelines").status_code == 401, timeout_s=30,
                 what="the server to notice that users exist")
        cache = app.state.response_cache
        for path in ("/api/v1/runs", f"/api/v1/runs/{run_id}"):
            admin = client.get(path, headers=tokens[Role.ADMIN])
            assert admin.status_code == 200
            hits = cache.hits
            assert client.get(path, headers=tokens[Role.ADMIN]).content == admin.content
            assert cache.hits == hits + 1  # the admin's second ask was answered from the cache
            # Without a token, or with a bad one, the cached answer is not given: 401.
            bare = client.get(path)
            assert bare.status_code == 401 and "needs an API token" in bare.json()["detail"]
            bad = client.get(path, headers={"Authorization": "Bearer cdz_" + "x" * 43})
            assert bad.status_code == 401
            # A viewer never gets what was cached for the admin: plant an admin-only answer
            # under the admin's key and ask as the viewer.
            cache.put(("admin", path, b""), b'{"admin_only": true}', b'"planted"')
            assert client.get(path, headers=tokens[Role.ADMIN]).json() == {"admin_only": True}
            viewer = client.get(path, headers=tokens[Role.VIEWER])
            assert viewer.status_code == 200 and "admin_only" not in viewer.json()
            assert viewer.headers["etag"] != '"planted"'
            assert client.get(path, headers={"If-None-Match": '"planted"'}).status_code == 401
        # An admin-only read stays refused to the viewer (it is not a cached path at all).
        assert client.get("/api/v1/audit", headers=tokens[Role.VIEWER]).status_code == 403


def test_a_bad_cache_ttl_is_a_config_error_naming_the_setting(db_url: str,
                                                              tmp_path: Path) -> None:
    root = make_api_project(tmp_path / "proj")
    (root / "cadenza.toml").write_text('pipelines = ["pipelines/"]\napi_cache_ttl_s = "soon"\n',
                                       encoding="utf-8")
    with pytest.raises(ConfigError, match="api_cache_ttl_s must be a number") as caught:
        create_app(project_settings_for(root, db_url, tmp_path / "home"))
    assert "cadenza.toml" in (caught.value.hint or "")
