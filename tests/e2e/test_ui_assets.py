"""Web UI, assets, pools and SLA misses (issue 14), in headless Chromium against a live
server and store: an asset made by a real run with its versions and lineage, pools created
and their slots set by an admin through the page, the SLA misses page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cadenza.engine.api import run_pipeline
from tests.fixtures.browser import shot
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.browser


def test_asset_versions_and_lineage(ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    plan = ui_server.app.state.catalog.get().get("data_pipe")
    first = run_pipeline(plan, {"n": 6}, executor="inline", settings=ui_server.settings).run_id
    second = run_pipeline(plan, {"n": 8}, executor="inline", settings=ui_server.settings).run_id
    page = ui_page
    page.goto(ui_server.base_url + "/assets")
    row = page.get_by_test_id("assets").locator('tr[data-asset="inspect/frames"]')
    row.wait_for()
    assert row.locator("td").nth(1).inner_text() == "2"  # latest version
    row.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/assets/inspect/frames$"))
    lineage = page.get_by_test_id("asset-lineage")
    lineage.get_by_text("Version 2").wait_for()
    assert lineage.get_by_role("link", name="publish").get_attribute("href") == (
        f"/runs/{second}/tasks/publish")
    # The lineage graph: computed from make_frame's output (left), summarize consumed it.
    graph = lineage.get_by_test_id("graph")
    graph.locator("[data-node]", has_text="summarize").wait_for()
    xs = {n: graph.locator("[data-node]", has_text=n).bounding_box()["x"]
          for n in ("make_frame", "inspect/frames v2", "summarize")}
    assert xs["make_frame"] < xs["inspect/frames v2"] < xs["summarize"]
    shot(page, tmp_path, "asset")
    page.get_by_test_id("asset-versions").get_by_role("button", name="v1").click()
    page.wait_for_url(re.compile(r"version=1"))
    lineage.get_by_text("Version 1").wait_for()
    assert lineage.get_by_role("link", name="publish").get_attribute("href") == (
        f"/runs/{first}/tasks/publish")


def test_pools_slots_set_by_an_admin_and_sla_misses_page(ui_server: LiveServer,
                                                        ui_page: Any) -> None:
    page = ui_page
    page.goto(ui_server.base_url + "/pools")
    page.get_by_label("New pool name").fill("gpu")
    page.get_by_label("New pool slots").fill("2")
    page.get_by_role("button", name="Add pool").click()
    slots = page.get_by_label("gpu slots")
    slots.wait_for()
    assert ui_server.client.get("/api/v1/pools/gpu").json()["slots"] == 2
    slots.fill("3")
    slots.press("Enter")
    page.wait_for_function("""async () => {
        const r = await fetch('/api/v1/pools/gpu');
        return (await r.json()).slots === 3;
    }""")
    page.reload()
    assert page.get_by_label("gpu slots").input_value() == "3"
    page.get_by_role("link", name="SLA misses").click()
    page.get_by_text("No run has missed its SLA.").wait_for()
