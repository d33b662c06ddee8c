"""Code fingerprints and cache keys. Pure: reads source code, touches no store.

A task's fingerprint is the SHA-256 of its normalised AST (comments, formatting and
docstrings do not count), plus the fingerprints of the functions it calls that live in the
user's project (same module, or a module outside site-packages and the standard library),
followed to any depth, plus the values of simple closure variables. So editing a helper the
task calls changes the key; reformatting the file does not.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import sys
import sysconfig
import textwrap
import types
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_cache: weakref.WeakKeyDictionary[Any, tuple[str, tuple[tuple[str, str], ...]]] = (
    weakref.WeakKeyDictionary()
)
_EXCLUDED_PREFIXES = tuple(
    p
    for p in {
        sysconfig.get_paths().get("stdlib"),
        sysconfig.get_paths().get("platstdlib"),
        sysconfig.get_paths().get("purelib"),
        sysconfig.get_paths().get("platlib"),
    }
    if p
)


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
        text = repr(code.co_code + repr(code.co_consts).encode()) if code else repr(obj)
    return hashlib.sha256(text.encode()).hexdigest()


_OWN_PACKAGE = str(Path(__file__).resolve().parents[1])


def _is_project_code(obj: Any) -> bool:
    """Defined in a file of the user's project (not the standard library, an installed
    package, or Cadenza itself)."""
    code = getattr(obj, "__code__", None)
    path = code.co_filename if code is not None else None
    if path is None:
        module = sys.modules.get(getattr(obj, "__module__", "") or "")
        path = getattr(module, "__file__", None)
    if not path or path.startswith("<"):
        return False
    return not path.startswith(_EXCLUDED_PREFIXES) and not path.startswith(_OWN_PACKAGE)


def _unwrap(obj: Any) -> Any:
    fn = getattr(obj, "fn", None)  # a TaskDef: fingerprint its function
    if fn is not None and callable(fn) and hasattr(obj, "options"):
        return fn
    return obj


def _referenced(fn: types.FunctionType) -> list[tuple[str, Any]]:
    """Globals and closure values the function refers to, by name."""
    out: list[tuple[str, Any]] = []
    code = fn.__code__
    names: set[str] = set(code.co_names)
    stack = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    g = fn.__globals__
    for name in sorted(names):
        if name in g:
            out.append((name, g[name]))
    if fn.__closure__:
        for name, cell in zip(code.co_freevars, fn.__closure__, strict=False):
            try:
                out.append((name, cell.cell_contents))
            except ValueError:
                continue
    return out


def _simple_value_digest(value: Any) -> str | None:
    if isinstance(value, (str, int, float, bool, type(None), tuple, list, dict)):
        try:
            return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()
        except (TypeError, ValueError):
            return None
    return None


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """The fingerprint of `fn` and the project code it calls."""
    return code_fingerprint_parts(fn)[0]


def code_fingerprint_parts(fn: Callable[..., Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(fingerprint, ((qualified name, own digest), ...) for fn and every project function it
    reaches). The parts let `cadenza plan` say which function changed."""
    fn = _unwrap(fn)
    try:
        cached = _cache.get(fn)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    parts: dict[str, str] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        obj = _unwrap(obj)
        if id(obj) in seen or depth > 20:
            return
        seen.add(id(obj))
        # The qualified name without the module: the same file imported under another name
        # (by the CLI, by `python file.py`, by a test) must give the same key.
        qual = str(getattr(obj, "__qualname__", repr(obj)))
        parts[qual] = _source_digest(obj)
        if isinstance(obj, types.FunctionType):
            for name, value in _referenced(obj):
                target = _unwrap(value)
                if isinstance(target, (types.FunctionType, type)) and _is_project_code(target):
                    visit(target, depth + 1)
                elif isinstance(obj, types.FunctionType) and name in obj.__code__.co_freevars:
                    digest = _simple_value_digest(value)
                    if digest:
                        parts[f"{qual}<closure {name}>"] = digest

    visit(fn, 0)
    items = tuple(sorted(parts.items()))
    total = hashlib.sha256(json.dumps(items).encode()).hexdigest()
    result = (total, items)
    try:
        _cache[fn] = result
    except TypeError:
        pass  # not weak-referenceable (a builtin): recomputed next time, which is cheap
    return result


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


def cache_key(*, fingerprint: str, version: str | None, inputs: Mapping[str, str]) -> str:
    """Key = code fingerprint + version + input digests (parameters are inputs too).

    Nothing about the run (its id, its pipeline, the time) is in the key, so any run of any
    pipeline that calls the same code on the same inputs shares the entry.
    """
    payload = json.dumps(
        {"f": fingerprint, "v": version, "i": dict(sorted(inputs.items()))}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()
