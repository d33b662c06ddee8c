"""REST API, pipelines (issue 13): list with schedule, pause state, next run and newest runs;
detail with graph and parameter schema; pause/unpause; health; errors. Through a live
uvicorn server (tests/fixtures/server.py) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cadenza.api import create_app
from cadenza.engine.api import run_pipeline
from cadenza.store.scheduling import scheduling_store
from tests.fixtures.server import LiveServer, make_api_project, project_settings_for, serve


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def test_health_and_readiness_answer_with_the_store_named(api_server: LiveServer) -> None:
    c = api_server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert ready.json()["store"].split(":")[0] in ("sqlite", "postgresql+psycopg")


def test_openapi_schema_is_served_under_api_v1_with_the_pipeline_routes(api_server: LiveServer
                                                                        ) -> None:
    schema = api_server.client.get("/api/v1/openapi.json").json()
    assert "/api/v1/pipelines" in schema["paths"]
    assert "/api/v1/pipelines/{name}" in schema["paths"]
    assert "PipelinePage" in schema["components"]["schemas"]
    assert api_server.client.get("/api/v1/docs").status_code == 200


def test_pipelines_list_shows_schedule_tags_pause_state_and_newest_runs(api_server: LiveServer
                                                                        ) -> None:
    first = run_now(api_server, "etl", n=2)
    second = run_now(api_server, "etl", n=4)
    page = api_server.client.get("/api/v1/pipelines").json()
    assert [p["name"] for p in page["items"]] == ["etl", "gated", "pair", "plain"]
    assert page["next_cursor"] is None and page["import_errors"] == []
    etl = page["items"][0]
    assert etl["schedule"] == "@daily" and etl["tags"] == ["api", "daily"]
    assert etl["paused"] is False and etl["task_count"] == 3
    assert etl["file"] == "pipelines/api_project.py"
    assert etl["description"].startswith("Squares the first n numbers")
    assert [(r["run_id"], r["state"]) for r in etl["last_runs"]] == [
        (second, "success"), (first, "success")]
    assert page["items"][3]["last_runs"] == [] and page["items"][3]["schedule"] is None
    # The scheduler's rule (triggers.cron.next_run_at): nothing created yet and no catchup,
    # so the latest daily interval is due: since the last midnight (UTC) before now.
    due = datetime.fromisoformat(etl["next_run_at"])
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert due in (midnight, midnight - timedelta(days=1)), due  # a test across midnight
    one = api_server.client.get("/api/v1/pipelines", params={"last_runs": 1}).json()
    assert [r["run_id"] for r in one["items"][0]["last_runs"]] == [second]


def test_pipelines_list_pages_by_cursor_and_filters_by_tag(api_server: LiveServer) -> None:
    c = api_server.client
    names, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/v1/pipelines", params=params).json()
        assert len(page["items"]) <= 1
        names += [p["name"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["etl", "gated", "pair", "plain"]
    tagged = c.get("/api/v1/pipelines", params={"tag": "api"}).json()
    assert [p["name"] for p in tagged["items"]] == ["etl", "gated"]


def test_a_cursor_that_is_not_one_is_a_422_naming_the_cursor(api_server: LiveServer) -> None:
    for bad in ("not-a-cursor", "W10", "eyJhIjoxfQ"):  # garbage, [], {"a":1}
        r = api_server.client.get("/api/v1/pipelines", params={"cursor": bad})
        assert r.status_code == 422, r.text
        [err] = r.json()["detail"]
        assert err["loc"] == ["query", "cursor"] and "next_cursor" in err["msg"]
    r = api_server.client.get("/api/v1/pipelines", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_pipeline_detail_has_graph_mapped_markers_edges_and_parameter_schema(
        api_server: LiveServer) -> None:
    d = api_server.client.get("/api/v1/pipelines/etl").json()
    nodes = {n["id"]: n for n in d["nodes"]}
    assert list(nodes) == ["numbers", "square", "total"]
    assert nodes["square"]["mapped"] is True and nodes["square"]["mapped_args"] == ["x"]
    assert nodes["numbers"]["mapped"] is False and nodes["total"]["upstream"] == ["square"]
    assert nodes["total"]["options"]["retries"] == 0
    assert {(e["upstream"], e["downstream"], e["kind"]) for e in d["edges"]} == {
        ("numbers", "square", "data"), ("square", "total", "data")}
    assert [(p["name"], p["type"], p["required"], p["default"]) for p in d["parameters"]] == [
        ("n", "int", False, 3), ("scale", "float", False, 1.0), ("label", "str", False, "x")]
    props = d["params_schema"]["properties"]
    assert props["n"]["type"] == "integer" and props["scale"]["type"] == "number"
    assert d["params_schema"]["additionalProperties"] is False
    assert d["schedule"] == "@daily" and d["catchup"] is False
    assert d["start_date"].startswith("2024-01-01")
    assert d["source"].endswith("api_project.py:etl")


def test_unknown_pipeline_is_a_404_naming_it_and_the_near_miss(api_server: LiveServer) -> None:
    r = api_server.client.get("/api/v1/pipelines/elt")
    assert r.status_code == 404
    body = r.json()
    assert "no pipeline named 'elt'" in body["detail"] and "etl" in body["detail"]
    assert body["type"] == "PipelineNotFound" and "etl, gated, pair, plain" in body["hint"]
    for verb in ("pause", "unpause"):
        assert api_server.client.post(f"/api/v1/pipelines/elt/{verb}").status_code == 404


def test_pause_and_unpause_write_the_schedule_state_every_scheduler_reads(
        api_server: LiveServer) -> None:
    c = api_server.client
    r = c.post("/api/v1/pipelines/etl/pause")
    assert r.status_code == 200 and r.json()["paused"] is True
    sched = scheduling_store(api_server.store)
    assert sched.get_state("etl").paused is True
    assert [p["name"] for p in c.get("/api/v1/pipelines", params={"paused": True}).json()[
        "items"]] == ["etl"]
    assert [p["name"] for p in c.get("/api/v1/pipelines", params={"paused": False}).json()[
        "items"]] == ["gated", "pair", "plain"]
    assert c.get("/api/v1/pipelines/etl").json()["paused"] is True
    r = c.post("/api/v1/pipelines/etl/unpause")
    assert r.status_code == 200 and r.json()["paused"] is False
    assert sched.get_state("etl").paused is False


BROKEN = "from cadenza import pipeline\n\nraise RuntimeError('no config for the broken file')\n"


def test_a_broken_file_is_listed_with_its_error_and_the_others_still_load(
        tmp_path: Path, db_url: str) -> None:
    root = make_api_project(tmp_path / "proj")
    (root / "pipelines" / "broken.py").write_text(BROKEN, encoding="utf-8")
    (tmp_path / "home").mkdir()
    settings = project_settings_for(root, db_url, tmp_path / "home")
    seen: list[datetime] = []

    def next_run_at(plan: Any, state: Any, now: datetime) -> datetime | None:
        seen.append(now)
        return datetime(2030, 1, 2, tzinfo=UTC) if plan.name == "etl" else None

    app = create_app(settings, next_run_at=next_run_at)
    with serve(app) as url, httpx.Client(base_url=url) as c:
        page = c.get("/api/v1/pipelines").json()
        assert [p["name"] for p in page["items"]] == ["etl", "gated", "pair", "plain"]
        [err] = page["import_errors"]
        assert err["file"] == "pipelines/broken.py"
        assert "RuntimeError: no config for the broken file" in err["error"]
        assert page["items"][0]["next_run_at"].startswith("2030-01-02T00:00:00")
        assert page["items"][1]["next_run_at"] is None  # not scheduled: not even asked
        assert len(seen) == 1
        c.post("/api/v1/pipelines/etl/pause")
        assert c.get("/api/v1/pipelines/etl").json()["next_run_at"] is None
        r = c.get("/api/v1/pipelines/broken")
        assert r.status_code == 404 and "1 file(s) failed to import" in r.json()["detail"]
