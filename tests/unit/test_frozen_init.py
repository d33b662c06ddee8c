"""core/frozen.py `fast_init`: the records, calls and outcomes are built through their slots,
and behave as dataclasses built them (signature, defaults, factories, equality, hashing,
replace, pickling, frozenness)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from cadenza.core import records, results
from cadenza.core.frozen import fast_init
from cadenza.executors import base

FAST = [cls for module in (results, records, base) for cls in vars(module).values()
        if isinstance(cls, type) and cls.__module__ == module.__name__
        and dataclasses.is_dataclass(cls) and cls.__init__.__code__.co_filename == "<string>"
        and "_set_" in " ".join(cls.__init__.__code__.co_names)]


def _plain_twins() -> dict[str, type[Any]]:
    """The same modules' classes as plain dataclasses (without fast_init), to compare with."""
    twins: dict[str, type[Any]] = {}
    for module in (results, records, base):
        source = Path(module.__file__ or "").read_text().replace("@fast_init\n", "")
        copy = types.ModuleType(f"_plain_{module.__name__.replace('.', '_')}")
        sys.modules[copy.__name__] = copy
        try:
            exec(compile(source, module.__file__ or "", "exec"), copy.__dict__)  # noqa: S102
        finally:
            del sys.modules[copy.__name__]
        twins.update({name: obj for name, obj in vars(copy).items()
                      if isinstance(obj, type) and dataclasses.is_dataclass(obj)})
    return twins


def test_the_hot_classes_are_built_through_their_slots() -> None:
    names = {cls.__name__ for cls in FAST}
    assert {"TaskInstanceRecord", "AttemptRecord", "RunRecord", "ValueRef", "ErrorInfo",
            "MetricRecord", "TaskCall", "TaskOutcome"} <= names


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_same_signature_and_fields_as_dataclasses_init(cls: type[Any]) -> None:
    plain = _plain_twins()[cls.__name__]
    assert inspect.signature(cls).parameters.keys() == inspect.signature(plain).parameters.keys()
    required = {f.name: _sample(f) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    built, reference = cls(**required), plain(**required)
    for f in dataclasses.fields(cls):  # defaults and factories as dataclasses gives them
        assert getattr(built, f.name) == getattr(reference, f.name), f.name
    if any(f.default_factory is not dataclasses.MISSING for f in dataclasses.fields(cls)):
        other = cls(**required)
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING:
                assert getattr(other, f.name) is not getattr(built, f.name), "a fresh default"
    assert built == cls(**required)
    try:
        hash(reference)
    except TypeError:  # a dict field (params, context): unhashable either way
        with pytest.raises(TypeError):
            hash(built)
    else:
        assert hash(built) == hash(cls(**required))
    assert pickle.loads(pickle.dumps(built)) == built
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, first, getattr(built, first))
    changed = dataclasses.replace(built, **{first: _other(getattr(built, first))})
    assert getattr(changed, first) != getattr(built, first)
    with pytest.raises(TypeError):
        cls(*required.values())  # keyword-only, like dataclasses'
    if required:
        with pytest.raises(TypeError, match="missing"):
            cls()
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(**required, no_such_field=1)


def test_it_refuses_classes_it_cannot_build() -> None:
    @dataclasses.dataclass(slots=True, kw_only=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise AssertionError("skipped by a builder")

    @dataclasses.dataclass(frozen=True, slots=True)
    class Positional:
        a: int

    for cls in (NotFrozen, Checked, Positional):
        with pytest.raises(TypeError, match="fast_init takes"):
            fast_init(cls)


def _sample(f: dataclasses.Field[Any]) -> Any:
    return {"run_id": "r1", "task_id": "t1", "pipeline": "p", "name": "n", "kind": "json",
            "sha256": "ab", "asset": "a", "map_index": 0, "attempt": 1}.get(f.name, f.name)


def _other(value: Any) -> Any:
    return value + "x" if isinstance(value, str) else 7 if value != 7 else 8
