"""Task fingerprints and cache keys. Pure: reads source code and in-memory values, touches
no store.

What belongs here: what a task's result depends on besides its arguments, as digests that
are the same in every process and under every module name one file gets (`__main__` when
run as a script, its file name when `cadenza run` imports it). What does not: looking keys
up (`engine/cache.py`), explaining misses (`engine/preview.py`).

A task's fingerprint (`task_fingerprint`) has three parts:

1. Code. The SHA-256 of the normalised AST of the task's function (comments, formatting,
   docstrings and decorators do not count), and of every function and class of the user's
   project it reaches: called from the same module, from another project module, or as an
   attribute of a project module (`settings.helper()`), to any depth. Editing a helper the
   task calls changes the key; reformatting the file does not. "Project" means a file
   outside the standard library, site-packages/dist-packages and Cadenza itself.
2. Values. Every module global, project-module attribute (`import settings; settings.SCALE`:
   the code names both) and closure variable the task or its project code reads, hashed by
   content (`stable_digest`): scalars by type and value, containers recursively (dict key
   order and set order do not count), NumPy arrays by dtype, shape and bytes, other objects
   (dataclasses, pandas objects, estimators...) by the state they pickle (`__reduce_ex__`),
   never by a repr that may show an address. Functions and classes count as code, third-party
   modules, functions and classes by their distribution's version (`global np` ->
   `numpy==2.1.0`), the standard library, builtins, loggers, dunder names and Cadenza's own
   objects not at all.
3. Unhashable values: what cannot be hashed stably (open files, sockets, locks, clients
   holding them, generators). A task that reads one is not cacheable; `engine/cache.py`
   warns once and runs it every time, never a silent hit.

Cost. The code part is cached per function object (parsing source is the slow step); values
are re-read on every call, so a long-lived process (a notebook, the scheduler) sees a global
change. The engine calls this once per task per run, not per instance.
"""

from __future__ import annotations

import ast
import copyreg
import enum
import hashlib
import inspect
import json
import logging
import sys
import sysconfig
import textwrap
import types
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

_STDLIB_PREFIXES = tuple(
    p for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")} if p
)
_OWN_PACKAGE = str(Path(__file__).resolve().parents[1])
_MAX_DEPTH: Final = 20  # project functions followed
_MAX_VALUE_DEPTH: Final = 100  # nesting inside one value

# Code digests, per function or class object: parsing the source is the expensive part.
_code_digests: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


class UnhashableValue(Exception):
    """A value has no stable content hash (an open file, a socket, a lock, a generator, an
    object holding one). Internal: `task_fingerprint` turns it into an `Unhashable` entry."""

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(f"{type_name}: {reason}")
        self.type_name = type_name
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Unhashable:
    """A value a task reads that cannot be hashed stably: `name` as in `values`
    ("global client", "closure lock"), the type of the offending object, and why."""

    name: str
    type_name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFingerprint:
    """What a task's result depends on besides its arguments (see the module docstring).

    `code` digests `functions` (qualified name without the module -> AST digest); `values`
    maps "global NAME", "global module.NAME" or "closure NAME" to a content digest, or to
    "dist==version" for third-party code.
    """

    code: str
    functions: Mapping[str, str]
    values: Mapping[str, str] = field(default_factory=dict)
    unhashable: tuple[Unhashable, ...] = ()

    @property
    def is_cacheable(self) -> bool:
        return not self.unhashable


# -- where an object comes from -----------------------------------------------------------

_PROJECT, _THIRD_PARTY, _IGNORED = "project", "third-party", "ignored"


@cache
def _location(path: str | None, module_name: str) -> str:
    """Project, third-party (an installed distribution) or ignored (stdlib, Cadenza)."""
    top = module_name.partition(".")[0]
    if top == "cadenza":
        return _IGNORED
    if path:
        if path.startswith(("<", _OWN_PACKAGE)):  # code made by exec (dataclasses), Cadenza
            return _IGNORED
        parts = Path(path).parts
        if "site-packages" in parts or "dist-packages" in parts:
            return _THIRD_PARTY
        return _IGNORED if path.startswith(_STDLIB_PREFIXES) else _PROJECT
    # No file: a builtin or C-extension object, or a module the user loaded by hand.
    if top in sys.builtin_module_names or top in sys.stdlib_module_names or not top:
        return _IGNORED
    return _THIRD_PARTY if top in sys.modules else _PROJECT


