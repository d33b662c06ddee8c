"""What a task's isolated environment is: its requirement set and interpreter, normalised.

Pure: no I/O. What belongs here: checking `@task(requirements=..., python=...)` at definition
time, and the one normal form both the task's cache key (`engine/cache.py`) and the env
cache (`executors/envs.py`, which adds the machine's platform) hash, so that
`["Six == 1.16.0", "six==1.16.0"]` and `["six==1.16.0"]` are one environment; the digest of
a built env's resolved lock, which the cache key holds too (`lock_digest`). What does not:
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


def lock_digest(lock: str) -> str:
    """The digest of an env's resolved lock (`uv pip freeze`: one `name==version` a line) as
    it enters the task's cache key: its lines stripped, de-duplicated and sorted.

    Example:
        >>> lock_digest("six==1.16.0\nattrs==23.2.0\n") == lock_digest("attrs==23.2.0\nsix==1.16.0")
        True
    """
    import hashlib  # here: @task imports this module, and hashlib is ~10 M instructions

    lines = sorted({line.strip() for line in lock.splitlines() if line.strip()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]


def lock_changes(old: str, new: str) -> list[str]:
    """How two resolved locks differ, one item a package: "six 1.15.0 -> 1.17.0", "+attrs
    23.2.0", "-idna 3.7".

    Example:
        >>> lock_changes("six==1.15.0\nidna==3.7", "six==1.17.0\nattrs==23.2.0")
        ['+attrs 23.2.0', '-idna 3.7', 'six 1.15.0 -> 1.17.0']
    """
    def pins(lock: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in lock.splitlines():
            name, sep, version = line.strip().partition("==")
            if name:
                out[_normal(name)] = version if sep else line.strip()
        return out

    before, after = pins(old), pins(new)
    changes = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            changes.append(f"+{name} {after[name]}")
        elif name not in after:
            changes.append(f"-{name} {before[name]}")
        elif before[name] != after[name]:
            changes.append(f"{name} {before[name]} -> {after[name]}")
    return changes


def env_spec(requirements: Iterable[str], python: str | None) -> dict[str, Any] | None:
    """The environment a task asks for, as it enters its cache key; None when it runs in the
    driver's own environment (no requirements and no python)."""
    reqs = normalize_requirements(requirements)
    if not reqs and python is None:
        return None
    return {"requirements": list(reqs), "python": python}
