"""Web UI with auth on (issue 14): the login page takes an API token or a user name and
password (wrong ones are refused with the reason), a viewer sees no actions (no trigger, a
disabled pause switch, no retry/resume/clear), an operator does, signing out returns to the
login page."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.security import Role
from cadenza.engine.api import run_pipeline
from cadenza.store.security import security_store
from tests.fixtures.browser import allow_console, shot
from tests.fixtures.server import LiveServer
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.browser


def make_tokens(server: LiveServer) -> dict[str, str]:
    sec = security_store(server.store)
    tokens = {}
    for name, role in (("vera", Role.VIEWER), ("otto", Role.OPERATOR)):
        sec.create_user(name, role, password=f"{name}-secret")
        tokens[name] = sec.create_token(name, expires_in=timedelta(days=1)).token
    wait_for(lambda: server.client.get("/api/v1/pipelines").status_code == 401,
             timeout_s=30, what="the server to notice that users exist")
    return tokens


def signed_in_as(page: Any, who: str) -> None:
    """Wait until the page knows who the user is (before that no page shows actions, so a
    check for missing buttons would prove nothing)."""
    page.get_by_test_id("user").filter(has_text=who).wait_for()


def sign_in(page: Any, token: str) -> None:
    page.get_by_role("link", name="API token").click()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_viewer_sees_no_actions_and_operator_does(ui_server: LiveServer, ui_page: Any,
                                                  tmp_path: Path) -> None:
    plan = ui_server.app.state.catalog.get().get("flaky")
    run_id = run_pipeline(plan, {"gate": str(tmp_path / "never")}, executor="inline",
                          settings=ui_server.settings).run_id
    tokens = make_tokens(ui_server)
    page = ui_page
    allow_console(page, r"status of 401")  # the browser's line for the refused calls

    page.goto(f"{ui_server.base_url}/runs/{run_id}")
    page.wait_for_url(re.compile(r"/login\?next=%2Fruns%2F"))
    sign_in(page, "not-a-token")
    assert "not valid" in page.get_by_role("alert").inner_text()
    shot(page, tmp_path, "login")
    sign_in(page, tokens["vera"])
    page.wait_for_url(re.compile(rf"/runs/{run_id}$"))  # back where the user was going
    page.get_by_test_id("graph").locator('[data-node="step"][data-state="failed"]').wait_for()
    assert "vera (viewer)" in page.get_by_test_id("user").inner_text()
    assert page.get_by_test_id("run-actions").locator("button").count() == 0
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks")
    signed_in_as(page, "vera (viewer)")
    page.get_by_test_id("task-list").locator('tr[data-task="step"]').wait_for()
    assert page.get_by_role("button", name="Clear ↓").count() == 0
    page.goto(f"{ui_server.base_url}/pipelines/flaky")
    signed_in_as(page, "vera (viewer)")
    page.get_by_test_id("graph").wait_for()
    assert page.get_by_role("button", name="Trigger").count() == 0
    assert page.get_by_role("link", name="Trigger").count() == 0
    page.goto(ui_server.base_url + "/")
    signed_in_as(page, "vera (viewer)")
    switch = page.locator('tr[data-pipeline="flaky"]').get_by_role("switch")
    switch.wait_for(state="attached")
    assert switch.is_disabled()
    shot(page, tmp_path, "viewer-pipelines")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    # The operator signs in with a password (POST /auth/login makes the token).
    page.get_by_label("User").fill("otto")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong user name or password" in page.get_by_role("alert").inner_text()
    page.get_by_label("Password").fill("otto-secret")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(ui_server.base_url + "/")
    signed_in_as(page, "otto (operator)")
    page.locator('tr[data-pipeline="flaky"] input[role="switch"]:enabled').wait_for(
        state="attached")
    page.goto(f"{ui_server.base_url}/runs/{run_id}")
    page.get_by_role("button", name="Retry failed").wait_for()
    assert page.get_by_role("button", name="Resume").is_visible()