def _where(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        path = getattr(obj, "__file__", None)
        if path is None:
            search = getattr(obj, "__path__", None)  # a namespace package
            path = next(iter(search), None) if search is not None else None
        return _location(path, obj.__name__)
    module_name = str(getattr(obj, "__module__", None) or "")
    if isinstance(obj, types.FunctionType):
        return _location(obj.__code__.co_filename, module_name)
    path = getattr(sys.modules.get(module_name), "__file__", None)
    if path is None and isinstance(obj, type):  # its module is not in sys.modules
        path = next((f.__code__.co_filename for f in vars(obj).values()
                     if isinstance(f, types.FunctionType)), None)
    return _location(path, module_name)


def _is_project_code(obj: Any) -> bool:
    """Defined in a file of the user's project (not the standard library, an installed
    package, or Cadenza itself)."""
    return _where(obj) == _PROJECT


@cache
def _distribution_version(top: str) -> str:
    """"dist==version" of the installed distribution that provides top-level module `top`."""
    import importlib.metadata  # ~20 ms: only when a task reads third-party code

    names = [top, top.replace("_", "-")]
    for name in names:  # the usual case, and cheap (packages_distributions() reads every dist)
        try:
            return f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    # An import name that is not its distribution's (sklearn, yaml, PIL): the module's own
    # __version__ first, because packages_distributions() reads the metadata of every
    # installed distribution (0.3-0.75 s with the test extra installed).
    version = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(version, str):
        return f"{top}=={version}"
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    module = sys.modules.get(top)
    return f"{top}=={getattr(module, '__version__', 'unknown')}"


def _version_of(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
    elif isinstance(obj, types.FunctionType):  # where it was defined (wraps() copies __module__)
        name = obj.__globals__.get("__name__", obj.__module__)
    else:
        name = getattr(obj, "__module__", "")
    return _distribution_version(str(name or "").partition(".")[0])


# -- code ---------------------------------------------------------------------------------


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


def _bytecode_text(code: types.CodeType) -> str:
    """Compiled code without source (no address: nested code objects are expanded)."""
    consts = [
        _bytecode_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts
    ]
    return repr((code.co_code, consts, code.co_names))


def _source_digest(obj: Any) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(source)
        # Decorators are not the function's logic (and @task options are keyed separately).
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                node.decorator_list = []
                break
        tree = _StripDocstrings().visit(tree)
        text = ast.dump(tree, annotate_fields=False, include_attributes=False)
    except (OSError, TypeError, SyntaxError, IndentationError):
        code = getattr(obj, "__code__", None)
        if code is not None:
            text = _bytecode_text(code)
        elif isinstance(obj, type):  # no source: its name and its methods' code
            methods = sorted(
                (name, _bytecode_text(f.__code__))
                for name, f in vars(obj).items()
                if isinstance(f, types.FunctionType)
            )
            text = repr((obj.__qualname__, methods))
        else:
            text = str(getattr(obj, "__qualname__", type(obj).__qualname__))
    return hashlib.sha256(text.encode()).hexdigest()


def _code_digest(obj: Any) -> str:
    try:
        digest = _code_digests.get(obj)
    except TypeError:
        return _source_digest(obj)  # not weak-referenceable
    if digest is None:
        digest = _source_digest(obj)
        _code_digests[obj] = digest
    return digest


_names_of: weakref.WeakKeyDictionary[types.CodeType, tuple[str, ...]] = (
    weakref.WeakKeyDictionary()
)


def _names(code: types.CodeType) -> tuple[str, ...]:
    """Global and attribute names `code` and the code nested in it (comprehensions, lambdas,
    inner functions) use, sorted."""
    found = _names_of.get(code)
    if found is None:
        names: set[str] = set(code.co_names)
        stack = [c for c in code.co_consts if isinstance(c, types.CodeType)]
        while stack:
            c = stack.pop()
            names.update(c.co_names)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        found = tuple(sorted(names))
        _names_of[code] = found
    return found


def _unwrap(obj: Any) -> Any:
    fn = getattr(obj, "fn", None)  # a TaskDef: fingerprint its function
    if fn is not None and callable(fn) and hasattr(obj, "options"):
        return fn
    return obj


def _is_ignored_value(value: Any) -> bool:
    """Read by tasks, but not what their result depends on: loggers, and Cadenza's own
    objects (get_context, Asset, task...) other than tasks."""
    if isinstance(value, (logging.Logger, logging.LoggerAdapter)):
        return True
    module = getattr(value, "__module__", None) if callable(value) else type(value).__module__
    return str(module or "").partition(".")[0] == "cadenza"


class _Walk:
    """One pass over a task's code and the values it reads."""

    def __init__(self, *, with_values: bool) -> None:
        self.with_values = with_values
        self.functions: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.owners: dict[str, int] = {}  # value name -> id of the object it named
        self.unhashable: list[Unhashable] = []
        self.seen: set[int] = set()
        self.seen_modules: set[tuple[int, tuple[str, ...]]] = set()
        self.keep: list[Any] = []  # the objects whose ids are in `seen` stay alive

    def visit_code(self, obj: Any, depth: int) -> None:
        obj = _unwrap(obj)
        if id(obj) in self.seen or depth > _MAX_DEPTH:
            return
        self.seen.add(id(obj))
        self.keep.append(obj)
        # The qualified name without the module: the same file imported under another name
        # (by the CLI, by `python file.py`, by a test) must give the same key.
        qual = str(getattr(obj, "__qualname__", type(obj).__qualname__))
        self.functions[qual] = _code_digest(obj)
        if isinstance(obj, types.FunctionType):
            self._visit_reads(obj, qual, depth)
        elif isinstance(obj, type):
            for attr in vars(obj).values():
                fn = attr.fget if isinstance(attr, property) else getattr(attr, "__func__", attr)
                if isinstance(fn, types.FunctionType) and _where(fn) == _PROJECT:
                    self._visit_reads(fn, qual, depth)

    def _visit_reads(self, fn: types.FunctionType, qual: str, depth: int) -> None:
        code = fn.__code__
        names = _names(code)
        g = fn.__globals__
        for name in names:
            if name in g and not (name.startswith("__") and name.endswith("__")):
                self.consider(f"global {name}", g[name], names, qual, depth)
        if fn.__closure__:
            for name, cell in zip(code.co_freevars, fn.__closure__, strict=False):
                try:
                    value = cell.cell_contents
                except ValueError:  # not yet assigned
                    continue
                self.consider(f"closure {name}", value, names, qual, depth)

    def consider(self, label: str, value: Any, names: tuple[str, ...], qual: str,
                 depth: int) -> None:
        target = _unwrap(value)
        if isinstance(target, (types.FunctionType, type)) and not _is_ignored_value(target):
            where = _where(target)
            if where == _PROJECT:
                self.visit_code(target, depth + 1)
                return
            if where == _THIRD_PARTY:
                self.add_value(label, target, lambda: _version_of(target), qual)
            wrapped = getattr(target, "__wrapped__", None)  # a library's decorator on ours
            if isinstance(wrapped, types.FunctionType) and _where(wrapped) == _PROJECT:
                self.visit_code(wrapped, depth + 1)
            return
        if isinstance(target, types.ModuleType):
            where = _where(target)
            if where == _THIRD_PARTY:
                self.add_value(label, target, lambda: _version_of(target), qual)
            elif where == _PROJECT and depth <= _MAX_DEPTH:
                # Once per module and per set of names: a helper may read other attributes.
                visit = (id(target), names)
                if visit in self.seen_modules:
                    return
                self.seen_modules.add(visit)
                self.keep.append(target)
                attrs = vars(target)
                kind, _, prefix = label.partition(" ")
                for name in names:
                    if name in attrs and not (name.startswith("__") and name.endswith("__")):
                        self.consider(f"{kind} {prefix}.{name}", attrs[name], names, qual,
                                      depth + 1)
            return
        wrapped = getattr(target, "__wrapped__", None)  # functools.cache and friends
        if isinstance(wrapped, types.FunctionType) and _where(wrapped) == _PROJECT:
            self.visit_code(wrapped, depth + 1)
            return
        if isinstance(target, (types.BuiltinFunctionType, types.MethodWrapperType)):
            if _location(None, str(getattr(target, "__module__", None) or "")) == _THIRD_PARTY:
                self.add_value(label, target, lambda: _version_of(target), qual)
            return
        if _is_ignored_value(target):
            return
        self.add_value(label, target, lambda: stable_digest(target), qual)

    def add_value(self, label: str, obj: Any, digest: Callable[[], str], qual: str) -> None:
        if not self.with_values:
            return
        owner = self.owners.get(label)
        if owner == id(obj):
            return
        if owner is not None:  # two modules' globals of one name: tell them apart
            label = f"{label} (read by {qual})"
        self.owners[label] = id(obj)
        self.keep.append(obj)
        try:
            self.values[label] = digest()
        except UnhashableValue as exc:
            outer = _type_name(obj)
            inner = "" if exc.type_name == outer else f"it holds a {exc.type_name}: "
            self.unhashable.append(
                Unhashable(name=label, type_name=outer, reason=inner + exc.reason)
            )


def task_fingerprint(fn: Callable[..., Any]) -> TaskFingerprint:
    """Code and value digests of `fn` (a function or a TaskDef) and the project code it
    reaches; see the module docstring.

    Example:
        >>> SCALE = 2
        >>> def scaled(x):
        ...     return x * SCALE
        >>> sorted(task_fingerprint(scaled).values)
        ['global SCALE']
    """
    walk = _Walk(with_values=True)
    walk.visit_code(fn, 0)
    return TaskFingerprint(
        code=_total(walk.functions),
        functions=dict(sorted(walk.functions.items())),
        values=dict(sorted(walk.values.items())),
        unhashable=tuple(walk.unhashable),
    )


def _total(functions: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(functions.items())).encode()).hexdigest()


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """The fingerprint of `fn` and the project code it calls (code only, no values)."""
    return code_fingerprint_parts(fn)[0]


def code_fingerprint_parts(fn: Callable[..., Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(fingerprint, ((qualified name, own digest), ...)) for fn and every project function
    it reaches: code only. The parts let `cadenza plan` say which function changed."""
    walk = _Walk(with_values=False)
    walk.visit_code(fn, 0)
    return _total(walk.functions), tuple(sorted(walk.functions.items()))


# -- values -------------------------------------------------------------------------------

_SCALARS: Final = (type(None), bool, int, float, complex, str, bytes)
_SCALAR_SET: Final = frozenset(_SCALARS)
_NEWOBJ: Final = (getattr(copyreg, "__newobj__"), getattr(copyreg, "__newobj_ex__"))  # noqa: B009 - not in the stubs


def stable_digest(value: Any) -> str:
    """A content digest of `value` that is the same in every process (see the module
    docstring for the rules). Raises UnhashableValue for what cannot be hashed stably.

    Example:
        >>> stable_digest({"a": 1, "b": {2, 3}}) == stable_digest({"b": {3, 2}, "a": 1})
        True
    """
    return _Hasher().digest(value, 0).hex()


class _Hasher:
    def __init__(self) -> None:
        self.path: dict[int, int] = {}  # id of a container being hashed -> its depth
        self.keep: list[Any] = []  # objects made while hashing stay alive: ids are not reused

    def digest(self, value: Any, depth: int) -> bytes:
        h = hashlib.sha256()
        self.feed(h, value, depth)
        return h.digest()

    def feed(self, h: Any, value: Any, depth: int) -> None:
        t = type(value)
        if t in _SCALARS:
            h.update(f"{t.__name__}:{value!r};".encode())
            return
        if depth > _MAX_VALUE_DEPTH:
            raise UnhashableValue(_type_name(value), "nested too deeply to hash")
        key = id(value)
        if key in self.path:  # a cycle: name the container it returns to
            h.update(f"cycle:{depth - self.path[key]};".encode())
            return
        self.path[key] = depth
        try:
            self._feed(h, value, depth + 1)
        finally:
            del self.path[key]

    def _feed(self, h: Any, value: Any, depth: int) -> None:
        t = type(value)
        if isinstance(value, enum.Enum):
            h.update(f"enum:{_class_name(t)}.{value.name};".encode())
        elif isinstance(value, (list, tuple)):
            h.update(f"{_class_name(t)}[{len(value)}](".encode())
            kinds = set(map(type, value))
            if len(kinds) == 1 and kinds <= _SCALAR_SET:  # common, maybe large: one repr
                h.update(f"{kinds.pop().__name__}:{value!r}".encode())
            elif kinds <= _SCALAR_SET:
                h.update(repr([(type(v).__name__, v) for v in value]).encode())
            else:
                for v in value:
                    self.feed(h, v, depth)
            h.update(b")")
        elif isinstance(value, dict):
            items = sorted((self.digest(k, depth), self.digest(v, depth))
                           for k, v in value.items())
            h.update(f"{_class_name(t)}{{{len(items)}}}".encode())
            for k, v in items:
                h.update(k + v)
        elif isinstance(value, (set, frozenset)):
            elements = sorted(self.digest(v, depth) for v in value)
            h.update(f"{_class_name(t)}<{len(elements)}>".encode())
            h.update(b"".join(elements))
        elif isinstance(value, bytearray):
            h.update(b"bytearray:" + bytes(value))
        elif isinstance(value, (types.FunctionType, type)):
            where = _where(value)
            if where == _PROJECT:
                h.update(f"code:{value.__qualname__}:{_code_digest(value)};".encode())
            else:
                h.update(f"ref:{value.__module__}.{value.__qualname__};".encode())
        elif isinstance(value, (types.BuiltinFunctionType, types.MethodWrapperType)):
            h.update(f"ref:{getattr(value, '__module__', '')}.{value.__qualname__};".encode())
        elif isinstance(value, types.ModuleType):
            where = _where(value)
            h.update(f"module:{_version_of(value) if where == _THIRD_PARTY else ''};".encode())
        elif isinstance(value, (logging.Logger, logging.LoggerAdapter)):
            h.update(b"logger;")
        elif (kind := _numpy_kind(value)) is not None:
            if kind == "array":
                self._feed_array(h, value, depth)
            else:
                h.update(f"npscalar:{value.dtype.str};".encode() + value.tobytes())
        else:
            self._feed_reduced(h, value, depth)

    def _feed_array(self, h: Any, value: Any, depth: int) -> None:
        h.update(f"ndarray:{value.dtype.str}:{value.shape};".encode())
        if value.dtype.hasobject:
            for v in value.ravel(order="C").tolist():
                self.feed(h, v, depth)
            return
        import numpy as np

        h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)

    def _feed_reduced(self, h: Any, value: Any, depth: int) -> None:
        """Any other object, by what it would pickle as: its class and its state."""
        try:
            reduced = value.__reduce_ex__(4)
        except Exception as exc:  # noqa: BLE001 - any refusal means "no stable content"
            raise UnhashableValue(_type_name(value), str(exc) or type(exc).__name__) from None
        if isinstance(reduced, str):  # a named singleton
            h.update(f"global:{_class_name(type(value))}.{reduced};".encode())
            return
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            raise UnhashableValue(_type_name(value), "its pickled form is not a tuple")
        self.keep.append(reduced)
        constructor, args, *rest = reduced
        if constructor in _NEWOBJ:
            h.update(f"new:{_class_name(args[0])};".encode())
            args = args[1:]
        else:
            self.feed(h, constructor, depth)
        self.feed(h, args, depth)
        state = rest[0] if rest else None
        self.feed(h, state, depth)
        for extra in rest[1:3]:  # list items, dict items: iterators
            self.feed(h, list(extra) if extra is not None else None, depth)


def _numpy_kind(value: Any) -> str | None:
    numpy = sys.modules.get("numpy")  # never imported here: a NumPy value means it is loaded
    if numpy is None:
        return None
    if isinstance(value, numpy.ndarray):
        return "array"
    return "scalar" if isinstance(value, numpy.generic) else None


def _class_name(cls: Any) -> str:
    """A class by name; a project class without its module (which differs between `python
    file.py` and `cadenza run`)."""
    if not isinstance(cls, type):
        return repr(cls)
    if _where(cls) == _PROJECT:
        return str(cls.__qualname__)
    return f"{cls.__module__}.{cls.__qualname__}"


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# -- input values and keys ----------------------------------------------------------------


def value_digest(value: Any) -> str:
    """Content hash of an input value (refs hash to their stored content hash)."""
    sha = getattr(value, "sha256", None)
    kind = getattr(value, "kind", None)
    if kind == "artifact" and sha:
        return str(sha)
    if kind == "json":
        value = value.value
    try:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        return hashlib.sha256(b"j" + data).hexdigest()
    except (TypeError, ValueError):
        pass
    if isinstance(value, (list, tuple)):
        inner = ",".join(value_digest(v) for v in value)
        return hashlib.sha256(f"{type(value).__name__}[{inner}]".encode()).hexdigest()
    if isinstance(value, dict):
        inner = ",".join(f"{k!r}:{value_digest(v)}" for k, v in sorted(value.items(), key=lambda kv: repr(kv[0])))
        return hashlib.sha256(f"dict{{{inner}}}".encode()).hexdigest()
    import cloudpickle

    return hashlib.sha256(b"p" + cloudpickle.dumps(value)).hexdigest()


def cache_key(
    *,
    fingerprint: str,
    version: str | None,
    inputs: Mapping[str, str],
    values: Mapping[str, str] | None = None,
    env: Mapping[str, Any] | None = None,
) -> str:
    """Key = code fingerprint + version + input digests (parameters are inputs too) + the
    digests of the values the code reads + the task's isolated environment (its normalised
    requirement set and python version, `graph/envspec.env_spec`), if it has one.

    Nothing about the run (its id, its pipeline, the time) is in the key, so any run of any
    pipeline that calls the same code on the same inputs shares the entry. A task that reads
    no values (or has no environment of its own) keeps the key it had before they were keyed.
    """
    body: dict[str, Any] = {"f": fingerprint, "v": version, "i": dict(sorted(inputs.items()))}
    if values:
        body["g"] = dict(sorted(values.items()))
    if env:
        body["e"] = dict(env)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
