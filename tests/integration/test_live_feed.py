"""The server's live run feeds (api/live.py) on a real store and a real run, SQLite and
PostgreSQL, without HTTP: the state changes of a run arrive in commit order and end with its
final state; a client resuming from an event id gets exactly what followed; an unknown run is
RunNotFound before anything streams; a client that saw the end gets nothing (-> 204)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from cadenza.api.live import RunFeeds
from cadenza.core.errors import RunNotFound
from cadenza.store import open_store
from tests.fixtures.waiting import wait_for
from tests.pipelines import cancellable


def parse(chunk: bytes) -> list[dict[str, Any]]:
    """The events of SSE frames (comments and retry lines dropped)."""
    import json

    events = []
    for frame in chunk.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.split("\n") if ": " in line
                      and not line.startswith(":"))
        if "event" in fields:
            events.append({"id": fields["id"], "event": fields["event"],
                           **json.loads(fields["data"])})
    return events


async def take_until(stream: Any, done: Any) -> list[dict[str, Any]]:
    """Events of `stream` until `done(events)`; then the client goes away."""
    got: list[dict[str, Any]] = []
    try:
        async for chunk in stream:
            got.extend(parse(chunk))
            if done(got):
                break
    finally:
        await stream.aclose()
    return got


def start_held_run(folder: Path) -> tuple[threading.Thread, str, Any]:
    thread = threading.Thread(
        target=lambda: cancellable.held.run(folder=str(folder), executor="threads"), daemon=True)
    thread.start()
    wait_for(lambda: (folder / "started").exists(), what="task 'hold' to start")
    store = open_store()
    return thread, store.list_runs(limit=1)[0].run_id, store


def states(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [("run" if e["event"] == "run" else e["task_id"], e["state"]) for e in events]


def test_a_feed_streams_a_runs_changes_in_order_and_resumes_after_an_id(cadenza_env, tmp_path):
    thread, run_id, store = start_held_run(tmp_path)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
        feeds = RunFeeds(store, poll_s=0.05, heartbeat_s=30)
        stream = await feeds.open(run_id, last_event_id=None)
        assert stream is not None
        # The first events: the run, then every instance; 'hold' waits for the test.
        # The client goes away mid-run ...
        first = await take_until(stream, lambda got: ("hold", "running") in states(got))
        (tmp_path / "release").write_text("go")
        # ... and comes back with the last id it saw.
        again = await feeds.open(run_id, last_event_id=first[-1]["id"])
        assert again is not None
        rest = await take_until(again, lambda got: got and got[-1]["event"] == "run"
                                and got[-1]["state"] != "running")
        after_end = await feeds.open(run_id, last_event_id=rest[-1]["id"])
        await feeds.close()
        return first, rest, after_end

    first, rest, after_end = asyncio.run(scenario())
    thread.join(60)

    assert states(first)[0] == ("run", "running")
    assert ("first", "success") in states(first)
    seen = states(first) + states(rest)
    # Each task's states move forward; every one ends in success, the run last of all.
    for task in ("first", "hold", "last"):
        mine = [s for t, s in seen if t == task]
        assert mine[-1] == "success", (task, mine)
        assert mine.index("success") == len(mine) - 1
    assert seen.index(("hold", "running")) < seen.index(("hold", "success"))
    assert seen.index(("hold", "success")) < seen.index(("last", "success"))
    assert seen[-1] == ("run", "success")
    # Consecutive ids with no gap and no repeat across the reconnect.
    ids = [int(e["id"].rsplit(".", 1)[1]) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert after_end is None


def test_an_unknown_run_is_not_found_before_anything_streams(cadenza_env):
    async def scenario() -> None:
        feeds = RunFeeds(open_store(), poll_s=0.05)
        with pytest.raises(RunNotFound):
            await feeds.open("no-such-run", last_event_id=None)

    asyncio.run(scenario())


def test_a_dropped_log_replays_the_whole_story_and_then_recognises_its_own_end(cadenza_env,
                                                                               tmp_path):
    (tmp_path / "release").write_text("go")
    ids = [cancellable.held.run(folder=str(tmp_path), executor="inline").run_id
           for _ in range(2)]
    is_end = lambda got: got and got[-1]["event"] == "run"

    async def scenario() -> tuple[list[dict[str, Any]], ...]:
        feeds = RunFeeds(open_store(), poll_s=0.05, keep=1)
        one = await take_until(await feeds.open(ids[0], last_event_id=None), is_end)
        await take_until(await feeds.open(ids[1], last_event_id=None), is_end)  # drops ids[0]
        # The old id is from a log this server no longer has: the whole story again, ...
        again = await take_until(await feeds.open(ids[0], last_event_id=one[-1]["id"]),
                                 is_end)
        # ... whose last id this server knows: nothing more (-> 204).
        done = await feeds.open(ids[0], last_event_id=again[-1]["id"])
        await feeds.close()
        return one, again, [] if done is None else [{"not": "done"}]

    one, again, done = asyncio.run(scenario())

    assert states(again) == states(one)
    assert states(one)[-1] == ("run", "success") and len(states(one)) == 4
    assert again[0]["id"].split(".")[0] != one[0]["id"].split(".")[0]
    assert done == []
