"""Web UI, run page (issue 14), in headless Chromium against a live server and store with
real runs: the graph coloured by task state (a mapped task one stacked node with its
count), the Gantt canvas of the attempts, the task list with state filters in the URL,
errors and parameters shown. No console errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.states import STATE_COLOURS
from cadenza.engine.api import run_pipeline
from tests.fixtures.browser import PAINTED, HeldAnswer, shot
from tests.fixtures.server import LiveServer
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.browser


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_a_finished_run_in_graph_gantt_and_task_list(ui_server: LiveServer, ui_page: Any,
                                                     tmp_path: Path) -> None:
    run_id = run_now(ui_server, "nightly_report", days=3, region="us")
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}")
    graph = page.get_by_test_id("graph")
    graph.locator('[data-node="publish"]').wait_for()
    states = graph.locator("[data-node]").evaluate_all(
        "ns => Object.fromEntries(ns.map(n => [n.dataset.node, n.dataset.state]))")
    assert states == dict.fromkeys(["extract", "clean", "score", "summarise", "publish"], "success")
    score = graph.locator('[data-node="score"]')
    assert "×3" in (score.text_content() or "")
    band = score.locator("rect").nth(3)  # the state band after the 3 stacked boxes
    assert band.evaluate("e => getComputedStyle(e).fill") == rgb(STATE_COLOURS["success"])
    assert page.get_by_test_id("run-params").inner_text() == (
        '{"days":3,"threshold":0.5,"region":"us","dry_run":false}')
    assert page.locator(".badge").first.inner_text() == "success"
    shot(page, tmp_path, "run-graph")
    page.get_by_role("button", name="Toggle theme").click()
    shot(page, tmp_path, "run-graph-dark")
    page.get_by_role("button", name="Toggle theme").click()

    # Clicking a node opens its task instance's URL.
    graph.locator('[data-node="summarise"]').click()
    page.wait_for_url(re.compile(rf"/runs/{run_id}/tasks/summarise$"))

    page.goto(f"{ui_server.base_url}/runs/{run_id}/gantt")
    gantt = page.get_by_test_id("gantt")
    gantt.wait_for()
    assert gantt.get_attribute("data-rows") == "5"
    # The canvas has bars in the success colour (drawn, not just a blank element).
    painted = gantt.locator("canvas").evaluate(
        """(c, colour) => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const [r, g, b] = [1, 3, 5].map(i => parseInt(colour.slice(i, i + 2), 16));
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] === r && d[i+1] === g && d[i+2] === b) n++;
            return n;
        }""", STATE_COLOURS["success"])
    assert painted > 50
    shot(page, tmp_path, "run-gantt-mapped")

    # Drill down: the mapped task's name opens its instances' rows (kept in the URL); an
    # instance's row opens that instance.
    box = gantt.bounding_box()
    head, row = 28, 24  # frontend/src/components/Gantt.tsx
    page.mouse.click(box["x"] + 40, box["y"] + head + 2 * row + row / 2)  # "score ×3"
    page.wait_for_url(re.compile(r"/gantt\?open=score$"))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=gantt]').dataset.rows === '8'")
    page.mouse.click(box["x"] + 40, box["y"] + head + 4 * row + row / 2)  # "[1]"
    page.wait_for_url(re.compile(rf"/runs/{run_id}/tasks/score\?map_index=1$"))


def test_the_gantt_draws_attempts_of_visible_length_and_a_retry(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    """model_training (threads: two feature tasks at once; `train` fails, then its retry
    succeeds): the failed attempt's bar is drawn in the up_for_retry colour beside the success
    bars, and the row says it took 2 attempts. Its screenshot is the README's Gantt."""
    plan = ui_server.app.state.catalog.get().get("model_training")
    run_id = run_pipeline(plan, {}, executor="threads", settings=ui_server.settings).run_id
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}/gantt")
    gantt = page.get_by_test_id("gantt")
    gantt.wait_for()
    assert gantt.get_attribute("data-rows") == "5"
    page.wait_for_function("() => document.querySelector('.badge')?.textContent === 'success'")
    canvas = gantt.locator("canvas")
    # The failed first attempt (up_for_retry: it was retried) is drawn once the page has
    # read the retried task's attempts.
    page.wait_for_function(
        f"() => ({PAINTED})(document.querySelector('[data-testid=gantt] canvas'), "
        f"'{STATE_COLOURS['up_for_retry']}') > 200")
    failed = canvas.evaluate(PAINTED, STATE_COLOURS["up_for_retry"])
    succeeded = canvas.evaluate(PAINTED, STATE_COLOURS["success"])
    assert succeeded > 5 * failed, (failed, succeeded)
    box = gantt.bounding_box()
    head, row = 28, 24  # frontend/src/components/Gantt.tsx
    page.mouse.move(box["x"] + 40, box["y"] + head + 3 * row + row / 2)  # train
    assert "train · success" in page.locator(".tooltip").inner_text()
    assert "2 attempts" in page.locator(".tooltip").inner_text()
    page.mouse.move(0, 0)
    shot(page, tmp_path, "run-gantt")


