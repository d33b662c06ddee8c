"""Tracing a pipeline body: each task call inside it adds a node here.

The builder is active (in a context variable) only while `@pipeline` traces the body.
It assigns ids (`train`, `train__1`, ...), binds arguments to the function's signature,
turns refs into graph markers and records `>>` edges. It collects problems instead of
raising at the first one, so the user sees them all at once.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cadenza.authoring.refs import OutputRef, ParamRef
from cadenza.core.errors import DefinitionError, Problem
from cadenza.graph.model import ParamValue, TaskNode, TaskOutput

if TYPE_CHECKING:
    from cadenza.authoring.task import TaskDef

_active: contextvars.ContextVar[GraphBuilder | None] = contextvars.ContextVar(
    "cadenza_builder", default=None
)


def current_builder() -> GraphBuilder | None:
    return _active.get()


class GraphBuilder:
    def __init__(self, pipeline_name: str) -> None:
        self.pipeline_name = pipeline_name
        self.nodes: dict[str, dict[str, Any]] = {}  # id -> fields for TaskNode
        self.by_def: dict[int, list[str]] = {}  # id(TaskDef) -> node ids
        self.counts: dict[str, int] = {}
        self.problems: list[Problem] = []

    @contextmanager
    def active(self) -> Iterator[GraphBuilder]:
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    # -- ids --------------------------------------------------------------------------------
    def _new_id(self, task: TaskDef[Any, Any]) -> str:
        if task.explicit_name:
            name = task.name
            if name in self.nodes:
                self.problems.append(
                    Problem(
                        message=f"two tasks are named '{name}' in this pipeline",
                        task=name,
                        hint="give each use its own name: task.with_options(name=\"...\")",
                    )
                )
                name = f"{name}__dup{len(self.nodes)}"
            return name
        base = task.name
        n = self.counts.get(base, 0)
        while True:
            candidate = base if n == 0 else f"{base}__{n}"
            n += 1
            if candidate not in self.nodes:
                break
        self.counts[base] = n
        return candidate

    # -- arguments --------------------------------------------------------------------------
    def _marker(self, value: Any) -> Any:
        t = type(value)
        if t is OutputRef:
            if value._owner is not self:
                self.problems.append(
                    Problem(
                        message=f"uses the output of '{value.task_id}' from another pipeline",
                        hint="call the upstream task inside this pipeline's body",
                    )
                )
            return TaskOutput(value.task_id)
        if t is ParamRef:
            return ParamValue(value.name)
        if t is list:
            return [self._marker(v) for v in value]
        if t is tuple:
            return tuple(self._marker(v) for v in value)
        if t is dict:
            return {k: self._marker(v) for k, v in value.items()}
        from cadenza.authoring.task import TaskDef

        if isinstance(value, TaskDef):
            self.problems.append(
                Problem(
                    message=f"passes the task '{value.name}' itself as an argument",
                    hint=f"call it to use its output: {value.name}(...)",
                )
            )
        return value

    def add(
        self,
        task: TaskDef[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        mapped: dict[str, Any] | None = None,
    ) -> OutputRef[Any]:
        node_id = self._new_id(task)
        sig = task.signature
        all_kwargs = dict(kwargs)
        mapped = mapped or {}
        for name in mapped:
            if name in all_kwargs:
                self.problems.append(
                    Problem(
                        message=f"argument '{name}' is given to both partial() and expand()",
                        task=node_id,
                        hint="bind it in one of them",
                    )
                )
        all_kwargs.update(mapped)
        try:
            bound = sig.bind(*args, **all_kwargs)
        except TypeError as exc:
            params = ", ".join(sig.parameters)
            self.problems.append(
                Problem(
                    message=f"cannot be called this way: {exc}",
                    task=node_id,
                    hint=f"its parameters are ({params})",
                )
            )
            bound = None
        call_kinds = {name: p.kind.name for name, p in sig.parameters.items()}
        arg_values: dict[str, Any] = {}
        if bound is not None:
            arg_values = {k: self._marker(v) for k, v in bound.arguments.items()}
        for name, value in mapped.items():
            kind = call_kinds.get(name)
            if kind in ("VAR_POSITIONAL", "VAR_KEYWORD"):
                self.problems.append(
                    Problem(
                        message=f"cannot expand over *{name}",
                        task=node_id,
                        hint="expand over a named parameter",
                    )
                )
            if type(value) not in (list, tuple, OutputRef, ParamRef):
                self.problems.append(
                    Problem(
                        message=f"expand({name}=...) needs a list or the output of an upstream "
                        f"task, got {type(value).__name__}",
                        task=node_id,
                        hint=f"pass a list: .expand({name}=[...])",
                    )
                )
            elif type(value) is tuple:
                arg_values[name] = list(arg_values[name])
        data_up: dict[str, None] = {}
        for v in arg_values.values():
            for m in _iter_task_outputs(v):
                data_up[m] = None
        self.nodes[node_id] = {
            "id": node_id,
            "task_name": task.name,
            "fn": task.fn,
            "fn_key": task.fn_key,
            "args": arg_values,
            "call_kinds": call_kinds,
            "mapped": tuple(mapped),
            "data_upstream": tuple(data_up),
            "order_upstream": [],
            "options": task.options,
            "explicit_name": task.explicit_name,
            "branch_targets": task.branch_targets,
        }
        self.by_def.setdefault(id(task), []).append(node_id)
        return OutputRef(node_id, self, is_mapped=bool(mapped))

    # -- order edges ------------------------------------------------------------------------
    def resolve_ids(self, value: Any) -> list[str]:
        from cadenza.authoring.task import TaskDef

        if isinstance(value, OutputRef):
            return [value.task_id]
        if isinstance(value, (list, tuple, set)):
            out: list[str] = []
            for v in value:
                out.extend(self.resolve_ids(v))
            return out
        if isinstance(value, TaskDef):
            used = self.by_def.get(id(value), [])
            if len(used) == 1:
                return used
            problem = (
                f"task '{value.name}' is not called in this pipeline body"
                if not used
                else f"task '{value.name}' is called {len(used)} times here, so "
                f"'{value.name}' in >> is ambiguous"
            )
            self.problems.append(
                Problem(
                    message=problem,
                    task=value.name,
                    hint="use the reference its call returned: ref = task(...); ref >> other",
                )
            )
            return []
        self.problems.append(
            Problem(
                message=f">> needs tasks or task outputs, got {type(value).__name__}",
                hint="write a >> b with the values that calling tasks returned",
            )
        )
        return []

    def add_order(self, ups: list[str], downs: list[str]) -> None:
        for d in downs:
            order = self.nodes[d]["order_upstream"]
            for u in ups:
                if u not in order and u != d:
                    order.append(u)
                elif u == d:
                    self.problems.append(
                        Problem(
                            message="depends on itself (a >> a)",
                            task=d,
                            hint="remove that >>",
                        )
                    )

    def build_nodes(self) -> dict[str, TaskNode]:
        out: dict[str, TaskNode] = {}
        for nid, f in self.nodes.items():
            fields = dict(f)
            fields["order_upstream"] = tuple(fields["order_upstream"])
            out[nid] = TaskNode(**fields)
        return out

    def raise_problems(self) -> None:
        if self.problems:
            raise DefinitionError(self.pipeline_name, self.problems)


def _iter_task_outputs(value: Any) -> Iterator[str]:
    t = type(value)
    if t is TaskOutput:
        yield value.task_id
    elif t is list or t is tuple:
        for v in value:
            yield from _iter_task_outputs(v)
    elif t is dict:
        for v in value.values():
            yield from _iter_task_outputs(v)


def signature_of(fn: Any) -> inspect.Signature:
    return inspect.signature(fn)
