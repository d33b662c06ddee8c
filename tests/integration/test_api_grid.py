"""GET /api/v1/pipelines/{name}/grid (the UI's runs x tasks grid), on SQLite and
PostgreSQL through a live server: tasks in graph order, one letter per task state per run,
newest run first, keyset pages without gaps or repeats, 404/422 with reasons."""

from __future__ import annotations

from typing import Any

from cadenza.engine.api import run_pipeline
from tests.fixtures.server import LiveServer


def run_now(server: LiveServer, name: str, **params: Any) -> str:
    plan = server.app.state.catalog.get().get(name)
    return run_pipeline(plan, params, executor="inline", settings=server.settings).run_id


def decode(grid: dict[str, Any]) -> list[dict[str, str | None]]:
    letters = {chr(ord("a") + i): s for i, s in enumerate(grid["codes"])}
    return [{t: letters.get(c) for t, c in zip(grid["tasks"], row, strict=True)}
            for row in grid["cells"]]


def test_grid_has_each_runs_task_states_in_graph_order(api_server: LiveServer,
                                                        tmp_path: Any) -> None:
    ok = run_now(api_server, "gated")
    failed = run_now(api_server, "gated", gate=str(tmp_path / "missing"))
    grid = api_server.client.get("/api/v1/pipelines/gated/grid").json()
    assert [r["run_id"] for r in grid["runs"]] == [failed, ok]  # newest first
    assert grid["tasks"].index("start") < grid["tasks"].index("check") < \
        grid["tasks"].index("report")
    assert sorted(grid["tasks"]) == ["check", "report", "side", "start"]
    rows = decode(grid)
    assert rows[1] == dict.fromkeys(grid["tasks"], "success")
    assert (rows[0]["start"], rows[0]["check"], rows[0]["report"], rows[0]["side"]) == (
        "success", "failed", "upstream_failed", "success")
    assert grid["next_cursor"] is None


def test_grid_pages_follow_the_cursor_without_gaps(api_server: LiveServer) -> None:
    made = [run_now(api_server, "plain") for _ in range(5)]
    c = api_server.client
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = c.get("/api/v1/pipelines/plain/grid", params=params).json()
        assert len(page["cells"]) == len(page["runs"]) <= 2
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]


def test_grid_of_an_unknown_pipeline_or_with_a_bad_cursor(api_server: LiveServer) -> None:
    c = api_server.client
    r = c.get("/api/v1/pipelines/nope/grid")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = c.get("/api/v1/pipelines/plain/grid", params={"cursor": "garbage"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]
    r = c.get("/api/v1/pipelines/plain/grid", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]
