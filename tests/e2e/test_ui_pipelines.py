"""Web UI, pipelines page (issue 14), in headless Chromium against a live server and store
holding real runs: schedule human-readable and as cron, next run, last runs as coloured
squares linking to their runs, the paused switch (through the API), search and tag filter
in the URL, both themes. No console errors (the ui_page fixture fails on any)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.engine.api import run_pipeline
from tests.fixtures.browser import HeldAnswer, shot
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.browser


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def test_pipelines_page_shows_schedules_runs_and_toggles_pause(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    ok = run_now(ui_server, "nightly_report", days=3)
    failed = run_now(ui_server, "flaky", gate=str(tmp_path / "never"))
    page = ui_page
    page.goto(ui_server.base_url + "/")

    table = page.get_by_test_id("pipelines")
    row = table.locator('tr[data-pipeline="nightly_report"]')
    row.wait_for()
    names = table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.pipeline)")
    listed = ui_server.client.get("/api/v1/pipelines").json()["items"]
    assert sorted(names) == sorted(p["name"] for p in listed)
    assert {"etl", "flaky", "live_demo", "nightly_report", "plain"} <= set(names)

    # Schedule in words and as cron.
    assert "At 06:00, Monday through Friday" in row.inner_text()
    assert row.locator("code").inner_text() == "0 6 * * 1-5"
    # Never run and catchup=False: the scheduler's next tick creates its run.
    assert row.get_by_test_id("next-run").inner_text() == "due now"
    assert "manual" in table.locator('tr[data-pipeline="plain"]').inner_text()

    # Last runs: one square per run, in its state's colour, linking to the run.
    square = row.locator(".square")
    assert square.count() == 1 and square.get_attribute("data-state") == "success"
    assert square.get_attribute("href") == f"/runs/{ok}"
    flaky_square = table.locator('tr[data-pipeline="flaky"] .square')
    assert flaky_square.get_attribute("data-state") == "failed"
    assert flaky_square.get_attribute("href") == f"/runs/{failed}"
    colour = flaky_square.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(220, 38, 38)"  # core/states.py STATE_COLOURS["failed"]
    shot(page, tmp_path, "pipelines-light")

    # Pause through the switch: the API says paused, the next run goes away.
    switch = row.get_by_role("switch")
    assert switch.is_checked()
    row.locator(".switch").click()
    page.wait_for_function(
        "() => !document.querySelector('tr[data-pipeline=\"nightly_report\"] input').checked")
    assert ui_server.client.get("/api/v1/pipelines/nightly_report").json()["paused"] is True
    assert row.get_by_test_id("next-run").inner_text() == "paused"
    page.reload()
    assert not page.locator('tr[data-pipeline="nightly_report"]').get_by_role("switch").is_checked()
    row.locator(".switch").click()
    page.wait_for_function(
        "() => document.querySelector('tr[data-pipeline=\"nightly_report\"] input').checked")
    assert ui_server.client.get("/api/v1/pipelines/nightly_report").json()["paused"] is False

    # Search (kept in the URL) and the tag filter (a server-side filter).
    page.get_by_label("Search pipelines").fill("flak")
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length === 1")
    assert "q=flak" in page.url
    assert table.locator("tbody tr").get_attribute("data-pipeline") == "flaky"
    page.get_by_label("Search pipelines").fill("")
    row.locator(".chip", has_text="reports").click()
    page.wait_for_url(re.compile(r"tag=reports"))
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length === 1")
    assert table.locator("tbody tr").get_attribute("data-pipeline") == "nightly_report"

    # A new run shows up without a reload (the list is read again while the page is open).
    newer = run_now(ui_server, "nightly_report", days=1)
    page.locator(f'tr[data-pipeline="nightly_report"] .square[href="/runs/{newer}"]').wait_for()

    # The dark theme sticks across a reload.
    page.get_by_role("button", name="Toggle theme").click()
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.get_by_test_id("pipelines").locator("tbody tr").first.wait_for()
    shot(page, tmp_path, "pipelines-dark")


def test_a_client_side_url_loads_directly_and_unknown_views_say_so(
        ui_server: LiveServer, ui_page: Any) -> None:
    ui_page.goto(ui_server.base_url + "/no/such/view")
    assert ui_page.get_by_role("heading", name="Not found").is_visible()
    ui_page.get_by_role("link", name="Pipelines").click()
    ui_page.locator('tr[data-pipeline="etl"]').wait_for()
    assert ui_page.url == ui_server.base_url + "/"


def test_a_refresh_answered_after_a_newer_read_never_shows(
        ui_server: LiveServer, ui_page: Any) -> None:
    """The list is read again every 5 s. A refresh sent before a pause was saved, and answered
    after the page had read the paused state, must not put the old state back on screen (it
    did: every answer was shown as it came). The page's clock is the test's, the refresh's
    answer is held, and every text the row's next-run cell ever shows is recorded."""
    page = ui_page
    page.clock.install()
    page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
    page.goto(ui_server.base_url + "/")
    row = page.locator('tr[data-pipeline="nightly_report"]')
    row.get_by_role("switch").wait_for(state="attached")
    assert row.get_by_test_id("next-run").inner_text() == "due now"

    list_url = re.compile(r"/api/v1/pipelines(\?.*)?$")
    late = HeldAnswer(page, list_url)  # the answer as of now: not paused
    page.clock.run_for(5_000)  # the page's refresh timer fires
    late.wait()

    row.locator(".switch").click()  # pause: saved, then the list is read again
    page.wait_for_function(
        "() => !document.querySelector('tr[data-pipeline=\"nightly_report\"] input').checked")
    assert row.get_by_test_id("next-run").inner_text() == "paused"
    page.evaluate("""() => {
        window.seen = [];
        const cell = () => document.querySelector(
            'tr[data-pipeline="nightly_report"] [data-testid=next-run]')?.textContent;
        new MutationObserver(() => window.seen.push(cell())).observe(
            document.querySelector('[data-testid=pipelines]'),
            {subtree: true, childList: true, characterData: true});
    }""")

    late.release()

    # A later refresh, marked, shows: the stale answer came and went before it.
    def marked(route: Any) -> None:
        body = route.fetch().json()
        for p in body["items"]:
            if p["name"] == "nightly_report":
                p["tags"] = [*p.get("tags", []), "refreshed"]
        route.fulfill(json=body)

    page.route(list_url, marked)
    page.clock.run_for(5_000)
    row.locator(".chip", has_text="refreshed").wait_for()
    seen = page.evaluate("window.seen")
    assert set(seen) <= {"paused"}, f"the next-run cell showed {seen}"
    assert not row.get_by_role("switch").is_checked()
