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


@task(requirements=["six==1.16.0"], timeout=1.0)
def sleeps_past_timeout(pid_file: str) -> str:
    import os
    import time

    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(120)
    return "woke"


@pipeline
def env_timeout(pid_file: str) -> None:
    sleeps_past_timeout(pid_file)


@task(requirements=["six==1.16.0"], retries=1)
def dies_once(marker: str) -> str:
    import os
    import signal

    from cadenza import get_context

    if get_context().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies; no outcome comes back
    return f"attempt {get_context().attempt}"


@pipeline
def env_worker_lost(marker: str = "") -> None:
    dies_once(marker)


@task(requirements=["six==1.16.0"])
def sleeps(pid_file: str) -> str:
    import os
    import time

    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)
    return "woke"


@pipeline
def env_sleeper(pid_file: str) -> None:
    sleeps(pid_file)


@task(python="3.11")
def which_python() -> str:
    import platform

    return platform.python_version()


@pipeline
def explicit_python() -> None:
    which_python()


@task(requirements=["six==1.15.0"])
def six_of(i: int) -> str:
    import six

    return f"{i}:{six.__version__}"


@pipeline
def mapped_env() -> None:
    six_of.expand(i=[0, 1, 2, 3])


@task(python="3.99")
def far_future() -> str:
    return "never"


@pipeline
def missing_python() -> None:
    far_future()


BETWEEN_RUNS, WORKER_OWN = "CADENZA_TEST_BETWEEN_RUNS", "CADENZA_TEST_WORKER_OWN"


@task(requirements=["six==1.16.0"])
def environment_seen() -> dict[str, object]:
    """What the env worker sees; then it sets a variable of its own (as a library might)."""
    import os

    seen = {"value": os.environ.get(BETWEEN_RUNS), "cwd": os.getcwd(), "pid": os.getpid(),
            "own": os.environ.get(WORKER_OWN), "path": os.environ["PATH"],
            "venv": os.environ.get("VIRTUAL_ENV")}
    os.environ[WORKER_OWN] = "set in the worker"
    return seen


@pipeline
def env_environment() -> None:
    environment_seen()
