"""Web UI, a pipeline's runs x tasks grid (issue 14), in headless Chromium against a live
server and store with real runs: a column per run (oldest left), a row per task in graph
order, each cell drawn on the canvas in its state's colour; a cell opens its task instance."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.states import STATE_COLOURS
from cadenza.engine.api import run_pipeline
from tests.fixtures.browser import shot
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.browser

CELL, LABEL, HEAD = 16, 190, 26  # frontend/src/components/Grid.tsx


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def test_grid_draws_each_run_and_task_in_its_state_colour(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    failed = run_now(ui_server, "flaky", gate=str(gate))
    gate.write_text("open")
    ok = run_now(ui_server, "flaky", gate=str(gate))
    for i in range(10):  # more history, so the grid (and its README picture) has a pattern
        run_now(ui_server, "flaky", gate=str(gate if i % 3 else tmp_path / "closed"))
    page = ui_page
    page.goto(f"{ui_server.base_url}/pipelines/flaky/grid")
    grid = page.get_by_test_id("grid")
    grid.wait_for()
    assert (grid.get_attribute("data-runs"), grid.get_attribute("data-tasks")) == ("12", "3")

    def colour_at(col: int, row: int) -> str:
        return grid.locator("canvas").evaluate(  # type: ignore[no-any-return]
            """(c, [x, y]) => {
                const d = window.devicePixelRatio || 1;
                const p = c.getContext('2d').getImageData(Math.round(x * d), Math.round(y * d), 1, 1).data;
                return '#' + [p[0], p[1], p[2]].map(v => v.toString(16).padStart(2, '0')).join('');
            }""", [LABEL + col * CELL + 7, HEAD + row * CELL + 7])

    # Rows prepare, step, finish (graph order); column 0 the failed run, 1 the newer one.
    assert [colour_at(0, r) for r in range(3)] == [
        STATE_COLOURS["success"], STATE_COLOURS["failed"], STATE_COLOURS["upstream_failed"]]
    assert [colour_at(1, r) for r in range(3)] == [STATE_COLOURS["success"]] * 3
    assert colour_at(0, -1) == STATE_COLOURS["failed"]  # the run header
    shot(page, tmp_path, "pipeline-grid")

    # Clicks are placed on the grid where it is at the time of the click: the pipeline's panel
    # above it comes from its own request and moves the grid down when it arrives.
    page.locator(".kv").wait_for()
    grid.click(position={"x": LABEL + 0 * CELL + 7, "y": HEAD + 1 * CELL + 7})
    page.wait_for_url(re.compile(rf"/runs/{failed}/tasks/step$"))
    page.go_back()
    grid.wait_for()
    page.locator(".kv").wait_for()
    grid.click(position={"x": LABEL + 1 * CELL + 7, "y": 10})
    page.wait_for_url(re.compile(rf"/runs/{ok}$"))
