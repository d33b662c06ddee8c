"""The polled reads answered without FastAPI's machinery (`routes/runs.polled_read`, called
by api/cache.py on a cache miss when the caller is known): through a live server on SQLite
and PostgreSQL, with the response cache off so every request is a miss, each plain run
detail and runs list is answered by the fast path (counted) with exactly the bytes the app's
own route gives (the app answers the same request with an extra parameter that changes
nothing but takes it off the fast path); what the fast path does not take (bad values,
other parameters, an unknown run, a bad cursor) gets the app's answer, 404 and 422
included; and it never lets a request past authentication."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from cadenza.core.security import Role
from cadenza.store import open_store
from cadenza.store.security import security_store
from tests.integration.test_api_cache import add_run, cached_server

# An always-true filter: the route answers it as the plain list, but the fast path does
# not take a query parameter it does not know.
ANY_TIME = {"created_from": "1970-01-01T00:00:00Z"}


def _counted(app: object, client: httpx.Client, path: str, **params: object
             ) -> tuple[httpx.Response, bool]:
    cache = app.state.response_cache  # type: ignore[attr-defined]
    before = cache.fast_reads
    r = client.get(path, params=params)
    return r, cache.fast_reads == before + 1


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "viewer-token"])
def test_fast_reads_equal_the_routes_bytes(db_url: str, tmp_path: Path, auth: bool) -> None:
    with cached_server(db_url, tmp_path, ttl_s=0) as (client, app):
        ids = [add_run(app, "etl") for _ in range(5)]
        if auth:
            sec = security_store(open_store(db_url))
            sec.create_user("vera", Role.VIEWER, password=None)
            token = sec.create_token("vera", expires_in=timedelta(days=1)).token
            client.headers["Authorization"] = f"Bearer {token}"
            app.state.authenticate.forget()  # notice the user now, not within 1 s
            assert client.get("/api/v1/pipelines").status_code == 200  # the token is cached
        first_page = client.get("/api/v1/runs", params={"limit": 2}).json()
        cases: list[tuple[str, dict[str, object]]] = [
            ("/api/v1/runs", {}),
            ("/api/v1/runs", {"pipeline": "etl"}),
            ("/api/v1/runs", {"pipeline": "etl", "limit": 3}),
            ("/api/v1/runs", {"state": ["queued", "failed"]}),
            ("/api/v1/runs", {"pipeline": "nope"}),
            ("/api/v1/runs", {"limit": 2, "cursor": first_page["next_cursor"]}),
            *((f"/api/v1/runs/{run_id}", {}) for run_id in ids),
        ]
        for path, params in cases:
            fast, took_fast = _counted(app, client, path, **params)
            assert fast.status_code == 200 and took_fast, (path, params, fast.text)
            routed, took_fast = _counted(app, client, path, **params, **ANY_TIME)
            assert routed.status_code == 200 and not took_fast
            assert fast.content == routed.content, (path, params)
            assert fast.headers["content-type"] == routed.headers["content-type"]
            assert fast.headers["etag"] == routed.headers["etag"]


def test_what_the_fast_path_does_not_take_gets_the_apps_answer(db_url: str,
                                                               tmp_path: Path) -> None:
    with cached_server(db_url, tmp_path, ttl_s=0) as (client, app):
        run_id = add_run(app)
        for path, params, status, says in [
            ("/api/v1/runs/no-such-run", {}, 404, "no-such-run"),
            ("/api/v1/runs", {"cursor": "not-a-cursor"}, 422, "cursor"),
            ("/api/v1/runs", {"state": "sleeping"}, 422, "state"),
            ("/api/v1/runs", {"limit": 0}, 422, "limit"),
            ("/api/v1/runs", {"limit": "ten"}, 422, "limit"),
            ("/api/v1/runs", {"limit": 501}, 422, "limit"),
            ("/api/v1/runs/" + "x" * 201, {}, 422, "run_id"),
        ]:
            r, took_fast = _counted(app, client, path, **params)
            assert r.status_code == status and says in r.text, (path, params, r.text)
            assert not took_fast
        # Repeated scalars and blank values are the app's to read (it takes the last value).
        r, took_fast = _counted(app, client, "/api/v1/runs",
                                pipeline=["nope", "etl"])  # type: ignore[arg-type]
        assert not took_fast and [i["run_id"] for i in r.json()["items"]] == [run_id]
        r, took_fast = _counted(app, client, "/api/v1/runs", pipeline="")
        assert r.status_code == 200 and not took_fast


def test_the_fast_path_never_skips_authentication(db_url: str, tmp_path: Path) -> None:
    with cached_server(db_url, tmp_path, ttl_s=0) as (client, app):
        run_id = add_run(app)
        sec = security_store(open_store(db_url))
        sec.create_user("vera", Role.VIEWER, password=None)
        made = sec.create_token("vera", expires_in=timedelta(days=1))
        app.state.authenticate.forget()
        for path in ("/api/v1/runs", f"/api/v1/runs/{run_id}"):
            for headers in ({}, {"Authorization": "Bearer cdz_" + "x" * 43},
                            {"Authorization": "Basic dmVyYTpw"}):
                with httpx.Client(base_url=client.base_url, headers=headers) as other:
                    r, took_fast = _counted(app, other, path)
                assert r.status_code == 401 and not took_fast, (path, headers)
        viewer = {"Authorization": f"Bearer {made.token}"}
        with httpx.Client(base_url=client.base_url, headers=viewer) as as_viewer:
            r, took_fast = _counted(app, as_viewer, "/api/v1/runs")
            assert r.status_code == 200 and not took_fast  # the app checks the new token
            r, took_fast = _counted(app, as_viewer, f"/api/v1/runs/{run_id}")
            assert r.status_code == 200 and took_fast  # the token is cached: fast
            sec.revoke_token(made.record.id)
            app.state.authenticate.forget()  # as a revocation through this server does
            r, took_fast = _counted(app, as_viewer, f"/api/v1/runs/{run_id}")
            assert r.status_code == 401 and not took_fast
