"""What a task's isolated environment is: its requirement set and interpreter, normalised.

Pure: no I/O. What belongs here: checking `@task(requirements=..., python=...)` at definition
time, and the one normal form both the task's cache key (`engine/cache.py`) and the env
cache (`executors/envs.py`, which adds the machine's platform) hash, so that
`["Six == 1.16.0", "six==1.16.0"]` and `["six==1.16.0"]` are one environment. What does not:
building or finding environments (`executors/envs.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# A requirement starts with a distribution name (PEP 508): "six==1.16.0", "pkg[extra]>=2",
# "pkg @ https://...", "pkg; python_version < '3.12'".
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_PYTHON = re.compile(r"^3\.\d{1,2}(?:\.\d{1,3})?$")

REQUIREMENTS_EXAMPLE = '@task(requirements=["scikit-learn==1.5.2"])'
PYTHON_EXAMPLE = '@task(requirements=[...], python="3.11")'


def check_requirements(value: Any) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """(requirements, [(problem, fix), ...]) for the raw `requirements=` option."""
    if value is None:
        return (), []
    if isinstance(value, str):
        return (), [((f"requirements must be a list of requirement strings, got the string "
                     f"{value!r}"), f'@task(requirements=["{value}"])')]
    if not isinstance(value, (list, tuple)):
        return (), [((f"requirements must be a list of requirement strings, got "
                     f"{type(value).__name__}"), REQUIREMENTS_EXAMPLE)]
    problems: list[tuple[str, str]] = []
    kept: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            problems.append((f"requirements must hold non-empty strings, got {item!r}",
                             REQUIREMENTS_EXAMPLE))
        elif item.lstrip().startswith("-"):
            problems.append((f"requirement {item!r} is a pip option, not a requirement",
                             (f"list requirements only, as in {REQUIREMENTS_EXAMPLE}; set a "
                             "package index with the UV_INDEX_URL environment variable")))
        elif _NAME.match(item) is None:
            problems.append((f"requirement {item!r} does not start with a package name",
                             ('@task(requirements=["name==version"]), or "name @ https://..." '
                             "for a URL")))
        else:
            kept.append(item.strip())
    return tuple(kept), problems


def check_python(value: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """(python, [(problem, fix)]) for the raw `python=` option: a version like "3.11"."""
    if value is None:
        return None, []
    text = str(value).strip() if isinstance(value, (str, float)) else None
    if text is None or _PYTHON.match(text) is None:
        return None, [(f"python must be a Python version like \"3.11\", got {value!r}",
                       PYTHON_EXAMPLE)]
    return text, []


def _normal(req: str) -> str:
    """One requirement in a canonical spelling: the name lower-cased with runs of -_. as one
    dash (PEP 503), no spaces in the name/version part, the marker's spaces collapsed."""
    spec, sep, marker = req.partition(";")
    match = _NAME.match(spec)
    if match is None:  # refused at definition; keep it as written
        return req.strip()
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    rest = spec[match.end():]
    if "@" in rest:  # a URL: keep its case, drop the spaces around "@"
        rest = "@" + rest.split("@", 1)[1].strip()
    else:
        rest = re.sub(r"\s+", "", rest).lower()
    text = name + rest
    if sep:
        text += "; " + " ".join(marker.split())
    return text


def normalize_requirements(requirements: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated, canonical requirements.

    Example:
        >>> normalize_requirements(["Six == 1.16.0", "six==1.16.0", "attrs"])
        ('attrs', 'six==1.16.0')
    """
    return tuple(sorted({_normal(r) for r in requirements}))


def env_spec(requirements: Iterable[str], python: str | None) -> dict[str, Any] | None:
    """The environment a task asks for, as it enters its cache key; None when it runs in the
    driver's own environment (no requirements and no python)."""
    reqs = normalize_requirements(requirements)
    if not reqs and python is None:
        return None
    return {"requirements": list(reqs), "python": python}
