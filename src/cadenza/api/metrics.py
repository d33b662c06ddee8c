"""The server's `/metrics`: Prometheus text from the store, plus what its caller adds.

What belongs here: the collector that reads the store at scrape time and the app's
`CollectorRegistry` (one per app: two apps in one process never share a metric). What does
not: the scheduler's own counters (`triggers/metrics.py`): the api never imports triggers,
so `cadenza server --scheduler` (cli/server.py) hands them in as extra collectors.

Served from the store (right for several servers on one store, and for runs this server did
not start), on every scrape:

    cadenza_runs{state}                     runs by state (all runs; index (state, created_at))
    cadenza_task_instances{state}           task instances of unfinished runs, by state
    cadenza_queued_runs                     runs waiting for a driver (queue depth)
    cadenza_queued_task_instances           task instances of unfinished runs waiting to run
                                            (scheduled for a slot, or queued on an executor)
    cadenza_sla_missed_runs{pipeline}       runs recorded as having missed their SLA
    cadenza_trigger_events{status}          trigger messages processed (run / invalid)
    cadenza_task_duration_seconds{pipeline, task}
                                            histogram of attempt durations, of attempts that
                                            ended since this server started

Cost of a scrape: five GROUP BY / index-range reads (`store/live.py`), none on the engine's
path. The histogram follows runs, not time: each scrape reads the finished attempts of the
runs that were unfinished at the previous scrape or are unfinished or new now, so an attempt
is observed once even when its commit lands after the scrape that its `ended_at` precedes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cadenza.core import clock
from cadenza.core.progress import StoreCounts
from cadenza.core.states import RunState, TaskState
from cadenza.store import RunStore
from cadenza.store.live import live_store

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    float("inf"))
# Runs created this long before the previous scrape are still looked at (clock skew between
# the process that created a run and this server), and attempts that ended this long before
# it still count.
SLACK = timedelta(seconds=60)


class StoreCollector(Collector):
    """Reads the store at scrape time (see the module docstring). Thread-safe."""

    def __init__(self, store: RunStore, *, started_at: datetime | None = None) -> None:
        self._live = live_store(store)
        self._lock = threading.Lock()
        self._since = started_at or clock.now()
        self._previous = self._since
        self._watch: set[str] = set()  # runs unfinished at the previous scrape
        self._seen: dict[str, set[tuple[str, int, int]]] = {}  # attempts observed, per run
        self._durations = Histogram(
            "cadenza_task_duration_seconds", "Duration of task attempts that ended since the "
            "server started", ["pipeline", "task"], buckets=DURATION_BUCKETS, registry=None)

    def describe(self) -> Iterable[Metric]:
        # Names only (no store read when the collector is registered).
        return [*self._families(None), *self._durations.collect()]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts = self._live.counts()
            self._observe_durations()
            return [*self._families(counts), *self._durations.collect()]

    def _families(self, counts: StoreCounts | None) -> Iterator[Metric]:
        runs = GaugeMetricFamily("cadenza_runs", "Runs in the store, by state", labels=["state"])
        tis = GaugeMetricFamily("cadenza_task_instances",
                                "Task instances of unfinished runs, by state", labels=["state"])
        queued_runs = GaugeMetricFamily("cadenza_queued_runs",
                                        "Runs waiting for a driver (queue depth)")
        queued_tis = GaugeMetricFamily(
            "cadenza_queued_task_instances",
            "Task instances of unfinished runs waiting to run (scheduled or queued)")
        sla = GaugeMetricFamily("cadenza_sla_missed_runs",
                                "Runs recorded as having missed their SLA, by pipeline",
                                labels=["pipeline"])
        events = GaugeMetricFamily("cadenza_trigger_events",
                                   "Trigger messages processed, by outcome", labels=["status"])
        if counts is not None:
            for state in RunState:
                runs.add_metric([state.value], counts.runs.get(state, 0))
            for ti_state in TaskState:
                tis.add_metric([ti_state.value], counts.active_task_instances.get(ti_state, 0))
            queued_runs.add_metric([], counts.runs.get(RunState.QUEUED, 0))
            active = counts.active_task_instances
            queued_tis.add_metric([], active.get(TaskState.SCHEDULED, 0)
                                  + active.get(TaskState.QUEUED, 0))
            for pipeline, n in sorted(counts.sla_misses.items()):
                sla.add_metric([pipeline], n)
            for status, n in sorted(counts.trigger_events.items()):
                events.add_metric([status], n)
        yield from (runs, tis, queued_runs, queued_tis, sla, events)

    def _observe_durations(self) -> None:
        now = clock.now()
        recent = self._live.recent_runs(created_since=self._previous - SLACK)
        looked = self._watch | set(recent)
        ended_since = max(self._since, self._previous - SLACK)
        for a in self._live.finished_attempts(looked, ended_since=ended_since):
            seen = self._seen.setdefault(a.run_id, set())
            key = (a.task_id, a.map_index, a.attempt)
            if key not in seen:
                seen.add(key)
                self._durations.labels(a.pipeline, a.task_id).observe(a.duration_s)
        # Keep what the next scrape looks at again: unfinished runs, and finished ones
        # recent enough to be read again (their seen attempts must not count twice).
        self._seen = {r: s for r, s in self._seen.items() if r in recent}
        self._watch = {r for r, state in recent.items() if not state.is_final}
        self._previous = now


def metrics_registry(store: RunStore, *, extra: Sequence[Collector] = ()) -> CollectorRegistry:
    """The app's registry: the store collector, then `extra` collectors (the scheduler's)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(store))
    for collector in extra:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of `registry` and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
