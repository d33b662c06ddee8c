"""The scheduler's Prometheus metrics, served by `cadenza scheduler --metrics-port PORT`.

What belongs here: the metric objects and starting their HTTP endpoint. What does not: when
they change (`loop.py`). prometheus_client is imported on first use (~80 ms), so commands
that never start a scheduler do not pay for it.

    cadenza_runs_created_total{pipeline, trigger}     runs a scheduler created (schedule,
                                                      asset, sensor, event)
    cadenza_sla_misses_total{pipeline}                SLA misses this scheduler recorded
    cadenza_events_total{pipeline, status}            messages handled: run / invalid / duplicate
    cadenza_scheduler_ticks_total                     ticks done
    cadenza_scheduler_tick_seconds                    histogram of tick durations
    cadenza_scheduler_runs_driving                    runs this scheduler drives now
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_metrics: SchedulerMetrics | None = None


@dataclass(frozen=True, slots=True)
class SchedulerMetrics:
    runs_created: Any
    sla_misses: Any
    events: Any
    ticks: Any
    tick_seconds: Any
    runs_driving: Any


def scheduler_metrics() -> SchedulerMetrics:
    """The process-wide metrics (registered once in prometheus_client's default registry)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Gauge, Histogram

            _metrics = SchedulerMetrics(
                runs_created=Counter("cadenza_runs_created", "Runs created by the scheduler",
                                     ["pipeline", "trigger"]),
                sla_misses=Counter("cadenza_sla_misses", "Runs that missed their SLA",
                                   ["pipeline"]),
                events=Counter("cadenza_events", "Event messages handled, by outcome",
                               ["pipeline", "status"]),
                ticks=Counter("cadenza_scheduler_ticks", "Scheduler ticks"),
                tick_seconds=Histogram(
                    "cadenza_scheduler_tick_seconds", "Duration of a scheduler tick",
                    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)),
                runs_driving=Gauge("cadenza_scheduler_runs_driving",
                                   "Runs this scheduler is driving"),
            )
        return _metrics


def serve_metrics(port: int, *, addr: str = "127.0.0.1") -> None:
    """Serve /metrics on `addr:port` from a daemon thread."""
    from prometheus_client import start_http_server

    scheduler_metrics()
    start_http_server(port, addr=addr)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one sample (0 when it has none yet): for tests and the CLI."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)
