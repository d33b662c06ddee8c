"""Auth, roles, audit and secrets through the live API (issue 13), on SQLite and PostgreSQL:
401 without or with a bad, expired or revoked token, 403 for a too-low role, 2xx for the
right one; the audit log of mutating calls; admin endpoints for users, tokens and secrets
(names only); a secret's value masked in API responses; the bind rule of `cadenza server`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from cadenza.api import create_app
from cadenza.api.auth import check_bind
from cadenza.core import clock
from cadenza.core.errors import ConfigError
from cadenza.core.security import Role, secret_key
from cadenza.engine.api import run_pipeline
from cadenza.store import open_store
from cadenza.store.security import security_store
from tests.fixtures.server import (
    LiveServer,
    make_api_project,
    project_settings_for,
    serve_project,
)
from tests.fixtures.waiting import wait_for


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Team:
    """Three users, one token each, made through the store (as `cadenza users create` does)."""

    def __init__(self, server: LiveServer) -> None:
        sec = security_store(server.store)
        self.sec = sec
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        for name, role in (("vera", Role.VIEWER), ("otto", Role.OPERATOR), ("ada", Role.ADMIN)):
            sec.create_user(name, role, password=None)
            made = sec.create_token(name, expires_in=timedelta(days=1))
            self.tokens[name], self.ids[name] = made.token, made.record.id
        # A user made by another process is seen within the users cache's TTL.
        wait_for(lambda: server.client.get("/api/v1/pipelines").status_code == 401,
                 timeout_s=30, what="the server to notice that users exist")

    def h(self, name: str) -> dict[str, str]:
        return bearer(self.tokens[name])


@pytest.fixture
def team(api_server: LiveServer) -> Team:
    return Team(api_server)


def test_without_users_every_caller_is_the_anonymous_admin(api_server: LiveServer) -> None:
    c = api_server.client
    schema = c.get("/api/v1/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"][
            "securitySchemes"]["bearer"]["description"]}
    assert schema["paths"]["/api/v1/runs"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/api/v1/auth/login"]["post"]
    assert c.get("/api/v1/me").json() == {"name": "anonymous", "role": "admin",
                                          "anonymous": True, "token_id": None}
    assert c.post("/api/v1/pipelines/etl/pause").status_code == 200
    assert c.get("/api/v1/users").json()["items"] == []


def test_a_call_without_a_token_or_with_a_bad_one_is_401(api_server: LiveServer,
                                                         team: Team) -> None:
    c = api_server.client
    bare = c.get("/api/v1/pipelines")
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert "needs an API token" in bare.json()["detail"]
    assert "cadenza tokens create" in bare.json()["hint"]
    basic = c.get("/api/v1/pipelines", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401 and "Bearer <token>" in basic.json()["detail"]
    unknown = c.get("/api/v1/pipelines", headers=bearer("cdz_" + "x" * 43))
    assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown API token"
    assert c.get("/api/v1/pipelines", headers=bearer("nonsense")).status_code == 401
    assert c.post("/api/v1/pipelines/etl/pause").status_code == 401
    # health stays open for probes
    assert c.get("/healthz").status_code == 200


def test_roles_viewer_reads_operator_acts_admin_manages(api_server: LiveServer,
                                                        team: Team) -> None:
    c = api_server.client
    assert c.get("/api/v1/pipelines", headers=team.h("vera")).status_code == 200
    assert c.get("/api/v1/runs", headers=team.h("vera")).status_code == 200
    me = c.get("/api/v1/me", headers=team.h("otto")).json()
    assert me == {"name": "otto", "role": "operator", "anonymous": False,
                  "token_id": team.ids["otto"]}

    refused = c.post("/api/v1/pipelines/etl/pause", headers=team.h("vera"))
    assert refused.status_code == 403
    assert refused.json()["detail"] == ("user 'vera' is a viewer; this needs the operator role "
                                        "or higher")
    paused = c.post("/api/v1/pipelines/etl/pause", headers=team.h("otto"))
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert c.post("/api/v1/pipelines/etl/unpause", headers=team.h("ada")).status_code == 200

    for who in ("vera", "otto"):
        assert c.get("/api/v1/users", headers=team.h(who)).status_code == 403
        assert c.get("/api/v1/secrets", headers=team.h(who)).status_code == 403
        assert c.get("/api/v1/audit", headers=team.h(who)).status_code == 403
    users = c.get("/api/v1/users", headers=team.h("ada")).json()["items"]
    assert [(u["name"], u["role"]) for u in users] == [
        ("ada", "admin"), ("otto", "operator"), ("vera", "viewer")]


def test_an_operator_triggers_a_run_and_a_viewer_cannot(api_server: LiveServer,
                                                        team: Team) -> None:
    paths = api_server.client.get("/api/v1/openapi.json", headers=team.h("vera")).json()["paths"]
    if "/api/v1/pipelines/{name}/runs" not in paths:
        pytest.skip("the trigger route (api helper, slice 2) is not on this branch yet")
    c = api_server.client
    body = {"params": {"n": 2}}
    refused = c.post("/api/v1/pipelines/etl/runs", json=body, headers=team.h("vera"))
    assert refused.status_code == 403
    made = c.post("/api/v1/pipelines/etl/runs", json=body, headers=team.h("otto"))
    assert made.status_code in (200, 201, 202), made.text
    assert made.json()["pipeline"] == "etl"


def test_revoked_expired_and_disabled_tokens_are_refused(api_server: LiveServer,
                                                         team: Team) -> None:
    c = api_server.client
    assert c.get("/api/v1/pipelines", headers=team.h("otto")).status_code == 200
    # Revoked through the API: refused at once.
    done = c.delete(f"/api/v1/tokens/{team.ids['otto']}", headers=team.h("ada"))
    assert done.status_code == 200 and done.json()["status"] == "revoked"
    gone = c.get("/api/v1/pipelines", headers=team.h("otto"))
    assert gone.status_code == 401 and "was revoked" in gone.json()["detail"]

    # Revoked by another process (the CLI): refused within the token cache's TTL.
    assert c.get("/api/v1/pipelines", headers=team.h("vera")).status_code == 200
    team.sec.revoke_token(team.ids["vera"])
    wait_for(lambda: c.get("/api/v1/pipelines", headers=team.h("vera")).status_code == 401,
             timeout_s=30, what="the revoked token to be refused")

    # Expired: made a day and a minute ago with a one-day lifetime.
    with clock.use_clock(clock.FakeClock(clock.now() - timedelta(days=1, minutes=1))):
        old = team.sec.create_token("ada", expires_in=timedelta(days=1))
    expired = c.get("/api/v1/pipelines", headers=bearer(old.token))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    # A disabled user's token: refused at once when disabled through the API.
    fresh = c.post("/api/v1/tokens", json={"user": "otto", "expires_in_s": 3600},
                   headers=team.h("ada"))
    assert fresh.status_code == 201
    token = fresh.json()["token"]
    assert token.startswith("cdz_") and fresh.json()["status"] == "active"
    assert c.get("/api/v1/pipelines", headers=bearer(token)).status_code == 200
    assert c.patch("/api/v1/users/otto", json={"disabled": True},
                   headers=team.h("ada")).status_code == 200
    off = c.get("/api/v1/pipelines", headers=bearer(token))
    assert off.status_code == 401 and "disabled" in off.json()["detail"]
    listed = c.get("/api/v1/tokens", params={"user": "otto"}, headers=team.h("ada")).json()
    assert token not in str(listed)
    assert [t["status"] for t in listed["items"]] == ["revoked", "active"]


def test_admins_manage_users_and_changes_apply_at_once(api_server: LiveServer,
                                                       team: Team) -> None:
    c = api_server.client
    made = c.post("/api/v1/users", json={"name": "bea", "role": "viewer", "password": "pw12345"},
                  headers=team.h("ada"))
    assert made.status_code == 201 and made.json()["has_password"] is True
    again = c.post("/api/v1/users", json={"name": "bea", "role": "viewer"},
                   headers=team.h("ada"))
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    bad = c.post("/api/v1/users", json={"name": "bob", "role": "root"}, headers=team.h("ada"))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "role"]
    assert c.get("/api/v1/users/nobody", headers=team.h("ada")).status_code == 404

    token = c.post("/api/v1/tokens", json={"user": "bea"}, headers=team.h("ada")).json()["token"]
    assert c.post("/api/v1/pipelines/etl/pause", headers=bearer(token)).status_code == 403
    promoted = c.patch("/api/v1/users/bea", json={"role": "operator"}, headers=team.h("ada"))
    assert promoted.json()["role"] == "operator"
    assert c.post("/api/v1/pipelines/etl/pause", headers=bearer(token)).status_code == 200
    assert c.delete("/api/v1/users/bea", headers=team.h("ada")).status_code == 204
    assert c.get("/api/v1/pipelines", headers=bearer(token)).status_code == 401
    page = c.get("/api/v1/users", params={"limit": 2}, headers=team.h("ada")).json()
    rest = c.get("/api/v1/users", params={"limit": 2, "cursor": page["next_cursor"]},
                 headers=team.h("ada")).json()
    assert [u["name"] for u in page["items"] + rest["items"]] == ["ada", "otto", "vera"]
    assert rest["next_cursor"] is None


def test_every_mutating_call_is_audited_and_admins_read_it(api_server: LiveServer,
                                                           team: Team) -> None:
    c = api_server.client
    c.post("/api/v1/pipelines/etl/pause", headers=team.h("otto"))
    c.post("/api/v1/pipelines/etl/pause", headers=team.h("vera"))
    c.post("/api/v1/pipelines/etl/unpause")
    c.post("/api/v1/pipelines/nope/pause?why=test", headers=team.h("otto"))
    c.put("/api/v1/secrets/TOKEN", json={"value": "very-secret-value"}, headers=team.h("ada"))
    c.get("/api/v1/pipelines", headers=team.h("otto"))  # a read: not audited
    page = c.get("/api/v1/audit", headers=team.h("ada")).json()
    seen = [(a["who"], a["method"], a["path"], a["status"]) for a in page["items"]]
    assert seen == [
        ("ada", "PUT", "/api/v1/secrets/TOKEN", 200),
        ("otto", "POST", "/api/v1/pipelines/nope/pause", 404),
        ("-", "POST", "/api/v1/pipelines/etl/unpause", 401),
        ("vera", "POST", "/api/v1/pipelines/etl/pause", 403),
        ("otto", "POST", "/api/v1/pipelines/etl/pause", 200),
    ]
    assert page["items"][1]["detail"] == f"token {team.ids['otto']} ?why=test"
    assert "very-secret-value" not in str(page)
    only = c.get("/api/v1/audit", params={"who": "vera"}, headers=team.h("ada")).json()
    assert [a["status"] for a in only["items"]] == [403]
    first = c.get("/api/v1/audit", params={"limit": 2}, headers=team.h("ada")).json()
    more = c.get("/api/v1/audit", params={"limit": 10, "cursor": first["next_cursor"]},
                 headers=team.h("ada")).json()
    assert [a["id"] for a in first["items"] + more["items"]] == [a["id"] for a in page["items"]]


def test_every_route_declares_its_role(tmp_path: Path) -> None:
    """Every /api/v1 route has a role dependency, and every mutating one needs at least an
    operator: a route someone adds without one fails here."""
    names = {"require_viewer": 0, "require_operator": 1, "require_admin": 2}
    app = create_app(project_settings_for(make_api_project(tmp_path / "proj"),
                                          f"sqlite:///{tmp_path / 'c.db'}", tmp_path))
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/api/v1"):
            continue
        if route.path == "/api/v1/auth/login":  # public: how a caller gets a token
            assert not route.dependant.dependencies or all(
                getattr(d.call, "__name__", "") not in names
                for d in route.dependant.dependencies)
            continue
        ranks = [names[d.call.__name__] for d in route.dependant.dependencies
                 if getattr(d.call, "__name__", "") in names]
        assert ranks, f"{route.path} has no role dependency"
        if route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            assert max(ranks) >= 1, f"{sorted(route.methods)} {route.path} lets viewers in"


def test_a_user_logs_in_with_a_password_for_an_expiring_token(api_server: LiveServer,
                                                              team: Team) -> None:
    c = api_server.client
    team.sec.update_user("otto", password="correct horse")
    got = c.post("/api/v1/auth/login", json={"name": "otto", "password": "correct horse",
                                              "expires_in_s": 3600})
    assert got.status_code == 200, got.text
    token = got.json()["token"]
    assert got.json()["user"] == "otto" and got.json()["expires_at"] is not None
    assert c.get("/api/v1/me", headers=bearer(token)).json()["name"] == "otto"
    for body in ({"name": "otto", "password": "wrong"}, {"name": "nobody", "password": "x"},
                 {"name": "vera", "password": "x"}):  # vera has no password
        refused = c.post("/api/v1/auth/login", json=body)
        assert refused.status_code == 401
        assert refused.json()["detail"].startswith("wrong user name or password")
    team.sec.update_user("otto", disabled=True)
    assert c.post("/api/v1/auth/login", json={"name": "otto", "password": "correct horse"}
                  ).status_code == 401
    audit = c.get("/api/v1/audit", headers=team.h("ada")).json()["items"]
    assert [(a["who"], a["status"]) for a in audit if a["path"] == "/api/v1/auth/login"] == [
        ("-", 401), ("-", 401), ("-", 401), ("-", 401), ("otto", 200)]
    assert "correct horse" not in str(audit)


SECRET = "sk-live-5be1a8c2d4"
USES_SECRET = '''
from cadenza import get_context, pipeline, task


@task
def leaky() -> None:
    key = get_context().secrets["API_KEY"]
    print("the key is", key, flush=True)
    raise RuntimeError(f"the service refused {key}")


@pipeline
def uses_secret():
    leaky()
'''


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_secrets_are_set_by_name_and_masked_in_api_responses(db_url: str, tmp_path: Path,
                                                             executor: str) -> None:
    home = tmp_path / "home"
    with serve_project(db_url, tmp_path, {"uses_secret.py": USES_SECRET}) as live:
        app, settings, c = live.app, live.settings, live.client
        put = c.put("/api/v1/secrets/API_KEY", json={"value": SECRET})
        assert put.status_code == 200 and SECRET not in put.text
        assert put.json()["name"] == "API_KEY"
        assert (home / "secret.key").stat().st_mode & 0o077 == 0
        listed = c.get("/api/v1/secrets")
        assert [s["name"] for s in listed.json()["items"]] == ["API_KEY"]
        assert SECRET not in listed.text
        bad = c.put("/api/v1/secrets/bad%20name", json={"value": "x"})
        assert bad.status_code == 400 and "cannot be a secret name" in bad.json()["detail"]

        plan = app.state.catalog.get().get("uses_secret")
        result = run_pipeline(plan, {}, executor=executor, settings=settings)
        run = c.get(f"/api/v1/runs/{result.run_id}")
        assert run.status_code == 200 and run.json()["state"] == "failed"
        assert SECRET not in run.text
        logs = c.get(f"/api/v1/runs/{result.run_id}/tasks/leaky/logs")
        assert logs.status_code == 200
        assert "the key is ***" in logs.json()["text"]
        assert "RuntimeError: the service refused ***" in logs.json()["text"]
        detail = c.get(f"/api/v1/runs/{result.run_id}/tasks/leaky")
        assert detail.status_code == 200 and "the service refused ***" in detail.text
        everything = [run.text, logs.text, detail.text]
        for path in _task_paths(c, result.run_id, "leaky"):
            got = c.get(path)
            if got.status_code == 200:
                everything.append(got.text)
        joined = "\n".join(everything)
        assert SECRET not in joined
        assert "the service refused ***" in joined
        # the value really reached the task: the store holds the masked error only
        ti = open_store(db_url).get_task_instances(result.run_id)[0]
        assert ti.error is not None and ti.error.message == "the service refused ***"

        assert c.delete("/api/v1/secrets/API_KEY").status_code == 204
        assert c.delete("/api/v1/secrets/API_KEY").status_code == 404


def _task_paths(c: httpx.Client, run_id: str, task: str) -> list[str]:
    """The task-instance read routes this build has (error, log, attempts...)."""
    schema: dict[str, Any] = c.get("/api/v1/openapi.json").json()
    out = []
    for path, ops in schema["paths"].items():
        if "get" not in ops or "{run_id}" not in path or "events" in path:
            continue
        filled = path.replace("{run_id}", run_id).replace("{task_id}", task)
        filled = filled.replace("{map_index}", "-1").replace("{attempt}", "1")
        if "{" not in filled:
            out.append(filled)
    return out


def test_server_refuses_a_non_loopback_bind_until_a_user_exists(db_url: str,
                                                                tmp_path: Path) -> None:
    store = open_store(db_url)
    check_bind("127.0.0.1", store)
    check_bind("::1", store)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0: no user exists") as e:
        check_bind("0.0.0.0", store)
    assert "cadenza users create NAME --role admin" in (e.value.hint or "")
    forced = project_settings_for(make_api_project(tmp_path / "p"), db_url, tmp_path)
    forced = type(forced)(**{**{f: getattr(forced, f) for f in forced.__dataclass_fields__},
                             "extra": {"auth_required": True}})
    check_bind("0.0.0.0", store, settings=forced)
    security_store(store).create_user("ada", Role.ADMIN, password=None)
    check_bind("0.0.0.0", store)
    assert secret_key(tmp_path, create=False) is None  # binding creates no key
