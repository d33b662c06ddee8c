"""The store collector of `/metrics` (api/metrics.py) on SQLite and PostgreSQL, without HTTP:
runs and task instances by state, queue depth, and task durations observed once each, read
back through prometheus_client's text parser."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from cadenza.api.metrics import metrics_registry, render
from cadenza.core import clock
from cadenza.core.records import RunRecord, TaskInstanceRecord
from cadenza.core.states import RunState
from cadenza.store import open_store
from tests.pipelines import cancellable


def samples(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = render(registry)
    assert content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def durations(got, task: str) -> float:
    return got.get(("cadenza_task_duration_seconds_count",
                    (("pipeline", "held"), ("task", task))), 0.0)


def finished_runs(folder, n: int) -> Iterator[str]:
    (folder / "release").write_text("go")
    for _ in range(n):
        result = cancellable.held.run(folder=str(folder), executor="inline")
        assert result.ok
        yield result.run_id


def test_scrapes_count_runs_by_state_queue_depth_and_each_attempt_once(cadenza_env, tmp_path):
    store = open_store()
    registry = metrics_registry(store)
    before = samples(registry)
    assert before[("cadenza_runs", (("state", "success"),))] == 0
    assert durations(before, "hold") == 0

    list(finished_runs(tmp_path, 2))
    queued = RunRecord(run_id="q1", pipeline="held", state=RunState.QUEUED,
                       created_at=clock.now())
    store.create_run(queued, [TaskInstanceRecord(run_id="q1", task_id="first")])

    got = samples(registry)
    assert got[("cadenza_runs", (("state", "success"),))] == 2
    assert got[("cadenza_runs", (("state", "queued"),))] == 1
    assert got[("cadenza_queued_runs", ())] == 1
    # Only unfinished runs' task instances: the queued run's one pending instance.
    assert got[("cadenza_task_instances", (("state", "pending"),))] == 1
    assert got[("cadenza_task_instances", (("state", "success"),))] == 0
    for task in ("first", "hold", "last"):
        assert durations(got, task) == 2, task

    # A scrape with nothing new observes nothing again; a new run adds its attempts once.
    assert durations(samples(registry), "hold") == 2
    list(finished_runs(tmp_path, 1))
    assert durations(samples(registry), "hold") == 3
    assert durations(samples(registry), "hold") == 3
