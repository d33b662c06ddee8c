"""The task-instance, artifact, asset, pool, event and SLA endpoints over HTTP (a live
uvicorn server, SQLite and PostgreSQL) after real runs of tests/pipelines/inspect_tasks.py:
detail with attempts, error and traceback, inputs and outputs with previews, logs as byte
ranges and as a live SSE follow, lineage both ways, cursor pages, 404s and 422s."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cadenza.core import settings as settings_mod
from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.scheduling import SlaMissRecord, TriggerEventRecord
from cadenza.core.states import RunState
from cadenza.engine.api import RunResult, run_pipeline
from cadenza.store import RunStore
from cadenza.store.scheduling import scheduling_store
from tests.fixtures.server import serve_project
from tests.fixtures.waiting import wait_for

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
V1 = "/api/v1"


@dataclass
class Server:
    client: httpx.Client
    settings: settings_mod.Settings
    store: RunStore
    app: Any
    base_url: str

    def run(self, name: str, **params: Any) -> RunResult:
        plan = self.app.state.catalog.get().get(name)
        return run_pipeline(plan, params, executor="inline", settings=self.settings)

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(V1 + path, params=params)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    text = (PIPELINES / "inspect_tasks.py").read_text(encoding="utf-8")
    with serve_project(db_url, tmp_path, {"inspect_tasks.py": text}) as live:
        yield Server(client=live.client, settings=live.settings, store=live.store,
                     app=live.app, base_url=live.base_url)


def all_items(server: Server, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = server.get(path, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("more than 100 pages")


def test_task_instance_detail_inputs_outputs_and_previews(server: Server) -> None:
    rid = server.run("data_pipe", n=25, xs=[3, 4, 5]).run_id
    frame = server.get(f"/runs/{rid}/tasks/make_frame")
    assert frame["state"] == "success" and frame["pipeline"] == "data_pipe"
    assert frame["output"]["kind"] == "artifact" and frame["output"]["serializer"] == "parquet-pandas"
    assert [a["attempt"] for a in frame["attempts"]] == [1] and frame["attempts"][0]["has_log"]
    assert frame["inputs"] == [{"name": "n", "index": 0, "source": "param", "task_id": None,
                                "map_index": -1, "param": "n", "element": None,
                                "ref": {"kind": "json", "value": 25, "sha256": None, "uri": None,
                                        "serializer": None, "size_bytes": None,
                                        "type_name": None}}]
    preview = server.get(f"/runs/{rid}/tasks/make_frame/output/preview", rows=3)
    assert preview["kind"] == "dataframe" and preview["shape"] == [25, 3]
    assert [c["name"] for c in preview["columns"]] == ["id", "score", "name"]
    assert preview["rows"] == [{"id": i, "score": i / 10, "name": f"n{i}"} for i in range(3)]
    assert preview["truncated"] is True

    array = server.get(f"/runs/{rid}/tasks/make_array/output/preview")
    assert (array["kind"], array["shape"], array["dtype"]) == ("array", [25, 4], "float64")
    assert array["values"][:5] == [0.0, 1.0, 2.0, 3.0, 4.0]

    combine = server.get(f"/runs/{rid}/tasks/combine")
    assert combine["inputs_from"] == "plan"
    assert [(i["name"], i["task_id"]) for i in combine["inputs"]] == [
        ("frame", "make_frame"), ("arr", "make_array")]
    assert combine["output"] == {"kind": "json", "value": {"rows": 25, "cells": 100},
                                 "sha256": None, "uri": None, "serializer": None,
                                 "size_bytes": None, "type_name": None}
    arr_in = server.get(f"/runs/{rid}/tasks/combine/inputs/arr/preview")
    assert arr_in["kind"] == "array" and arr_in["shape"] == [25, 4]

    mapped = server.get(f"/runs/{rid}/tasks/square")
    assert mapped["map_count"] == 3 and mapped["attempts"] == []
    second = server.get(f"/runs/{rid}/tasks/square", map_index=1)
    assert second["inputs"][0]["element"] == 1 and second["inputs"][0]["ref"]["value"] == 4
    assert server.get(f"/runs/{rid}/tasks/square/output/preview", map_index=2)["value"] == 25


def test_failed_task_error_traceback_attempts_and_logs(server: Server) -> None:
    rid = server.run("failing", n=7).run_id
    ti = server.get(f"/runs/{rid}/tasks/explode")
    assert ti["state"] == "failed"
    assert ti["error"]["type"] == "builtins.ValueError" and ti["error"]["message"] == "bad value 7"
    assert "ValueError: bad value 7" in ti["error"]["traceback"]
    assert [(a["attempt"], a["state"]) for a in ti["attempts"]] == [
        (1, "up_for_retry"), (2, "failed")]
    assert all("bad value 7" in a["error"]["traceback"] for a in ti["attempts"])
    page = all_items(server, f"/runs/{rid}/tasks/explode/attempts", 1)
    assert [a["attempt"] for a in page] == [1, 2]

    whole = server.get(f"/runs/{rid}/tasks/explode/logs", attempt=1)
    assert "attempt 1: about to fail" in whole["text"] and whole["complete"]
    assert whole["offset"] == 0 and whole["next_offset"] == whole["size"] and not whole["live"]
    newest = server.get(f"/runs/{rid}/tasks/explode/logs")
    assert newest["attempt"] == 2 and "attempt 2: about to fail" in newest["text"]
    # Byte ranges: read attempt 2 five bytes at a time; the pieces make the whole.
    text, offset = "", 0
    for _ in range(10_000):
        part = server.get(f"/runs/{rid}/tasks/explode/logs", attempt=2, offset=offset, limit=5)
        text += part["text"]
        offset = part["next_offset"]
        if part["complete"]:
            break
    assert text == newest["text"]
    tail = server.get(f"/runs/{rid}/tasks/explode/logs", attempt=2, offset=-10)
    assert tail["text"] == newest["text"][-10:] and tail["offset"] == newest["size"] - 10
    # The log of a failure ends with its traceback.
    assert "ValueError: bad value 7" in newest["text"]


def test_live_follow_streams_a_running_attempt_until_it_ends(server: Server,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "gate"
    folder.mkdir()
    result: list[RunResult] = []
    runner = threading.Thread(target=lambda: result.append(
        server.run("slow_logger", folder=str(folder))))
    runner.start()
    try:
        wait_for(lambda: (folder / "started").exists(), what="the task to start")
        run = server.store.list_runs(pipeline="slow_logger", limit=1)[0]
        live = server.get(f"/runs/{run.run_id}/tasks/chatty/logs")
        assert live["live"] and not live["complete"] and "first line" in live["text"]
        events: list[tuple[str, dict[str, Any], str | None]] = []
        url = f"{V1}/runs/{run.run_id}/tasks/chatty/logs/follow"
        with server.client.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in _sse_events(response.iter_lines()):
                events.append(event)
                if event[0] == "log" and "first line" in event[1]["text"]:
                    (folder / "release").write_text("go")  # only now does it write more
                if event[0] == "end":
                    break
    finally:
        (folder / "release").write_text("go")
        runner.join(timeout=120)
    logs = [e for e in events if e[0] == "log"]
    text = "".join(e[1]["text"] for e in logs)
    assert "first line" in text and "second line" in text
    assert text.index("first line") < text.index("second line")
    assert [e[2] for e in logs] == [str(e[1]["next_offset"]) for e in logs]  # id = offset
    end = events[-1]
    assert end[0] == "end" and end[1]["state"] == "success" and end[1]["attempt"] == 1
    # Resuming from an event id replays nothing before it.
    first_id = logs[0][2]
    with server.client.stream("GET", url, headers={"Last-Event-ID": str(first_id)}) as again:
        rest = list(_sse_events(again.iter_lines()))
    assert "".join(e[1]["text"] for e in rest if e[0] == "log") == text[int(str(first_id)):]
    assert rest[-1][0] == "end"


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    event, data, id_ = "message", "", None
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads(data), id_
            event, data, id_ = "message", "", None
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            id_ = line[4:]


def test_follow_of_a_finished_attempt_sends_the_whole_log_then_end(server: Server) -> None:
    rid = server.run("failing", n=3).run_id
    url = f"{V1}/runs/{rid}/tasks/explode/logs/follow"
    with server.client.stream("GET", url, params={"attempt": 1}) as response:
        events = list(_sse_events(response.iter_lines()))
    assert events[-1][0] == "end" and events[-1][1]["state"] == "up_for_retry"
    assert "attempt 1: about to fail" in "".join(e[1]["text"] for e in events[:-1])
    cached_rid = server.run("data_pipe", n=2, xs=[1]).run_id
    with server.client.stream("GET", f"{V1}/runs/{cached_rid}/tasks/square/logs/follow") as r:
        (only,) = list(_sse_events(r.iter_lines()))  # a mapped summary never runs itself
    assert only[0] == "end" and only[1]["state"] == "success"


def test_lineage_of_outputs_artifacts_and_asset_versions_both_ways(server: Server) -> None:
    first = server.run("data_pipe", n=10, xs=[1]).run_id
    server.run("data_pipe", n=12, xs=[1])
    published = server.get(f"/runs/{first}/tasks/publish")
    sha = published["output"]["sha256"]
    tree = server.get(f"/runs/{first}/tasks/publish/lineage")
    assert tree["sha256"] == sha and tree["artifact"]["task_id"] == "publish"
    assert [n["artifact"]["task_id"] for n in tree["upstream"]] == ["make_frame"]
    assert [n["artifact"]["task_id"] for n in tree["downstream"]] == ["summarize"]
    up_only = server.get(f"/artifacts/{sha[:12]}/lineage", direction="upstream")
    assert up_only["downstream"] == [] and up_only["upstream"]
    assert server.get(f"/artifacts/{sha}")["run_id"] == first
    assert server.get(f"/artifacts/{sha}/preview")["kind"] == "dataframe"
    assert server.get(f"/artifacts/{sha}/lineage", depth=0)["truncated"] is True

    assets = all_items(server, "/assets", 1)
    assert [(a["name"], a["latest_version"], a["versions"]) for a in assets] == [
        ("inspect/frames", 2, 2)]
    assert server.get("/assets/inspect/frames")["latest_version"] == 2
    versions = all_items(server, "/assets/inspect/frames/versions", 1)
    assert [v["version"] for v in versions] == [2, 1]
    v1 = server.get("/assets/inspect/frames/versions/1")
    assert v1["run_id"] == first and v1["task_id"] == "publish" and v1["artifact_sha256"] == sha
    lineage = server.get("/assets/inspect/frames/versions/1/lineage")
    assert lineage["version"]["version"] == 1
    assert lineage["produced_by"]["artifact"]["task_id"] == "publish"
    assert [n["artifact"]["task_id"] for n in lineage["produced_by"]["upstream"]] == ["make_frame"]
    assert [n["artifact"]["task_id"] for n in lineage["consumed_by"]] == ["summarize"]
    assert lineage["triggered_runs"] == {"items": [], "next_cursor": None}


def test_runs_an_asset_version_triggered(server: Server) -> None:
    from cadenza.triggers.loop import Scheduler

    consumer = server.app.state.catalog.get().get("frames_consumer")
    sched = Scheduler([consumer], max_runs=0)  # creates queued runs; nobody drives them
    sched.tick()
    server.run("data_pipe", n=4, xs=[1])
    (created,) = sched.tick().created
    runs = server.get("/assets/inspect/frames/versions/1/runs")
    assert [(r["run_id"], r["pipeline"]) for r in runs["items"]] == [(created, "frames_consumer")]
    lineage = server.get("/assets/inspect/frames/versions/1/lineage")
    assert [r["run_id"] for r in lineage["triggered_runs"]["items"]] == [created]


def test_pools_list_get_and_set(server: Server) -> None:
    for i in range(5):
        r = server.client.put(f"{V1}/pools/p{i}", json={"slots": i, "description": f"pool {i}"})
        assert r.status_code == 200 and r.json() == {"name": f"p{i}", "slots": i,
                                                       "description": f"pool {i}"}
    names = [p["name"] for p in all_items(server, "/pools", 2)]
    assert names == sorted(names) and {f"p{i}" for i in range(5)} <= set(names)
    assert server.get("/pools/p3")["slots"] == 3
    assert server.client.put(f"{V1}/pools/p3", json={"slots": 9}).json()["slots"] == 9
    assert server.store.get_pool("p3").slots == 9  # type: ignore[union-attr]
    bad = server.client.put(f"{V1}/pools/p3", json={"slots": -1})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "slots"]
    extra = server.client.put(f"{V1}/pools/p3", json={"slots": 1, "color": "red"})
    assert extra.status_code == 422
    missing = server.client.get(f"{V1}/pools/p33")
    assert missing.status_code == 404 and "no pool named 'p33'" in missing.json()["detail"]


def test_pool_set_needs_an_admin(db_url: str, tmp_path: Path) -> None:
    from cadenza.api.auth import Principal, Role

    def operator(request: Any) -> Principal:
        return Principal(name="olga", role=Role.OPERATOR)

    with serve_project(db_url, tmp_path, {}, authenticate=operator) as live:
        client = live.client
        assert client.get(f"{V1}/pools").status_code == 200
        denied = client.put(f"{V1}/pools/gpu", json={"slots": 2})
        assert denied.status_code == 403 and "admin" in denied.json()["detail"]


def test_events_and_sla_misses_pages_and_filters(server: Server) -> None:
    sched = scheduling_store(server.store)
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    for i in range(5):
        sched.record_event(TriggerEventRecord(
            pipeline="a" if i % 2 else "b", source="redis://h/0?stream=s", message_id=f"m{i}",
            status="invalid" if i == 2 else "run", error="bad payload" if i == 2 else None,
            payload={"i": i}, received_at=t0 + timedelta(minutes=i)))
    got = all_items(server, "/events", 2)
    assert [e["message_id"] for e in got] == ["m4", "m3", "m2", "m1", "m0"]
    assert [e["message_id"] for e in server.get("/events", pipeline="a")["items"]] == ["m3", "m1"]
    invalid = server.get("/events", status="invalid")["items"]
    assert [(e["message_id"], e["error"], e["payload"]) for e in invalid] == [
        ("m2", "bad payload", {"i": 2})]
    window = server.get("/events", since="2026-02-01T00:01:00Z", until="2026-02-01T00:03:00Z")
    assert [e["message_id"] for e in window["items"]] == ["m2", "m1"]
    r = server.client.get(f"{V1}/events", params={"status": "maybe"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"]
    r = server.client.get(f"{V1}/events", params={"since": "2026-02-01T00:00:00"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]

    for i in range(3):
        server.store.create_run(RunRecord(run_id=f"s{i}", pipeline="p", state=RunState.RUNNING,
                                          created_at=t0), [TaskInstanceRecord(run_id=f"s{i}",
                                                                              task_id="t")])
        sched.record_sla_miss(SlaMissRecord(run_id=f"s{i}", pipeline="p" if i else "q",
                                            sla_s=30.0, deadline_at=t0,
                                            detected_at=t0 + timedelta(seconds=i)))
    misses = all_items(server, "/sla-misses", 2)
    assert [m["run_id"] for m in misses] == ["s2", "s1", "s0"] and misses[0]["sla_s"] == 30.0
    assert [m["run_id"] for m in server.get("/sla-misses", pipeline="q")["items"]] == ["s0"]


def test_unknown_things_are_404_with_a_message_and_bad_input_422(server: Server) -> None:
    rid = server.run("failing", n=1).run_id
    c = server.client
    cases = {
        f"{V1}/runs/nope/tasks/explode": "nope",
        f"{V1}/runs/{rid}/tasks/explod": "Did you mean 'explode'",
        f"{V1}/runs/{rid}/tasks/explode?map_index=3": "not mapped",
        f"{V1}/runs/{rid}/tasks/explode/logs?attempt=9": "no attempt 9",
        f"{V1}/runs/{rid}/tasks/explode/logs/follow?attempt=9": "no attempt 9",
        f"{V1}/runs/{rid}/tasks/explode/output/preview": "has no output",
        f"{V1}/runs/{rid}/tasks/explode/inputs/m/preview": "its inputs: n",
        f"{V1}/runs/{rid}/tasks/explode/lineage": "has no output",
        f"{V1}/artifacts/abcdef0123": "no artifact",
        f"{V1}/assets/nothing": "no asset named 'nothing'",
        f"{V1}/assets/nothing/versions": "no asset named 'nothing'",
        f"{V1}/assets/nothing/versions/1/lineage": "no asset named 'nothing'",
    }
    for url, words in cases.items():
        r = c.get(url)
        assert r.status_code == 404, (url, r.status_code, r.text)
        assert words in r.json()["detail"] + (r.json().get("hint") or ""), (url, r.json())
    bad = {
        f"{V1}/runs/{rid}/tasks/explode?map_index=-2": ["query", "map_index"],
        f"{V1}/runs/{rid}/tasks/explode/logs?limit=-1": ["query", "limit"],
        f"{V1}/runs/{rid}/tasks/explode/attempts?cursor=zzz": ["query", "cursor"],
        f"{V1}/artifacts/not-hex": ["path", "sha256"],
        f"{V1}/pools?limit=0": ["query", "limit"],
        f"{V1}/assets?cursor=WyJhIiwxXQ": ["query", "cursor"],
        f"{V1}/runs/{rid}/tasks/explode/lineage?direction=sideways": ["query", "direction"],
    }
    for url, loc in bad.items():
        r = c.get(url)
        assert r.status_code == 422, (url, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == loc, (url, r.json())
    for not_an_offset in ("twelve", "²".encode()):
        r = c.get(f"{V1}/runs/{rid}/tasks/explode/logs/follow",
                  headers={"Last-Event-ID": not_an_offset})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["header", "last-event-id"]


def test_a_mapped_tasks_instances_in_pages_and_by_state(server: Server) -> None:
    rid = server.run("data_pipe", n=2, xs=list(range(7))).run_id
    items = all_items(server, f"/runs/{rid}/tasks/square/instances", 3)
    assert [(i["map_index"], i["state"]) for i in items] == [(i, "success") for i in range(7)]
    assert server.get(f"/runs/{rid}/tasks/square/instances", state="failed")["items"] == []
    both = server.get(f"/runs/{rid}/tasks/square/instances", state=["failed", "success"])
    assert len(both["items"]) == 7
    (one,) = server.get(f"/runs/{rid}/tasks/make_frame/instances")["items"]
    assert (one["task_id"], one["map_index"], one["state"]) == ("make_frame", -1, "success")
    r = server.client.get(f"{V1}/runs/{rid}/tasks/square/instances", params={"state": "done"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "state", 0]
    assert server.client.get(f"{V1}/runs/{rid}/tasks/squar/instances").status_code == 404


def test_out_of_range_times_and_cursor_numbers_are_422_not_5xx(server: Server) -> None:
    from cadenza.api.pagination import encode_cursor

    cases = [
        ("/events", {"since": "0001-01-01T00:00:00+05:00"}, ["query", "since"]),
        ("/sla-misses", {"until": "9999-12-31T23:59:59-05:00"}, ["query", "until"]),
        ("/assets/x/versions", {"cursor": encode_cursor(10**30)}, ["query", "cursor"]),
        ("/events", {"cursor": encode_cursor("2026-01-01T00:00:00+00:00", 10**30)},
         ["query", "cursor"]),
        ("/events", {"cursor": encode_cursor("0001-01-01T00:00:00+05:00", 1)},
         ["query", "cursor"]),
        ("/sla-misses", {"cursor": encode_cursor(None, "r")}, ["query", "cursor"]),
        ("/assets/x/versions/1/runs", {"cursor": encode_cursor("then", "r")},
         ["query", "cursor"]),
    ]
    for path, params, loc in cases:
        r = server.client.get(V1 + path, params=params)
        assert r.status_code == 422, (path, params, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == loc


def test_a_nul_character_in_a_name_or_value_is_bad_input_not_a_store_outage(
        server: Server, db_url: str) -> None:
    c = server.client
    responses = [
        c.get(f"{V1}/assets/a%00b"),
        c.get(f"{V1}/assets", params={"prefix": "a\x00"}),
        c.get(f"{V1}/events", params={"pipeline": "a\x00b"}),
        c.get(f"{V1}/runs/a%00b/tasks/t"),
        c.put(f"{V1}/pools/p", json={"slots": 1, "description": "a\x00b"}),
    ]
    for r in responses:
        assert r.status_code < 500, (r.request.url, r.status_code, r.text)
        if db_url.startswith("postgresql"):  # SQLite keeps NUL characters: 404 / 200 there
            assert r.status_code == 400, (r.request.url, r.text)
            assert "NUL character" in r.json()["detail"]


def test_every_attempt_of_a_run_in_pages(server: Server) -> None:
    rid = server.run("data_pipe", n=2, xs=[1, 2, 3]).run_id
    got = all_items(server, f"/runs/{rid}/attempts", 3)
    keys = [(a["task_id"], a["map_index"], a["attempt"]) for a in got]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 8
    assert ("square", 2, 1) in keys and ("square", -1, 1) not in keys  # a summary never runs
    assert all(a["state"] == "success" and a["has_log"] is not None for a in got)
    failed = server.run("failing", n=1).run_id
    both = server.get(f"/runs/{failed}/attempts")["items"]
    assert [(a["task_id"], a["attempt"], a["state"]) for a in both] == [
        ("explode", 1, "up_for_retry"), ("explode", 2, "failed")]
    assert "bad value 1" in both[1]["error"]["traceback"]
    assert server.client.get(f"{V1}/runs/nope/attempts").status_code == 404


def test_secrets_a_task_returned_are_masked_in_values_the_api_shows(server: Server) -> None:
    from cadenza.core.security import secret_key
    from cadenza.store.security import security_store

    token = "tok-9f8e7d6c5b4a"
    key = secret_key(server.settings.home, create=True)
    security_store(server.store).set_secret("API_TOKEN", token, key=key)
    rid = server.run("leaky").run_id
    detail = server.client.get(f"{V1}/runs/{rid}/tasks/leak")
    assert detail.status_code == 200 and token not in detail.text
    assert detail.json()["output"]["value"] == {"token": "***", "rows": 2}
    value = server.get(f"/runs/{rid}/tasks/leak/output/preview")
    assert value["value"] == {"token": "***", "rows": 2}
    frame = server.client.get(f"{V1}/runs/{rid}/tasks/leak_frame/output/preview")
    assert token not in frame.text and frame.json()["rows"] == [{"k": "***"}, {"k": "plain"}]
    sha = server.get(f"/runs/{rid}/tasks/leak_frame")["output"]["sha256"]
    assert token not in server.client.get(f"{V1}/artifacts/{sha}/preview").text
    log = server.client.get(f"{V1}/runs/{rid}/tasks/leak/logs")
    assert token not in log.text and "using ***" in log.json()["text"]  # masked by the worker


def test_follow_of_a_task_not_started_yet_waits_for_its_first_attempt(server: Server,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "gate2"
    folder.mkdir()
    runner = threading.Thread(target=lambda: server.run("slow_logger", folder=str(folder)))
    runner.start()
    try:
        wait_for(lambda: (folder / "started").exists(), what="the upstream task to start")
        run = server.store.list_runs(pipeline="slow_logger", limit=1)[0]
        assert server.get(f"/runs/{run.run_id}/tasks/after_chatty")["state"] == "pending"
        url = f"{V1}/runs/{run.run_id}/tasks/after_chatty/logs/follow"
        with server.client.stream("GET", url) as response:
            assert response.status_code == 200
            (folder / "release").write_text("go")  # the stream is open and waiting
            events = list(_sse_events(response.iter_lines()))
    finally:
        (folder / "release").write_text("go")
        runner.join(timeout=120)
    assert "after chatty: 1" in "".join(e[1]["text"] for e in events if e[0] == "log")
    assert events[-1][0] == "end" and events[-1][1] == {
        "attempt": 1, "state": "success", "next_offset": events[-1][1]["next_offset"]}


def test_a_huge_error_message_is_cut_in_the_detail_and_a_mapped_summary_points_at_instances(
        server: Server) -> None:
    from dataclasses import replace

    from cadenza.api.routes.task_instances import MAX_ERROR_CHARS
    from cadenza.core.records import ErrorInfo, ErrorKind, WriteBatch
    from cadenza.core.states import TaskState

    rid = server.run("failing", n=5).run_id
    ti = server.store.get_task_instance(rid, "explode")
    assert ti is not None
    huge = ErrorInfo(kind=ErrorKind.EXCEPTION, type="builtins.ValueError",
                     message="x" * (3 * MAX_ERROR_CHARS), traceback="t" * (2 * MAX_ERROR_CHARS))
    server.store.write(WriteBatch(task_instance_updates=[replace(ti, error=huge,
                                                                 state=TaskState.FAILED)]))
    error = server.get(f"/runs/{rid}/tasks/explode")["error"]
    assert error["message"].startswith("x" * MAX_ERROR_CHARS)
    assert f"{2 * MAX_ERROR_CHARS} more characters of this message" in error["message"]
    assert len(error["traceback"]) < MAX_ERROR_CHARS + 200

    mapped = server.run("data_pipe", n=2, xs=[1, 2]).run_id
    r = server.client.get(f"{V1}/runs/{mapped}/tasks/square/output/preview")
    assert r.status_code == 404 and "is mapped" in r.json()["detail"]
    assert r.json()["hint"] == "preview one with ?map_index=0 to 1"


def test_pool_names_as_the_cli_takes_them(server: Server) -> None:
    server.store.set_pool("team a/gpu", 2)
    assert server.get("/pools/team a/gpu")["slots"] == 2
    r = server.client.put(f"{V1}/pools/team b/cpu", json={"slots": 3})
    assert r.status_code == 200 and server.store.get_pool("team b/cpu").slots == 3  # type: ignore[union-attr]
    r = server.client.put(f"{V1}/pools/%20%20", json={"slots": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "name"], r.text
    for control in ("a%0Ab", "a%07b"):  # no route matches a newline; the pattern refuses BEL
        r = server.client.put(f"{V1}/pools/{control}", json={"slots": 1})
        assert r.status_code in (404, 422), r.text
