"""Cheaper construction of frozen, slotted dataclasses (the records, calls and outcomes).

What belongs here: `fast_init`, which gives such a class an `__init__` that sets each field
through its slot, with the signature dataclasses gave it. What does not: anything else about
the classes (equality, hashing, repr, `replace()`, pickling and the frozen `__setattr__` are
dataclasses' own and unchanged).

Why by hand (STYLE: speed): a frozen dataclass's generated `__init__` sets each field with
`object.__setattr__` (the class refuses its own `__setattr__`), ~1.9 k instructions a field
on CPython 3.11 (callgrind), while a slot's descriptor sets it for a fraction of that. A
chained step of the engine builds a task-instance record (18 fields), an attempt (10), a
call (20) and, on inline and threads, an outcome (13) and its output's ValueRef (8): about a
tenth of the driver's instructions per task went to setting fields. The generated function
is built with `exec`, from the class's field names only, as dataclasses builds its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type[Any])


class _Missing:
    """The default of a field with a default factory: the factory is called instead."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory default>"


_MISSING = _Missing()


def fast_init(cls: _C) -> _C:
    """Replace `cls.__init__` (a frozen, slotted, keyword-only dataclass without
    `__post_init__`) with one that sets the slots directly; same parameters, defaults and
    default factories. Apply it above `@dataclass(...)`."""
    params = getattr(cls, "__dataclass_params__", None)
    fields = dataclasses.fields(cls)
    if (params is None or not params.frozen or "__slots__" not in cls.__dict__
            or hasattr(cls, "__post_init__")
            or any(not f.init or not f.kw_only for f in fields)):
        raise TypeError(f"{cls.__qualname__}: fast_init takes a frozen, slotted dataclass "
                        "whose fields are all keyword-only init fields, without __post_init__")
    namespace: dict[str, Any] = {"_MISSING": _MISSING}
    signature: list[str] = []
    body: list[str] = []
    for f in fields:
        name = f.name
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = f.default
            signature.append(f"{name}=_default_{name}")
            body.append(f"    _set_{name}(self, {name})")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = f.default_factory
            signature.append(f"{name}=_MISSING")
            body.append(f"    _set_{name}(self, _factory_{name}() "
                        f"if {name} is _MISSING else {name})")
        else:
            signature.append(name)
            body.append(f"    _set_{name}(self, {name})")
    source = (f"def __init__(self, *, {', '.join(signature)}):\n" + "\n".join(body) + "\n"
              if fields else "def __init__(self):\n    pass\n")
    exec(source, namespace)  # noqa: S102 - source built from the dataclass's field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init
    return cls
