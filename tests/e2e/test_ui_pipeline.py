"""Web UI, pipeline page (issue 14), in headless Chromium against a live server and store:
the graph laid out by dagre (every task a node, every edge drawn, a mapped task one stacked
node), the pipeline's runs, and the trigger form generated from the parameter JSON schema
(types, defaults, client-side validation messages). No console errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cadenza.engine.api import run_pipeline
from tests.fixtures.browser import allow_console, shot
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.browser


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def test_pipeline_graph_runs_and_trigger_form(ui_server: LiveServer, ui_page: Any,
                                              tmp_path: Path) -> None:
    run_id = run_now(ui_server, "nightly_report", days=2)
    page = ui_page
    page.goto(ui_server.base_url + "/pipelines/nightly_report")

    graph = page.get_by_test_id("graph")
    graph.locator("[data-node]").first.wait_for()
    nodes = graph.locator("[data-node]").evaluate_all("ns => ns.map(n => n.dataset.node)")
    assert sorted(nodes) == ["clean", "extract", "publish", "score", "summarise"]
    assert graph.locator("path.edge").count() == 5
    # dagre's layers run left to right: each edge's upstream sits left of its downstream.
    xs = {n: graph.locator(f'[data-node="{n}"]').bounding_box()["x"] for n in nodes}
    assert xs["extract"] < xs["clean"] < xs["score"] < xs["summarise"] < xs["publish"]
    score = graph.locator('[data-node="score"]')
    assert score.locator("rect.box").count() == 3  # the stack of a mapped task
    assert "mapped over row" in (score.text_content() or "")
    assert "At 06:00, Monday through Friday" in page.locator(".kv").inner_text()
    shot(page, tmp_path, "pipeline-graph")

    page.get_by_role("link", name="Runs", exact=True).last.click()
    page.wait_for_url(re.compile(r"/pipelines/nightly_report/runs$"))
    row = page.locator(f'tr[data-run="{run_id}"]')
    row.wait_for()
    assert "success" in row.inner_text() and "manual" in row.inner_text()

    # The trigger form: one field per parameter, typed, with its default.
    page.goto(ui_server.base_url + "/pipelines/nightly_report/trigger")
    form = page.get_by_test_id("trigger-form")
    assert form.get_by_label("days").input_value() == "4"
    assert form.get_by_label("days").get_attribute("type") == "number"
    assert form.get_by_label("threshold").input_value() == "0.5"
    assert form.get_by_label("region").input_value() == "eu"
    assert form.get_by_label("dry_run").get_attribute("type") == "checkbox"
    assert not form.get_by_label("dry_run").is_checked()
    # A whole number is checked before anything is sent.
    form.get_by_label("days").fill("2.5")
    form.get_by_role("button", name="Trigger run").click()
    assert form.locator('[data-field-error="days"]').inner_text() == "must be a whole number"
    shot(page, tmp_path, "pipeline-trigger-invalid")
    runs = ui_server.client.get("/api/v1/runs", params={"pipeline": "nightly_report"}).json()
    assert [r["run_id"] for r in runs["items"]] == [run_id]  # nothing was triggered


def test_trigger_form_json_fields_and_server_field_errors(ui_server: LiveServer, ui_page: Any,
                                                          tmp_path: Path) -> None:
    page = ui_page
    page.goto(ui_server.base_url + "/pipelines/data_pipe/trigger")
    form = page.get_by_test_id("trigger-form")
    xs = form.get_by_label("xs")
    assert xs.evaluate("e => e.tagName") == "TEXTAREA" and xs.input_value() == "[1,2,3]"
    xs.fill("[4, 5")
    form.get_by_role("button", name="Trigger run").click()
    assert form.locator('[data-field-error="xs"]').inner_text().startswith("must be a JSON list")
    xs.fill("[4, 5]")
    # A logical date the server cannot read: its 422 is shown on the field it names.
    allow_console(page, r"status of 422")  # the browser's own line for that answer
    form.get_by_label("logical date").fill("not a date")
    form.get_by_role("button", name="Trigger run").click()
    form.locator('[data-field-error="logical_date"]').wait_for()
    assert page.get_by_role("alert").first.is_visible()
    shot(page, tmp_path, "pipeline-trigger-server-error")
    form.get_by_label("logical date").fill("2026-01-31T00:00:00Z")
    form.get_by_role("button", name="Trigger run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]+$"))
    run = ui_server.client.get(f"/api/v1/runs/{page.url.rsplit('/', 1)[1]}").json()
    assert run["params"]["xs"] == [4, 5] and run["logical_date"].startswith("2026-01-31")
    page.locator(".kv", has_text="Logical date").get_by_text("2026").first.wait_for()


def test_a_big_graph_is_laid_out_in_a_worker(ui_server: LiveServer, ui_page: Any,
                                             tmp_path: Path) -> None:
    page = ui_page
    page.goto(ui_server.base_url + "/pipelines/big_graph")
    graph = page.locator('[data-testid=graph][data-layout="worker"]')
    graph.locator("[data-node]").first.wait_for()
    assert graph.locator("[data-node]").count() == 200
    assert graph.locator("path.edge").count() == 180  # 20 chains of 10
    # Each chain is laid out left to right: link, link__1, ... in one row of layers.
    first = graph.locator('[data-node="link"]').bounding_box()
    second = graph.locator('[data-node="link__1"]').bounding_box()
    assert first["x"] < second["x"] and abs(first["y"] - second["y"]) < 1
    shot(page, tmp_path, "pipeline-big-graph")
