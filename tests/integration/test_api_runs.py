"""REST API, runs (issue 13): trigger (a queued run a scheduler starts; 422 naming the
field), list with filters and keyset pages, detail with task instances, cancel (409 once
ended), resume, retry of one task / a task and its downstream / every failed one. Through a
live uvicorn server on SQLite and PostgreSQL; queued runs are driven the way a scheduler
drives them (claim_queued + drive_run) on the inline executor."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cadenza.api import create_app
from cadenza.core.ids import new_driver_id
from cadenza.engine.api import drive_run
from cadenza.store.scheduling import scheduling_store
from tests.fixtures.server import LiveServer, make_api_project, project_settings_for, serve
from tests.fixtures.waiting import wait_for


def plan_of(server: LiveServer, name: str) -> Any:
    return server.app.state.catalog.get().get(name)


def drive_queued(server: LiveServer, pipeline: str) -> list[str]:
    """What a scheduler does with queued runs: claim them, drive each to its end."""
    runs = scheduling_store(server.store).claim_queued(new_driver_id(), {pipeline: None})
    for run in runs:
        drive_run(run, plan_of(server, pipeline), executor="inline", settings=server.settings)
    return [r.run_id for r in runs]


def trigger(server: LiveServer, pipeline: str, **body: Any) -> dict[str, Any]:
    r = server.client.post(f"/api/v1/pipelines/{pipeline}/runs", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def tasks_of(server: LiveServer, run_id: str) -> dict[str, dict[str, Any]]:
    detail = server.client.get(f"/api/v1/runs/{run_id}").json()
    return {t["task_id"]: t for t in detail["task_instances"]}


def test_trigger_creates_a_queued_run_that_a_scheduler_drives_to_success(
        api_server: LiveServer) -> None:
    run = trigger(api_server, "etl", params={"n": 3, "scale": 2}, tags=["adhoc"])
    assert run["state"] == "queued" and run["pipeline"] == "etl" and run["trigger"] == "manual"
    assert run["params"] == {"n": 3, "scale": 2.0, "label": "x"}
    assert run["tags"] == ["api", "daily", "adhoc"]
    stored = api_server.store.get_run(run["run_id"])
    assert stored.state.value == "queued" and stored.driver_id is None
    before = tasks_of(api_server, run["run_id"])
    assert list(before) == ["numbers", "square", "total"]  # graph order
    assert {t["state"] for t in before.values()} == {"pending"}

    assert drive_queued(api_server, "etl") == [run["run_id"]]
    detail = api_server.client.get(f"/api/v1/runs/{run['run_id']}").json()
    assert detail["state"] == "success" and detail["duration_s"] is not None
    tis = {t["task_id"]: t for t in detail["task_instances"]}
    assert tis["numbers"]["attempts"] == 1 and tis["numbers"]["duration_s"] >= 0
    assert tis["numbers"]["map_summary"] is None and tis["numbers"]["cache_origin"] is None
    assert tis["square"]["map_summary"] == {"count": 3, "states": {"success": 3}}
    assert tis["total"]["state"] == "success"
    assert all(t["map_index"] == -1 for t in detail["task_instances"])  # no children here


def test_trigger_with_bad_params_is_a_422_naming_each_field(api_server: LiveServer) -> None:
    c = api_server.client
    r = c.post("/api/v1/pipelines/etl/runs", json={"params": {"n": "many"}})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "params", "n"] and "integer" in err["msg"]
    r = c.post("/api/v1/pipelines/etl/runs", json={"params": {"nn": 1, "scale": "x"}})
    [err] = r.json()["detail"]  # unknown names first: the rest is checked once they are right
    assert r.status_code == 422 and err["loc"] == ["body", "params", "nn"]
    assert "did you mean 'n'" in err["msg"].lower() and "n, scale, label" in err["msg"]
    r = c.post("/api/v1/pipelines/etl/runs", json={"params": {"n": 1}, "when": "now"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "when"]
    r = c.post("/api/v1/pipelines/etl/runs", json={"logical_date": "2026-01-01T00:00:00"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "logical_date"]
    r = c.post("/api/v1/pipelines/nope/runs", json={})
    assert r.status_code == 404 and "no pipeline named 'nope'" in r.json()["detail"]
    assert api_server.store.list_runs() == []  # nothing was created by any of these


def test_runs_list_filters_and_pages_newest_first_without_gaps_or_repeats(
        api_server: LiveServer) -> None:
    c = api_server.client
    day = datetime(2026, 3, 1, tzinfo=UTC)
    made = [trigger(api_server, "etl", params={"n": 1},
                    logical_date=(day + timedelta(days=i)).isoformat())["run_id"]
            for i in range(5)]
    plain = trigger(api_server, "plain")["run_id"]
    drive_queued(api_server, "plain")
    newest_first = [plain, *reversed(made)]

    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/v1/runs", params=params).json()
        seen += [r["run_id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == newest_first and pages == 3

    def ids(**params: Any) -> list[str]:
        r = c.get("/api/v1/runs", params=params)
        assert r.status_code == 200, r.text
        return [x["run_id"] for x in r.json()["items"]]

    assert ids(pipeline="plain") == [plain]
    assert ids(state="success") == [plain]
    assert ids(state=["success", "queued"]) == newest_first
    assert ids(logical_from=(day + timedelta(days=1)).isoformat(),
               logical_to=(day + timedelta(days=3)).isoformat()) == made[3:0:-1]
    created = [api_server.store.get_run(r).created_at for r in made]
    assert ids(created_from=created[2].isoformat(), pipeline="etl") == made[:1:-1]
    assert ids(created_to=created[1].isoformat()) == made[1::-1]
    assert ids(pipeline="nope") == []
    by_pipeline = c.get("/api/v1/pipelines/etl/runs", params={"limit": 3}).json()
    assert [r["run_id"] for r in by_pipeline["items"]] == made[:1:-1]
    second = c.get("/api/v1/pipelines/etl/runs",
                   params={"limit": 3, "cursor": by_pipeline["next_cursor"]}).json()
    assert [r["run_id"] for r in second["items"]] == made[1::-1]
    assert second["next_cursor"] is None

    r = c.get("/api/v1/runs", params={"created_from": "2026-03-02T00:00Z",
                                      "created_to": "2026-03-01T00:00Z"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "created_from"]
    for name in ("created_from", "created_to", "logical_from", "logical_to"):
        # year 1 at +05:00 is before datetime.min in UTC: a 422 on the field, not a 5xx
        r = c.get("/api/v1/runs", params={name: "0001-01-01T00:00:00+05:00"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", name]
    r = c.get("/api/v1/runs", params={"state": "sleeping"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "state", 0]
    r = c.get("/api/v1/runs", params={"cursor": "WyJ4Il0"})  # ["x"]: not a runs cursor
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert c.get("/api/v1/pipelines/nope/runs").status_code == 404


def test_unknown_run_is_a_404_for_every_run_route(api_server: LiveServer) -> None:
    c = api_server.client
    r = c.get("/api/v1/runs/r-nope")
    assert r.status_code == 404 and r.json()["detail"] == "no run with id 'r-nope'"
    for action in ("cancel", "resume", "retry"):
        r = c.post(f"/api/v1/runs/r-nope/{action}")
        assert r.status_code == 404, (action, r.text)


def test_cancel_a_queued_run_then_cancelling_again_is_a_409_saying_it_ended(
        api_server: LiveServer) -> None:
    run_id = trigger(api_server, "etl")["run_id"]
    r = api_server.client.post(f"/api/v1/runs/{run_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "cancelled" and r.json()["run"]["state"] == "cancelled"
    assert {t["state"] for t in tasks_of(api_server, run_id).values()} == {"cancelled"}
    again = api_server.client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == f"run {run_id} has already ended cancelled: nothing to cancel"
    assert "resume" in again.json()["hint"]


def test_retry_one_failed_task_reruns_it_and_its_blocked_downstream_only(
        api_server: LiveServer) -> None:
    c = api_server.client
    gate = api_server.root / "gate-open"
    run_id = trigger(api_server, "gated", params={"gate": str(gate)})["run_id"]
    drive_queued(api_server, "gated")
    before = tasks_of(api_server, run_id)
    assert c.get(f"/api/v1/runs/{run_id}").json()["state"] == "failed"
    assert (before["check"]["state"], before["report"]["state"]) == ("failed", "upstream_failed")
    assert before["check"]["error"]["type"] == "builtins.ValueError"
    assert "gate file" in before["check"]["error"]["message"]

    r = c.post(f"/api/v1/runs/{run_id}/retry", json={"task_id": "start"})
    assert r.status_code == 409 and "ended success" in r.json()["detail"]
    assert "downstream=true" in r.json()["hint"]
    r = c.post(f"/api/v1/runs/{run_id}/retry", json={"task_id": "chek"})
    assert r.status_code == 404 and "did you mean 'check'" in r.json()["detail"].lower()

    gate.write_text("open")
    r = c.post(f"/api/v1/runs/{run_id}/retry", json={"task_id": "check"})
    assert r.status_code == 200, r.text
    assert r.json()["tasks"] == ["check", "report"] and r.json()["run"]["state"] == "queued"
    busy = c.post(f"/api/v1/runs/{run_id}/retry", json={"task_id": "check"})
    assert busy.status_code == 409 and "is queued" in busy.json()["detail"]

    assert drive_queued(api_server, "gated") == [run_id]
    after = tasks_of(api_server, run_id)
    assert c.get(f"/api/v1/runs/{run_id}").json()["state"] == "success"
    assert {t: after[t]["attempts"] for t in after} == {
        "start": 1, "check": 2, "report": 1, "side": 1}
    assert after["report"]["state"] == "success"

    r = c.post(f"/api/v1/runs/{run_id}/retry", json={})
    assert r.status_code == 409 and "nothing to retry" in r.json()["detail"]


def test_retry_a_task_with_its_downstream_reruns_successful_ones_too(
        api_server: LiveServer) -> None:
    c = api_server.client
    run_id = trigger(api_server, "gated")["run_id"]  # no gate: succeeds
    drive_queued(api_server, "gated")
    r = c.post(f"/api/v1/runs/{run_id}/retry", json={"task_id": "check", "downstream": True})
    assert r.status_code == 200 and r.json()["tasks"] == ["check", "report"]
    drive_queued(api_server, "gated")
    after = tasks_of(api_server, run_id)
    assert {t: after[t]["attempts"] for t in after} == {
        "start": 1, "check": 2, "report": 2, "side": 1}
    assert c.get(f"/api/v1/runs/{run_id}").json()["state"] == "success"


def test_retrying_one_of_two_failed_tasks_leaves_the_other_failed(api_server: LiveServer
                                                                  ) -> None:
    c = api_server.client
    gate = api_server.root / "gate"
    run_id = trigger(api_server, "pair", params={"gate": str(gate)})["run_id"]
    drive_queued(api_server, "pair")
    assert {t: s["state"] for t, s in tasks_of(api_server, run_id).items()} == {
        "start": "success", "check": "failed", "start__1": "success", "check__1": "failed"}
    gate.write_text("open")
    r = c.post(f"/api/v1/runs/{run_id}/retry", json={"task_id": "check"})
    assert r.json()["tasks"] == ["check"]
    drive_queued(api_server, "pair")
    after = tasks_of(api_server, run_id)
    assert (after["check"]["state"], after["check"]["attempts"]) == ("success", 2)
    assert (after["check__1"]["state"], after["check__1"]["attempts"]) == ("failed", 1)
    assert c.get(f"/api/v1/runs/{run_id}").json()["state"] == "failed"
    # Every failed one: the other check now.
    r = c.post(f"/api/v1/runs/{run_id}/retry")
    assert r.status_code == 200 and r.json()["tasks"] == ["check__1"]
    drive_queued(api_server, "pair")
    assert c.get(f"/api/v1/runs/{run_id}").json()["state"] == "success"


def test_resume_requeues_a_failed_run_from_its_point_of_failure(api_server: LiveServer
                                                                ) -> None:
    c = api_server.client
    gate = api_server.root / "gate"
    run_id = trigger(api_server, "gated", params={"gate": str(gate)})["run_id"]
    r = c.post(f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 409 and "is queued" in r.json()["detail"]
    drive_queued(api_server, "gated")
    gate.write_text("open")
    r = c.post(f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 200, r.text
    assert r.json()["tasks"] == ["check", "report"] and r.json()["run"]["state"] == "queued"
    assert r.json()["run"]["ended_at"] is None and r.json()["run"]["error"] is None
    drive_queued(api_server, "gated")
    after = tasks_of(api_server, run_id)
    assert {t: after[t]["attempts"] for t in after} == {
        "start": 1, "check": 2, "report": 1, "side": 1}
    r = c.post(f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 409 and "succeeded: nothing to resume" in r.json()["detail"]


def test_a_cancelled_run_resumed_through_the_api_is_not_cancelled_again(
        api_server: LiveServer) -> None:
    c = api_server.client
    run_id = trigger(api_server, "plain")["run_id"]
    assert c.post(f"/api/v1/runs/{run_id}/cancel").json()["outcome"] == "cancelled"
    assert api_server.store.get_run(run_id).cancel_requested_at is not None
    r = c.post(f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 200 and r.json()["tasks"] == ["hello"]
    assert r.json()["run"]["cancel_requested_at"] is None
    drive_queued(api_server, "plain")
    assert c.get(f"/api/v1/runs/{run_id}").json()["state"] == "success"


HOLD = '''
import time
from pathlib import Path

from cadenza import pipeline, task


@task
def hold(gate: str) -> str:
    while not Path(gate).exists():
        time.sleep(0.02)
    return "released"


@pipeline
def holding(gate: str):
    hold(gate)
'''


def test_cancelling_a_running_run_is_requested_and_its_driver_stops_it(
        tmp_path: Path, db_url: str) -> None:
    root = make_api_project(tmp_path / "proj", files={"holding.py": HOLD})
    (tmp_path / "home").mkdir()
    settings = project_settings_for(root, db_url, tmp_path / "home")
    app = create_app(settings)
    store = app.state.store
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/api/v1/pipelines/holding/runs",
                   json={"params": {"gate": str(tmp_path / "never-opened")}})
        run_id = r.json()["run_id"]
        [run] = scheduling_store(store).claim_queued(new_driver_id(), {"holding": None})
        plan = app.state.catalog.get().get("holding")
        driver = threading.Thread(target=drive_run, args=(run, plan),
                                  kwargs={"executor": "threads", "settings": settings})
        driver.start()
        try:
            wait_for(lambda: store.get_task_instance(run_id, "hold").state.value == "running",
                     what="the task to start")
            r = c.post(f"/api/v1/runs/{run_id}/cancel")
            assert r.status_code == 200, r.text
            assert r.json()["outcome"] == "requested"
            assert r.json()["run"]["cancel_requested_at"] is not None
            wait_for(lambda: store.get_run(run_id).state.is_final, what="the run to end")
        finally:
            (tmp_path / "never-opened").write_text("")  # never leave the task looping
            driver.join(timeout=60)
        detail = c.get(f"/api/v1/runs/{run_id}").json()
        assert detail["state"] == "cancelled"
        assert detail["task_instances"][0]["state"] == "cancelled"
        again = c.post(f"/api/v1/runs/{run_id}/cancel")
        assert again.status_code == 409 and "already ended cancelled" in again.json()["detail"]
