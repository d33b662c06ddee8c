"""Pipelines whose tasks run in their own uv environments (tests/integration/test_envs.py).

Tiny pure-Python pins: `six` 1.16.0 and 1.15.0 in one pipeline. The functions live here, in an
importable module, so the environment's interpreter loads them by reference.
"""

from __future__ import annotations

import sys

from cadenza import pipeline, task


def _six_version() -> dict[str, str]:
    import six  # from the task's own environment

    return {"six": six.__version__, "file": six.__file__, "python": sys.executable}


@task(requirements=["six==1.16.0"])
def six_new() -> dict[str, str]:
    return _six_version()


@task(requirements=["six==1.15.0"])
def six_old() -> dict[str, str]:
    return _six_version()


@task
def both(new: dict[str, str], old: dict[str, str]) -> list[str]:
    return [new["six"], old["six"]]


@pipeline
def conflicting_pins() -> None:
    both(six_new(), six_old())


@task(requirements=["six==1.16.0"], cache=True)
def cached_six() -> str:
    import six

    return str(six.__version__)


@pipeline
def cached_env() -> None:
    cached_six()


@task(requirements=["cadenza-no-such-package-zz==1.0"])
def broken() -> str:
    return "never"


@task(trigger_rule="all_done")
def after_broken(value: str | None = None) -> str:
    return "ran"


@pipeline
def broken_requirement() -> None:
    after_broken(broken())
