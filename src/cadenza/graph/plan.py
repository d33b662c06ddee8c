"""The Plan: everything the engine, triggers and surfaces read about a pipeline, typed and frozen.

`authoring` traces a `@pipeline` body into a `PipelineGraph`, validates it, and builds one
`Plan` from it and the decorator's options, once, at definition time (`PipelineDef.plan`).
From there on nothing reads the authoring object: the engine runs a Plan, the scheduler
times it, the CLI describes it, and (next) the REST API serves it and the KFP compiler
compiles it. What belongs here: the data (graph, parameters, schedule, triggers, tracking,
SLA, callbacks) and pure views of it (edges, `describe()`). What does not: checking the
options (authoring reports every problem at definition time), running, or I/O.

A few values stay opaque objects because their types live in higher layers: `triggers`
(assets, sensors, event triggers, sorted by `cadenza.triggers`) and `tracking` (an
integration's config, handed to the driver as its tracker).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from cadenza.graph.model import (
    ParamValue,
    PipelineGraph,
    TaskNode,
    TaskOptions,
    TaskOutput,
    iter_markers,
)
from cadenza.graph.params import Parameters, type_label

Callback = Callable[..., Any]


class EdgeKind(enum.StrEnum):
    DATA = "data"  # the downstream task reads the upstream's output
    ORDER = "order"  # `a >> b`: b waits for a, reads nothing


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    upstream: str
    downstream: str
    kind: EdgeKind
    # The downstream's arguments the upstream's output feeds (empty for an order edge).
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineCallbacks:
    """Pipeline-level hooks, run after the run's final state is committed."""

    on_success: tuple[Callback, ...] = ()
    on_failure: tuple[Callback, ...] = ()
    on_sla_miss: tuple[Callback, ...] = ()

    def as_dict(self) -> dict[str, tuple[Callback, ...]]:
        """{"on_success": hooks, ...} for the hooks that are set."""
        out = {"on_success": self.on_success, "on_failure": self.on_failure,
               "on_sla_miss": self.on_sla_miss}
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A pipeline as the engine and every surface see it.

    `source` is where the pipeline can be imported again ("path/file.py:name", else
    "module:name"); runs store it so that resume and `cadenza.get_run(...).resume()` find it.
    `schedule` is as declared (cron string, preset or timedelta; None: not time-scheduled),
    `start_date`/`end_date` are naive in `timezone` unless they carry a zone.

    Example:
        >>> plan = fraud_training.plan
        >>> plan.name, plan.schedule, [e.upstream for e in plan.edges_into("train")]
        ('fraud_training', '0 2 * * *', ['build_features'])
        >>> plan.describe()["tasks"][0]["options"]["retries"]
        2
    """

    name: str
    graph: PipelineGraph
    parameters: Parameters
    description: str = ""
    tags: tuple[str, ...] = ()
    source: str = ""
    source_file: str | None = None
    module: str = ""
    schedule: str | timedelta | None = None
    timezone: str = "UTC"
    start_date: datetime | None = None
    end_date: datetime | None = None
    catchup: bool = False
    max_active_runs: int | None = None
    triggers: tuple[object, ...] = ()  # Asset, AnyOf, asset names, sensors, EventTriggers
    tracking: object | None = None  # e.g. cadenza.MLflow(...): the driver's tracker
    sla: timedelta | None = None
    callbacks: PipelineCallbacks = field(default_factory=PipelineCallbacks)

    # -- the graph ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[TaskNode]:
        return iter(self.graph)

    def __len__(self) -> int:
        return len(self.graph)

    @property
    def tasks(self) -> Mapping[str, TaskNode]:
        """Task id -> node, in definition order."""
        return self.graph.nodes

    def task(self, task_id: str) -> TaskNode:
        return self.graph.nodes[task_id]

    def topological_ids(self) -> list[str]:
        return self.graph.topological_ids()

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge, data edges before order edges of the same downstream task."""
        out: list[Edge] = []
        for node in self.graph:
            feeds: dict[str, list[str]] = {}
            for arg, value in node.args.items():
                for marker in iter_markers(value):
                    if type(marker) is TaskOutput:
                        names = feeds.setdefault(marker.task_id, [])
                        if arg not in names:
                            names.append(arg)
            for up in node.data_upstream:
                out.append(Edge(upstream=up, downstream=node.id, kind=EdgeKind.DATA,
                                args=tuple(feeds.get(up, ()))))
            for up in node.order_upstream:
                if up not in node.data_upstream:
                    out.append(Edge(upstream=up, downstream=node.id, kind=EdgeKind.ORDER))
        return tuple(out)

    def edges_into(self, task_id: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.downstream == task_id)

    # -- parameters ---------------------------------------------------------------------------
    def validate_params(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(python values, JSON form to store). Raises ParameterError naming each problem."""
        return self.parameters.validate(params)

    @property
    def params(self) -> tuple[Any, ...]:
        """The parameters' specs (name, annotation, default), in signature order."""
        return self.parameters.specs

    # -- what an API or a compiler shows ------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The pipeline as JSON-ready data: what `GET /pipelines/{name}` returns and a KFP
        compiler walks. Parameters carry their JSON schema only when asked for
        (`parameters.json_schema()`: it imports pydantic)."""
        return {
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "source": self.source,
            "schedule": _schedule_text(self.schedule),
            "timezone": self.timezone,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "sla_s": self.sla.total_seconds() if self.sla is not None else None,
            "triggers": [repr(t) for t in self.triggers],
            "tracking": type(self.tracking).__name__ if self.tracking is not None else None,
            "callbacks": {k: [_callable_name(h) for h in v]
                          for k, v in self.callbacks.as_dict().items()},
            "parameters": [
                {"name": p.name, "type": type_label(p.annotation), "required": not p.has_default,
                 "default": p.default if p.has_default else None}
                for p in self.parameters.specs
            ],
            "tasks": [_describe_task(n) for n in self.graph],
            "edges": [{"upstream": e.upstream, "downstream": e.downstream, "kind": e.kind.value,
                       "args": list(e.args)} for e in self.edges],
        }


class HasPlan(Protocol):
    """Anything that carries a Plan: a `PipelineDef` (what users pass to `resume(pipeline=)`,
    `get_runs(pipeline=)`, ...). The engine asks for `.plan` once at its entry points."""

    @property
    def plan(self) -> Plan: ...


def plan_of(pipeline: Plan | HasPlan) -> Plan:
    """The Plan of a pipeline given either way."""
    return pipeline if isinstance(pipeline, Plan) else pipeline.plan


def find_plan(value: object) -> Plan | None:
    """The Plan of a value found in a user's module: a Plan, or what carries one (a
    `PipelineDef`); None for anything else. How loaders pick pipelines out of a module."""
    if isinstance(value, Plan):
        return value
    plan = getattr(value, "plan", None)
    return plan if isinstance(plan, Plan) else None


def _describe_task(node: TaskNode) -> dict[str, Any]:
    return {
        "id": node.id,
        "task": node.task_name,
        "function": node.fn_key,
        "mapped": list(node.mapped),
        "upstream": list(node.upstream),
        "args": {name: _describe_value(v) for name, v in node.args.items()},
        "branch_targets": list(node.branch_targets),
        "options": describe_options(node.options),
    }


def _describe_value(value: Any) -> Any:
    """An argument with its markers as {"task_output": id} / {"param": name}; other
    values as their repr (a literal the pipeline body passed)."""
    t = type(value)
    if t is TaskOutput:
        return {"task_output": value.task_id}
    if t is ParamValue:
        return {"param": value.name}
    if t is list or t is tuple:
        return [_describe_value(v) for v in value]
    if t is dict:
        return {str(k): _describe_value(v) for k, v in value.items()}
    if value is None or t in (str, int, float, bool):
        return value
    return {"literal": repr(value)}


def describe_options(o: TaskOptions) -> dict[str, Any]:
    """A task's options as JSON-ready data (callbacks and exception classes by name)."""
    r = o.resources
    return {
        "retries": o.retries,
        "retry_delay_s": o.retry_delay_s,
        "retry_backoff": o.retry_backoff,
        "max_retry_delay_s": o.max_retry_delay_s,
        "retry_jitter": o.retry_jitter,
        "retry_on": sorted(o.retry_on_names),
        "timeout_s": o.timeout_s,
        "cache": o.cache,
        "cache_expiration_s": o.cache_expiration_s,
        "version": o.version,
        "resources": {"cpu": r.cpu, "memory_bytes": r.memory_bytes, "gpu": r.gpu,
                      "gpu_type": r.gpu_type,
                      "custom": dict(r.custom)},
        "pool": o.pool,
        "outlets": list(o.outlets),
        "trigger_rule": o.trigger_rule.value,
        "is_branch": o.is_branch,
        "requirements": list(o.requirements),
        "python": o.python,
        "callbacks": {k: [_callable_name(h) for h in v] for k, v in
                      (("on_success", o.on_success), ("on_failure", o.on_failure),
                       ("on_retry", o.on_retry)) if v},
        "sensor": None if o.sensor is None else {
            "poke_interval_s": o.sensor.poke_interval_s, "timeout_s": o.sensor.timeout_s,
            "condition": o.sensor.condition},
    }


def _schedule_text(schedule: str | timedelta | None) -> str | None:
    if schedule is None or isinstance(schedule, str):
        return schedule
    return f"every {schedule.total_seconds():g} s"


def _callable_name(fn: Callback) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}" if module else name


__all__ = [
    "Edge",
    "EdgeKind",
    "HasPlan",
    "PipelineCallbacks",
    "Plan",
    "describe_options",
    "find_plan",
    "plan_of",
]
