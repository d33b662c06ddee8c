"""A pipeline's run parameters: validate given values, and describe them as a JSON schema.

What belongs here: checking the values a run is started with against the parameters the
pipeline's signature declares (`ParamSpec`s, read by authoring at definition time), and the
JSON schema a form, the REST API or a KFP compiler shows for them. What does not: reading
the signature or checking its defaults (authoring, once, at definition time).

pydantic is imported only when a value needs it (coercion, containers, errors) or a schema
is asked for: most runs take plain str/int/float/bool values, validated without it
(`_plain_values`), which keeps a fresh process's start ~0.1 s shorter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cadenza.core.errors import ParameterError
from cadenza.graph.model import ParamSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameters:
    """The parameters of pipeline `pipeline`, in signature order.

    Example:
        >>> values, stored = plan.parameters.validate({"n": "5"})
        >>> values, stored
        ({'n': 5}, {'n': 5})
        >>> plan.parameters.json_schema()["properties"]["n"]
        {'default': 1000, 'title': 'N', 'type': 'integer'}
    """

    pipeline: str
    specs: tuple[ParamSpec, ...] = ()
    # The pydantic model, built on first need (~0.7 ms, and pydantic's import).
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __iter__(self) -> Any:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.specs)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.specs if not p.has_default)

    @property
    def model(self) -> Any:
        """The pydantic model of the parameters (extra names forbidden)."""
        model = self._memo.get("model")
        if model is None:
            from pydantic import ConfigDict, create_model

            fields: dict[str, Any] = {
                p.name: (p.annotation, p.default if p.has_default else ...) for p in self.specs
            }
            model = create_model(
                f"{self.pipeline}_params",
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                **fields,
            )
            self._memo["model"] = model
        return model

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the parameters (pydantic's, with `additionalProperties: false`)."""
        schema: dict[str, Any] = self.model.model_json_schema()
        return schema

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(python values, JSON form to store). Raises ParameterError naming each problem."""
        known = {p.name for p in self.specs}
        unknown = [k for k in params if k not in known]
        if unknown:
            from cadenza.core.suggest import did_you_mean

            k = unknown[0]
            raise ParameterError(
                f"unknown parameter '{k}'." + did_you_mean(k, sorted(known)),
                pipeline=self.pipeline,
                hint=f"parameters are: {', '.join(sorted(known)) or '(none)'}",
            )
        plain = _plain_values(self.specs, params)
        if plain is not None:
            return plain, dict(plain)
        from pydantic import ValidationError

        try:
            model = self.model.model_validate(dict(params))
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                loc = ".".join(str(x) for x in err["loc"])
                lines.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
            spec = {p.name: type_label(p.annotation) for p in self.specs}
            first = exc.errors()[0]["loc"][0]
            raise ParameterError(
                "wrong parameters: " + "; ".join(lines),
                pipeline=self.pipeline,
                hint=f"'{first}' must be {spec.get(str(first), 'valid')}",
            ) from None
        values = {p.name: getattr(model, p.name) for p in self.specs}
        stored: dict[str, Any] = model.model_dump(mode="json")
        return values, stored


_PLAIN = (str, int, float, bool, type(None))


def _plain_values(params: tuple[ParamSpec, ...], given: Mapping[str, Any]) -> dict[str, Any] | None:
    """The validated values when pydantic would return them unchanged: every parameter
    given or defaulted is a str, int, bool or finite float of exactly its annotated type (or
    unannotated). None: let pydantic decide (coercion, containers, a missing value, errors).
    Building and running the pipeline's pydantic model costs ~0.7 ms, and importing pydantic
    ~0.1 s of a fresh process's start; most pipelines take only such plain parameters."""
    out: dict[str, Any] = {}
    for p in params:
        if p.name in given:
            value = given[p.name]
        elif p.has_default:
            value = p.default
        else:
            return None
        kind = type(value)
        if kind not in _PLAIN or (p.annotation is not Any and p.annotation is not kind):
            return None
        if kind is float and not math.isfinite(value):
            return None
        out[p.name] = value
    return out


def type_label(ann: Any) -> str:
    """How a parameter's type reads in an error ("int", "list[float]", "any value")."""
    if ann is Any:
        return "any value"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


__all__ = ["Parameters", "type_label"]
