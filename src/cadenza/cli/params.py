"""`--param k=v` and `--input name=value`: from command-line text to Python values.

Each value is kept as text when the parameter's type accepts text (`str`, `Path`, a date,
and numbers and booleans, which pydantic parses from text); otherwise it is read as JSON
(`--param sizes=[1,2,3]`, `--param config='{"depth": 3}'`). Unannotated parameters take JSON
when the text is JSON (`--param n=5` is the int 5) and the text itself otherwise. The final
check is the pipeline's own `validate_params`, so errors name the parameter and its type.
"""

from __future__ import annotations

import json
from typing import Any

from cadenza.core.errors import UsageError
from cadenza.graph.plan import Plan

_NOT_JSON = object()


def split_pairs(items: list[str], option: str) -> dict[str, str]:
    """["n=5", "name=x=y"] -> {"n": "5", "name": "x=y"}; a usage error for "n"."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"{option} expects NAME=VALUE, got '{item}'",
                hint=f"{option} n=5 (lists and dicts as JSON: {option} sizes='[1, 2]')",
            )
        if key in pairs:
            raise UsageError(f"{option} {key} is given twice",
                             hint=f"pass each {option} once")
        pairs[key] = value
    return pairs


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def coerce(text: str, annotation: Any) -> Any:
    """The value to hand to pydantic for `text` given the parameter's annotation."""
    from typing import Any as AnyType

    if annotation is AnyType or annotation is None:
        parsed = _json(text)
        return text if parsed is _NOT_JSON else parsed
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - a type pydantic cannot build; let validate_params say so
        parsed = _json(text)
        return text if parsed is _NOT_JSON else parsed
    try:
        adapter.validate_python(text)
    except ValidationError:
        parsed = _json(text)
        return text if parsed is _NOT_JSON else parsed
    return text


def parse_params(pipe: Plan, items: list[str]) -> dict[str, Any]:
    """`--param` items -> the dict to pass to `pipe.validate_params` (not yet validated)."""
    pairs = split_pairs(items, "--param")
    hints = {p.name: p.annotation for p in pipe.params}
    out: dict[str, Any] = {}
    for key, text in pairs.items():
        out[key] = coerce(text, hints.get(key))
    return out


def validate_params(pipe: Plan, params: dict[str, Any]) -> None:
    """`pipe.validate_params`, with a hint about JSON when a text value was refused."""
    from cadenza.core.errors import ParameterError

    try:
        pipe.validate_params(params)
    except ParameterError as exc:
        texts = [k for k, v in params.items() if isinstance(v, str) and v[:1] in "[{"]
        if texts:
            k = texts[0]
            extra = (f"--param {k}=... is read as JSON for lists and dicts; check its syntax, "
                     f"e.g. --param {k}='[1, 2]' or --param {k}='{{\"a\": 1}}'")
            exc.hint = f"{exc.hint}; {extra}" if exc.hint else extra
        raise


def parse_inputs(items: list[str]) -> dict[str, Any]:
    """`--input name=value`: JSON when it parses, the text otherwise."""
    pairs = split_pairs(items, "--input")
    out: dict[str, Any] = {}
    for key, text in pairs.items():
        parsed = _json(text)
        out[key] = text if parsed is _NOT_JSON else parsed
    return out
