"""Web UI, task instance page (issue 14), in headless Chromium against a live server and
store with real runs: output preview as a table (DataFrame), attempts and their logs (ANSI
colours, search in the URL), error with traceback, a mapped task's instances, cache origin
as a link to the run it came from, lineage of the output, and a running attempt's log
followed live. No console errors."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.states import STATE_COLOURS
from cadenza.engine.api import run_pipeline
from tests.fixtures.browser import shot, wait_painted
from tests.fixtures.server import LiveServer
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.browser


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def test_dataframe_output_log_lineage_and_mapped_instances(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    run_id = run_now(ui_server, "data_pipe", n=12)
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks/make_frame")
    table = page.get_by_test_id("preview-table")
    table.wait_for()
    headers = table.locator("thead th").evaluate_all("ths => ths.map(t => t.firstChild.textContent)")
    assert headers == ["id", "score", "name"]
    assert table.locator("tbody tr").count() == 12
    assert table.locator("tbody tr").nth(3).inner_text().split() == ["3", "0.3", "n3"]
    assert "shape 12 × 3" in page.get_by_test_id("output").inner_text()
    log = page.get_by_test_id("log")
    log.get_by_text("making a frame of 12 rows").wait_for()
    lineage = page.get_by_test_id("lineage")
    # The lineage graph: this output, then what was computed from it, each node a link.
    lineage.locator("[data-node]", has_text="summarize").wait_for()
    xs = {n: lineage.locator("[data-node]", has_text=n).bounding_box()["x"]
          for n in ("this output", "publish", "summarize")}
    assert xs["this output"] < xs["publish"] < xs["summarize"]
    shot(page, tmp_path, "task-instance-frame")
    lineage.locator("[data-node]", has_text="publish").click()
    page.wait_for_url(re.compile(rf"/runs/{run_id}/tasks/publish$"))

    # A mapped task: its instances, each a link to its own URL.
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks/square")
    instances = page.get_by_test_id("instances").locator("a")
    instances.first.wait_for()
    assert instances.evaluate_all("as => as.map(a => a.textContent)") == ["0", "1", "2"]
    instances.nth(2).click()
    page.wait_for_url(re.compile(r"/tasks/square\?map_index=2$"))
    page.get_by_test_id("output").get_by_text("9").wait_for()  # 3 * 3
    assert "[2]" in page.locator("h1").inner_text()


def test_failed_attempts_error_traceback_and_log_search(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    run_id = run_now(ui_server, "failing", n=7)
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks/explode")
    error = page.get_by_test_id("ti-error")
    error.wait_for()
    assert "builtins.ValueError: bad value 7" in error.inner_text()
    assert "Traceback" in error.inner_text() and "raise ValueError" in error.inner_text()
    attempts = page.get_by_test_id("attempts").locator("tbody tr")
    attempts.nth(1).wait_for()
    assert attempts.count() == 2
    # The log is fetched after the instance: wait for it (a loaded CI saw it not there yet).
    page.get_by_test_id("log").get_by_text("attempt 2: about to fail").wait_for()
    attempts.nth(0).get_by_role("button", name="1").click()
    page.wait_for_url(re.compile(r"attempt=1"))
    page.get_by_test_id("log").get_by_text("attempt 1: about to fail").wait_for()
    page.get_by_label("Search the log").fill("about to")
    page.wait_for_url(re.compile(r"q=about"))
    # the URL changes first, the filtered log follows
    lines = page.get_by_test_id("log").locator(".log-line")
    wait_for(lambda: lines.count() == 1, what="the log filtered to the one matching line")
    assert page.get_by_test_id("log").locator("mark").inner_text() == "about to"
    page.get_by_text("1 line", exact=True).wait_for()  # the count of matching lines
    shot(page, tmp_path, "task-instance-failed")

    # The Gantt draws both attempts: the first in up_for_retry's colour, the second failed.
    page.goto(f"{ui_server.base_url}/runs/{run_id}/gantt")
    canvas = page.get_by_test_id("gantt").locator("canvas")
    canvas.wait_for()
    wait_painted(page, "[data-testid=gantt] canvas",
                 {STATE_COLOURS["up_for_retry"]: 21, STATE_COLOURS["failed"]: 21})



def test_the_gantt_gives_an_attempt_retried_at_once_a_bar_of_its_own(
        ui_server: LiveServer, ui_page: Any) -> None:
    """A quick failure retried at once, late in a run a minute long: both attempts fall on the
    same pixel of the time axis, and the first must still show. The run is real; the API's
    answers are given a timeline of that shape on their way to the page (CI once drew the
    real one this way under load, and the first attempt vanished under the second)."""
    run_id = run_now(ui_server, "failing", n=7)
    at = _at_ms(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))

    def run_detail(route: Any) -> None:
        body = route.fetch().json()
        (ti,) = body["task_instances"]
        ti.update(queued_at=at(59_999), started_at=at(59_999), ended_at=at(60_000))
        # a task before it makes the run a minute long
        earlier = dict(ti, task_id="warm_up", state="success", attempts=1, duration_s=59.9,
                       queued_at=at(0), started_at=at(0), ended_at=at(59_900))
        body["task_instances"] = [earlier, ti]
        route.fulfill(json=body)

    def attempts(route: Any) -> None:
        body = route.fetch().json()
        first, second = body["items"]
        first.update(started_at=at(59_998), ended_at=at(59_999))
        second.update(started_at=at(59_999), ended_at=at(60_000))
        route.fulfill(json=body)

    page = ui_page
    page.route(re.compile(rf"/api/v1/runs/{run_id}(\?.*)?$"), run_detail)
    page.route(re.compile(rf"/api/v1/runs/{run_id}/tasks/explode/attempts(\?.*)?$"), attempts)
    page.goto(f"{ui_server.base_url}/runs/{run_id}/gantt")
    canvas = page.get_by_test_id("gantt").locator("canvas")
    canvas.wait_for()
    # Both attempts at once: the rows are drawn before the attempts are read, and until then
    # the task is one failed bar (CI once counted the retry's colour in that frame).
    wait_painted(page, "[data-testid=gantt] canvas",
                 {STATE_COLOURS["failed"]: 21, STATE_COLOURS["up_for_retry"]: 3 * 14})  # 3 x 14 px


def _at_ms(base: datetime) -> Any:
    return lambda ms: (base + timedelta(milliseconds=ms)).isoformat()


def test_ansi_colours_and_cache_origin_link(ui_server: LiveServer, ui_page: Any,
                                            tmp_path: Path) -> None:
    flaky = run_now(ui_server, "flaky")
    first = run_now(ui_server, "nightly_report", days=2)
    second = run_now(ui_server, "nightly_report", days=2)
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{flaky}/tasks/prepare")
    green = page.get_by_test_id("log").locator("span.ansi-32.ansi-bold")
    green.wait_for()
    assert green.inner_text() == "ready"
    assert page.get_by_test_id("log").locator("span.ansi-31").inner_text() == "red"
    assert "\x1b" not in page.get_by_test_id("log").inner_text()

    page.goto(f"{ui_server.base_url}/runs/{second}/tasks/extract")
    origin = page.get_by_test_id("cache-origin")
    origin.wait_for()
    assert page.locator(".badge").first.inner_text() == "cached"
    origin.get_by_role("link").click()
    page.wait_for_url(re.compile(rf"/runs/{first}(/tasks/extract)?$"))
    shot(page, tmp_path, "task-instance-cache-origin")


def test_a_running_attempts_log_is_followed_live(ui_server: LiveServer, ui_page: Any,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "chatty"
    folder.mkdir()
    plan = ui_server.app.state.catalog.get().get("slow_logger")
    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(run_pipeline(
        plan, {"folder": str(folder)}, executor="inline", settings=ui_server.settings).run_id),
        daemon=True)
    thread.start()
    try:
        wait_for(lambda: (folder / "started").exists(), timeout_s=60, what="chatty to start")
        run_id = ui_server.client.get("/api/v1/runs", params={"pipeline": "slow_logger"}
                                      ).json()["items"][0]["run_id"]
        page = ui_page
        page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks/chatty")
        log = page.get_by_test_id("log")
        log.get_by_text("first line").wait_for()
        page.locator(".live-dot", has_text="following").wait_for()
        (folder / "release").write_text("go")
        log.get_by_text("second line").wait_for()  # appended by the stream, no reload
        page.wait_for_function(
            "() => ![...document.querySelectorAll('.live-dot')].some(e => e.textContent.includes('following'))")
    finally:
        (folder / "release").write_text("go")
        thread.join(timeout=60)
    assert done == [run_id]


def test_a_secret_is_masked_in_the_log_and_the_error(ui_server: LiveServer, ui_page: Any,
                                                     tmp_path: Path) -> None:
    secret = "s3cr3t-value-4711"
    assert ui_server.client.put("/api/v1/secrets/SERVICE_KEY",
                                json={"value": secret}).status_code == 200
    run_id = run_now(ui_server, "with_secret")
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks/call_service")
    page.get_by_test_id("log").get_by_text("calling the service with ***").wait_for()
    assert "the service refused ***" in page.get_by_test_id("ti-error").inner_text()
    assert secret not in page.content()
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks")
    page.get_by_test_id("task-list").locator('tr[data-task="call_service"]').wait_for()
    assert secret not in page.content()
    shot(page, tmp_path, "task-instance-secret-masked")