def test_a_failed_run_filters_its_tasks_by_state(ui_server: LiveServer, ui_page: Any,
                                                 tmp_path: Path) -> None:
    run_id = run_now(ui_server, "flaky", gate=str(tmp_path / "missing-gate"))
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks")
    table = page.get_by_test_id("task-list")
    table.locator('tr[data-task="finish"]').wait_for()
    rows = table.locator("tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.task, r.dataset.state])")
    assert rows == [["prepare", "success"], ["step", "failed"], ["finish", "upstream_failed"]]
    assert "ValueError: the gate file" in table.locator('tr[data-task="step"]').inner_text()
    # the button needs the caller's role, from its own request (/me)
    page.get_by_role("button", name="Retry failed").wait_for()
    assert page.get_by_role("button", name="Cancel run").count() == 0

    page.get_by_test_id("state-filter").locator('[data-filter="failed"]').click()
    page.wait_for_url(re.compile(r"state=failed"))
    # the URL changes first, the filtered rows follow (the router renders in a transition)
    wait_for(lambda: table.locator("tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.task)") == ["step"], what="the task list filtered to failed")
    page.get_by_test_id("state-filter").locator('[data-filter="upstream_failed"]').click()
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length === 2")
    shot(page, tmp_path, "run-tasks-failed")
    # The filter is in the URL: a reload (or a shared link) shows the same rows.
    page.reload()
    table.locator('tr[data-task="finish"]').wait_for()
    assert table.locator("tbody tr").count() == 2

    # The runs page filters by state through the URL too.
    page.goto(f"{ui_server.base_url}/runs?state=failed")
    page.get_by_test_id("runs").locator(f'tr[data-run="{run_id}"]').wait_for()
    page.get_by_label("Run state").select_option("success")
    page.wait_for_url(re.compile(r"state=success"))
    page.get_by_text("No run in this state.").wait_for()


def test_a_late_refresh_of_the_runs_list_never_shows_under_a_newer_filter(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    """The runs list is read again every 5 s. A refresh of all runs sent before a state was
    picked, and answered after the filtered list, must not put every run back under the
    filter (it did: each answer replaced the rows as it came)."""
    failed = run_now(ui_server, "flaky", gate=str(tmp_path / "missing-gate"))
    ok = run_now(ui_server, "plain")
    page = ui_page
    page.clock.install()
    page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
    page.goto(f"{ui_server.base_url}/runs")
    table = page.get_by_test_id("runs")
    table.locator(f'tr[data-run="{ok}"]').wait_for()
    runs_url = re.compile(r"/api/v1/runs\?")
    late = HeldAnswer(page, runs_url)  # every run, as of now
    page.clock.run_for(5_000)
    late.wait()

    page.get_by_label("Run state").select_option("failed")
    table.locator(f'tr[data-run="{failed}"]').wait_for()
    wait_for(lambda: table.locator("tbody tr").count() == 1, what="the list filtered to failed")
    page.evaluate("""() => {
        window.seen = [];
        const table = document.querySelector('[data-testid=runs]');
        new MutationObserver(() => window.seen.push(
            [...table.querySelectorAll('tbody tr')].map(r => r.dataset.run))).observe(
            table, {subtree: true, childList: true});
    }""")
    late.release()

    # A later refresh, marked, shows: the late answer came and went before it.
    def marked(route: Any) -> None:
        body = route.fetch().json()
        body["items"].append(dict(body["items"][0], run_id="marked"))
        route.fulfill(json=body)

    page.route(runs_url, marked)
    page.clock.run_for(5_000)
    table.locator('tr[data-run="marked"]').wait_for()
    seen = page.evaluate("window.seen")
    assert all(ok not in rows for rows in seen), f"the filtered list showed {seen}"
