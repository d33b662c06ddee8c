"""The compiled pipeline: frozen, pure data. No I/O, no threads.

`authoring` traces a pipeline body into a `PipelineGraph`; `graph.validate` checks it;
the engine runs it. Argument values of a node are plain Python structures in which two
markers may appear (nested in lists, tuples and dicts): `TaskOutput` (an upstream's output)
and `ParamValue` (a pipeline parameter). The engine substitutes them at run time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class TriggerRule(enum.StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """Marker: the output of upstream task `task_id` (a list in map order if it is mapped)."""

    task_id: str


@dataclass(frozen=True, slots=True)
class ParamValue:
    """Marker: the value of pipeline parameter `name`."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    cpu: float = 0.0
    memory_bytes: int = 0
    gpu: int = 0
    # The accelerator kind a cluster schedules the GPUs on ("nvidia-tesla-a100"): KFP's
    # accelerator type (graph/kfp.py); local executors only count GPUs.
    gpu_type: str | None = None
    custom: Mapping[str, float] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.cpu or self.memory_bytes or self.gpu or self.custom)


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorSpec:
    """A task that is a sensor: the engine pokes it every `poke_interval_s` until its
    function returns something truthy, or fails it once `timeout_s` has passed."""

    poke_interval_s: float
    timeout_s: float | None
    condition: str  # the condition in words, for the timeout error and logs


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    retries: int = 0
    retry_delay_s: float = 0.0
    retry_backoff: float = 1.0
    max_retry_delay_s: float | None = None
    retry_jitter: float = 0.0  # fraction of the delay added at random (0.1 = up to +10 %)
    retry_on: tuple[type[BaseException], ...] = ()
    timeout_s: float | None = None
    cache: bool = False
    cache_expiration_s: float | None = None
    version: str | None = None
    resources: Resources = field(default_factory=Resources)
    pool: str = "default"
    outlets: tuple[str, ...] = ()  # asset names
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    is_branch: bool = False
    requirements: tuple[str, ...] = ()
    python: str | None = None  # the interpreter version of the task's environment ("3.11")
    on_success: tuple[Callable[..., Any], ...] = ()
    on_failure: tuple[Callable[..., Any], ...] = ()
    on_retry: tuple[Callable[..., Any], ...] = ()
    sensor: SensorSpec | None = None  # set by the sensors of cadenza.triggers

    @property
    def isolated(self) -> bool:
        """The task runs in its own environment (`executors/envs.py`)."""
        return bool(self.requirements) or self.python is not None

    @property
    def retry_on_names(self) -> frozenset[str]:
        return frozenset(f"{c.__module__}.{c.__qualname__}" for c in self.retry_on)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskNode:
    id: str
    task_name: str  # name of the TaskDef this node came from
    fn: Callable[..., Any]
    fn_key: str  # "module:qualname"
    args: Mapping[str, Any]  # parameter name -> structure with TaskOutput/ParamValue markers
    call_kinds: Mapping[str, str]  # parameter name -> inspect.Parameter kind name
    mapped: tuple[str, ...] = ()  # names in `args` expanded over (cartesian product)
    data_upstream: tuple[str, ...] = ()  # task ids whose outputs feed this node
    order_upstream: tuple[str, ...] = ()  # task ids added with `>>`
    options: TaskOptions = field(default_factory=TaskOptions)
    explicit_name: bool = False  # the id was given with with_options(name=...)
    branch_targets: tuple[str, ...] = ()  # string literals the branch function returns (AST)

    @property
    def is_mapped(self) -> bool:
        return bool(self.mapped)

    @property
    def upstream(self) -> tuple[str, ...]:
        seen = dict.fromkeys(self.data_upstream)
        seen.update(dict.fromkeys(self.order_upstream))
        return tuple(seen)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamSpec:
    name: str
    annotation: Any
    has_default: bool
    default: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineGraph:
    name: str
    nodes: Mapping[str, TaskNode]  # in definition order
    params: tuple[ParamSpec, ...] = ()
    source: str = ""  # "file.py:name" or "module:name"

    def __iter__(self) -> Iterator[TaskNode]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for up in node.upstream:
                if up in out:
                    out[up].append(node.id)
        return out

    def topological_ids(self) -> list[str]:
        """Task ids with every upstream (data or `>>`) first; ties keep definition order.

        Example:
            >>> [*pipe.graph.nodes], pipe.graph.topological_ids()  # b = t2(); a = t1(); a >> b
            (['b', 'a'], ['a', 'b'])
        """
        import heapq

        position = {nid: i for i, nid in enumerate(self.nodes)}
        waiting = {nid: sum(1 for up in n.upstream if up in position)
                   for nid, n in self.nodes.items()}
        downstream = self.downstream()
        ready = [position[nid] for nid, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        ids = list(self.nodes)
        order: list[str] = []
        while ready:
            nid = ids[heapq.heappop(ready)]
            order.append(nid)
            for down in downstream[nid]:
                waiting[down] -= 1
                if waiting[down] == 0:
                    heapq.heappush(ready, position[down])
        if len(order) != len(ids):  # a validated graph has no cycle; be safe anyway
            seen = set(order)
            order.extend(nid for nid in ids if nid not in seen)
        return order


def iter_markers(value: Any) -> Iterator[TaskOutput | ParamValue]:
    """Every marker inside a structure of lists, tuples and dicts."""
    t = type(value)
    if t is TaskOutput or t is ParamValue:
        yield value
    elif t is list or t is tuple:
        for v in value:
            yield from iter_markers(v)
    elif t is dict:
        for v in value.values():
            yield from iter_markers(v)


def substitute(value: Any, lookup: Callable[[TaskOutput | ParamValue], Any]) -> Any:
    """Replace every marker in a structure by `lookup(marker)`."""
    t = type(value)
    if t is TaskOutput or t is ParamValue:
        return lookup(value)
    if t is list:
        return [substitute(v, lookup) for v in value]
    if t is tuple:
        return tuple(substitute(v, lookup) for v in value)
    if t is dict:
        return {k: substitute(v, lookup) for k, v in value.items()}
    return value


def has_markers(value: Any) -> bool:
    return next(iter_markers(value), None) is not None
