"""`GET /api/v1/runs/{id}/events` over HTTP (a live uvicorn server, SQLite and PostgreSQL): a
real run's state changes arrive in order and the stream ends after the run's final state; a
client reconnecting with Last-Event-ID gets exactly what followed; after the end it gets 204;
an unknown run is 404 with a message; an idle stream sends heartbeat comments."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cadenza.api import create_app
from cadenza.api.live import RunFeeds
from cadenza.core import clock
from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.states import RunState
from cadenza.engine.api import run_pipeline
from tests.fixtures.server import PIPELINES, make_api_project, project_settings_for, serve
from tests.fixtures.waiting import wait_for

# `hold` waits for the file named by `gate`, so the test sees it running.
STEPS = (PIPELINES / "gated_steps.py").read_text(encoding="utf-8")


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, Any]]:
    from cadenza.core import settings as settings_mod

    root = make_api_project(tmp_path / "proj", files={"steps.py": STEPS})
    home = tmp_path / "home"
    home.mkdir()
    settings = project_settings_for(root, db_url, home)
    settings_mod.set_settings(settings)
    try:
        app = create_app(settings)
        app.state.feeds = RunFeeds(app.state.store, poll_s=0.05, heartbeat_s=0.2)
        with serve(app) as base, httpx.Client(base_url=base, timeout=60) as client:
            yield client, app
    finally:
        settings_mod.set_settings(None)


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """SSE events of a streamed response; comments come as {"comment": text}."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if "event" in fields:
                yield {"id": fields["id"], "event": fields["event"], **json.loads(fields["data"])}
            fields = {}
        else:
            key, _, value = line.partition(": ")
            fields[key] = value


def label(e: dict[str, Any]) -> tuple[str, str]:
    return ("run" if e["event"] == "run" else e["task_id"], e["state"])


def start(app: Any, gate: Path) -> tuple[threading.Thread, str]:
    plan = app.state.catalog.get().get("steps")
    box: dict[str, str] = {}
    thread = threading.Thread(target=lambda: box.setdefault("id", run_pipeline(
        plan, {"gate": str(gate)}, executor="threads",
        settings=app.state.settings).run_id), daemon=True)
    thread.start()
    store = app.state.store
    wait_for(lambda: store.list_runs(limit=1), what="the run to be created")
    return thread, store.list_runs(limit=1)[0].run_id


def test_a_run_streams_in_order_resumes_after_last_event_id_and_ends(live, tmp_path):
    client, app = live
    gate = tmp_path / "gate"
    thread, run_id = start(app, gate)
    url = f"/api/v1/runs/{run_id}/events"

    first: list[dict[str, Any]] = []
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for e in events(response):
            if "comment" in e:
                continue
            first.append(e)
            if label(e) == ("hold", "running"):
                break  # the client drops the connection mid-run
    gate.write_text("open")
    rest: list[dict[str, Any]] = []
    with client.stream("GET", url, headers={"Last-Event-ID": first[-1]["id"]}) as response:
        assert response.status_code == 200
        rest = [e for e in events(response) if "comment" not in e]  # ends by itself
    thread.join(60)

    seen = [label(e) for e in first + rest]
    assert seen[0] == ("run", "running")
    assert seen[-1] == ("run", "success")
    for task in ("first", "hold", "last"):
        mine = [s for t, s in seen if t == task]
        assert mine[-1] == "success" and mine.count("success") == 1, (task, mine)
    assert seen.index(("first", "success")) < seen.index(("hold", "running"))
    assert seen.index(("hold", "running")) < seen.index(("hold", "success"))
    assert seen.index(("hold", "success")) < seen.index(("last", "success"))
    ids = [int(e["id"].rsplit(".", 1)[1]) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))  # no gap, no repeat across the reconnect
    hold = next(e for e in rest if label(e) == ("hold", "success"))
    assert hold["attempt"] == 1 and hold["started_at"] and hold["ended_at"]

    # A client that saw the end gets 204 (an EventSource stops reconnecting); a new one
    # gets the whole story again, ending with the same final state.
    done = client.get(url, headers={"Last-Event-ID": rest[-1]["id"]})
    assert done.status_code == 204
    with client.stream("GET", url) as response:
        again = [label(e) for e in events(response) if "comment" not in e]
    assert again[-1] == ("run", "success") and ("hold", "success") in again


def test_an_unknown_run_is_404_with_a_message(live):
    client, _ = live
    response = client.get("/api/v1/runs/no-such-run/events")
    assert response.status_code == 404
    assert "no-such-run" in response.json()["detail"]


def test_an_idle_stream_sends_heartbeat_comments(live):
    client, app = live
    run = RunRecord(run_id="idle-1", pipeline="steps", state=RunState.QUEUED,
                    created_at=clock.now())
    app.state.store.create_run(run, [TaskInstanceRecord(run_id="idle-1", task_id="first")])

    got: list[dict[str, Any]] = []
    with client.stream("GET", "/api/v1/runs/idle-1/events") as response:
        for e in events(response):
            got.append(e)
            if sum(1 for g in got if "comment" in g) == 2:
                break

    assert [label(e) for e in got if "comment" not in e] == [
        ("run", "queued"), ("first", "pending")]
    assert {"comment": "keep-alive"} in got
