"""Output references: what calling a task inside a pipeline body returns.

`a >> b` makes an order-only dependency (lists on either side work, and a task itself
stands for its only use in the body). Refs refuse `bool()`, iteration and arithmetic with an
error that explains why: inside a pipeline body nothing has run yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cadenza.core.errors import DefinitionError, Problem

if TYPE_CHECKING:
    from cadenza.authoring.builder import GraphBuilder

T = TypeVar("T")


def _not_yet(what: str, label: str, pipeline: str | None) -> DefinitionError:
    return DefinitionError(
        pipeline,
        [
            Problem(
                message=f"{what} {label} inside the pipeline body, but it has no value yet: "
                "a pipeline body only wires tasks together, it runs nothing",
                task=None,
                hint="do this inside a @task that receives the value as an argument "
                "(use @task.branch to choose between downstream tasks)",
            )
        ],
    )


class _Wirable:
    """Shared `>>` / `<<` behaviour of refs and task definitions."""

    def _wire_ids(self) -> list[str]:
        raise NotImplementedError

    def _builder(self) -> GraphBuilder:
        raise NotImplementedError

    def __rshift__(self, other: Any) -> Any:
        builder = self._builder()
        builder.add_order(self._wire_ids(), builder.resolve_ids(other))
        return other

    def __lshift__(self, other: Any) -> Any:
        builder = self._builder()
        builder.add_order(builder.resolve_ids(other), self._wire_ids())
        return other

    def __rrshift__(self, other: Any) -> Any:  # [a, b] >> self
        builder = self._builder()
        builder.add_order(builder.resolve_ids(other), self._wire_ids())
        return self

    def __rlshift__(self, other: Any) -> Any:  # [a, b] << self
        builder = self._builder()
        builder.add_order(self._wire_ids(), builder.resolve_ids(other))
        return self


class OutputRef(_Wirable, Generic[T]):
    """The future output of one task in a pipeline (a list, in map order, if it is mapped)."""

    __slots__ = ("_owner", "is_mapped", "task_id")

    def __init__(self, task_id: str, owner: GraphBuilder, *, is_mapped: bool = False) -> None:
        self.task_id = task_id
        self._owner = owner
        self.is_mapped = is_mapped

    def _wire_ids(self) -> list[str]:
        return [self.task_id]

    def _builder(self) -> GraphBuilder:
        return self._owner

    def __repr__(self) -> str:
        kind = "mapped output" if self.is_mapped else "output"
        return f"<{kind} of task '{self.task_id}'>"

    def __bool__(self) -> bool:
        raise _not_yet("used the output of task", f"'{self.task_id}' as a condition",
                       self._owner.pipeline_name)

    def __iter__(self) -> Any:
        raise _not_yet("iterated over the output of task", f"'{self.task_id}'",
                       self._owner.pipeline_name)

    def __len__(self) -> int:
        raise _not_yet("took len() of the output of task", f"'{self.task_id}'",
                       self._owner.pipeline_name)

    def __hash__(self) -> int:
        return hash((id(self._owner), self.task_id))

    def __eq__(self, other: object) -> bool:
        raise _not_yet("compared the output of task", f"'{self.task_id}'",
                       self._owner.pipeline_name)

    __ne__ = __eq__


class ParamRef:
    """A pipeline parameter while the body is traced: only known when the run starts."""

    __slots__ = ("_pipeline", "name")

    def __init__(self, name: str, pipeline: str) -> None:
        self.name = name
        self._pipeline = pipeline

    def __repr__(self) -> str:
        return f"<parameter '{self.name}'>"

    def __bool__(self) -> bool:
        raise _not_yet("used parameter", f"'{self.name}' as a condition", self._pipeline)

    def __iter__(self) -> Any:
        raise _not_yet("iterated over parameter", f"'{self.name}'", self._pipeline)

    def _arith(self, *_: Any) -> Any:
        raise _not_yet("computed with parameter", f"'{self.name}'", self._pipeline)

    def __eq__(self, other: object) -> bool:
        raise _not_yet("compared parameter", f"'{self.name}'", self._pipeline)

    __ne__ = __eq__

    def __hash__(self) -> int:
        return hash(("param", self.name))

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = _arith
    __lt__ = __le__ = __gt__ = __ge__ = _arith
    __getitem__ = _arith
