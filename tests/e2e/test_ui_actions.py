"""Web UI actions end to end (issue 14), in headless Chromium against a live server and
store, with queued runs driven the way the scheduler drives them (claim, then drive on the
inline executor) in a thread: trigger from the form -> the run page follows the run's event
stream (no polling) and its graph turns green; cancel a queued run; retry failed tasks;
clear a task and its downstream."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.ids import new_driver_id
from cadenza.engine.api import drive_run, run_pipeline
from cadenza.store.scheduling import scheduling_store
from tests.fixtures.browser import shot
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.browser


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


@contextmanager
def scheduler_drives(server: LiveServer, pipeline: str) -> Iterator[list[str]]:
    """In a thread, what the scheduler does with the pipeline's queued runs: claim them and
    drive each to its end. Yields the claimed run ids (filled in by the thread)."""
    claimed: list[str] = []
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            plan = server.app.state.catalog.get().get(pipeline)
            runs = scheduling_store(server.store).claim_queued(new_driver_id(), {pipeline: None})
            for run in runs:
                claimed.append(run.run_id)
                drive_run(run, plan, executor="inline", settings=server.settings)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test below
            failure.append(exc)

    thread = threading.Thread(target=drive, name=f"drive-{pipeline}", daemon=True)
    thread.start()
    try:
        yield claimed
    finally:
        thread.join(timeout=90)
    assert not thread.is_alive(), "the run did not end"
    if failure:
        raise failure[0]


def node_states(page: Any) -> dict[str, str]:
    return page.get_by_test_id("graph").locator("[data-node]").evaluate_all(  # type: ignore[no-any-return]
        "ns => Object.fromEntries(ns.map(n => [n.dataset.node, n.dataset.state]))")


def test_trigger_from_the_form_then_the_live_graph_turns_green(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    page = ui_page
    gate = tmp_path / "gate"
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(ui_server.base_url + "/pipelines/live_demo/trigger")
    form = page.get_by_test_id("trigger-form")
    form.get_by_role("button", name="Trigger run").click()
    assert form.locator('[data-field-error="gate"]').inner_text() == "required"
    form.get_by_label("gate").fill(str(gate))
    form.get_by_label("tags").fill("from-ui, smoke")
    form.get_by_role("button", name="Trigger run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    run = ui_server.client.get(f"/api/v1/runs/{run_id}").json()
    assert run["state"] == "queued" and run["params"] == {"gate": str(gate)}
    assert {"from-ui", "smoke"} <= set(run["tags"])
    page.get_by_test_id("graph").locator('[data-node="end"]').wait_for()
    assert page.locator(".badge").first.inner_text() == "queued"

    with scheduler_drives(ui_server, "live_demo") as claimed:
        # The stream shows the held task running while it runs...
        page.wait_for_function("""() => document.querySelector('[data-node="hold"]')
                                  ?.dataset.state === 'running'""")
        assert node_states(page)["begin"] == "success"
        assert page.locator(".badge").first.inner_text() == "running"
        shot(page, tmp_path, "run-live-running")
        gate.write_text("open")
        # ...then every node turns green and the run ends, with no page reload.
        page.wait_for_function("""() => [...document.querySelectorAll('[data-node]')]
                                  .every(n => n.dataset.state === 'success')""")
        page.wait_for_function(
            "() => document.querySelector('.badge')?.textContent === 'success'")
    assert claimed == [run_id]
    shot(page, tmp_path, "run-live-done")
    # Live through the event stream, not by polling the run: its detail was read when the
    # page opened and once more at the end.
    detail_reads = [u for u in requests if u.endswith(f"/api/v1/runs/{run_id}")]
    assert 1 <= len(detail_reads) <= 2, detail_reads
    assert any(u.endswith(f"/api/v1/runs/{run_id}/events") for u in requests)


def test_cancel_a_queued_run_from_its_page(ui_server: LiveServer, ui_page: Any) -> None:
    r = ui_server.client.post("/api/v1/pipelines/etl/runs", json={"params": {"n": 2}})
    run_id = r.json()["run_id"]
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}")
    page.get_by_role("button", name="Cancel run").click()
    page.wait_for_function(
        "() => document.querySelector('.badge')?.textContent === 'cancelled'")
    assert ui_server.client.get(f"/api/v1/runs/{run_id}").json()["state"] == "cancelled"
    page.get_by_test_id("graph").locator('[data-node="total"][data-state="cancelled"]').wait_for()
    assert page.get_by_role("button", name="Cancel run").count() == 0
    assert page.get_by_role("button", name="Resume").is_visible()


def test_retry_failed_tasks_then_the_run_succeeds_live(
        ui_server: LiveServer, ui_page: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run_id = run_now(ui_server, "flaky", gate=str(gate))
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}")
    page.get_by_test_id("graph").locator('[data-node="step"][data-state="failed"]').wait_for()
    gate.write_text("open")
    page.get_by_role("button", name="Retry failed").click()
    page.wait_for_function("() => document.querySelector('.badge')?.textContent === 'queued'")
    with scheduler_drives(ui_server, "flaky"):
        page.wait_for_function(
            "() => document.querySelector('.badge')?.textContent === 'success'")
    page.wait_for_function("""() => [...document.querySelectorAll('[data-node]')]
                              .every(n => n.dataset.state === 'success')""")
    tasks = {t["task_id"]: t for t in
             ui_server.client.get(f"/api/v1/runs/{run_id}").json()["task_instances"]}
    assert (tasks["prepare"]["attempts"], tasks["step"]["attempts"]) == (1, 2)
    assert "try 2" in (page.locator('[data-node="step"]').text_content() or "")


def test_clear_a_task_and_its_downstream_from_the_task_list(
        ui_server: LiveServer, ui_page: Any) -> None:
    run_id = run_now(ui_server, "nightly_report", days=2)
    page = ui_page
    page.goto(f"{ui_server.base_url}/runs/{run_id}/tasks")
    row = page.get_by_test_id("task-list").locator('tr[data-task="summarise"]')
    row.get_by_role("button", name="Clear ↓").click()
    page.wait_for_function("() => document.querySelector('.badge')?.textContent === 'queued'")
    with scheduler_drives(ui_server, "nightly_report"):
        page.wait_for_function(
            "() => document.querySelector('.badge')?.textContent === 'success'")
    tasks = {t["task_id"]: t["attempts"] for t in
             ui_server.client.get(f"/api/v1/runs/{run_id}").json()["task_instances"]}
    assert (tasks["extract"], tasks["summarise"], tasks["publish"]) == (1, 2, 2)
