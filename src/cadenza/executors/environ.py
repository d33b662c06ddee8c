"""The environment variables and working directory a task sees, across processes.

What belongs here: the variables a task sets for its own duration in the driver's process
(`overriding`, on inline and threads), the driver's environment as its worker processes should
see it (`driver_environment`: without those), and taking a kept worker from one driver
environment to the next (`environment_change` in the driver, `apply_environment` in the
worker; processes' "E" message, env workers' calls). What does not: when a worker is given
it (executors/processes/pool.py at a run's start, executors/envs.py at each call).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

__all__ = ["apply_environment", "driver_environment", "environment_change", "overriding"]

# The variables that tasks running in this process have set for their duration (a GPU task's
# CUDA_VISIBLE_DEVICES on threads): name -> (how many such tasks run now, the value before
# the first). Restored when the last of them ends, and left out of `driver_environment`.
_overrides: dict[str, tuple[int, str | None]] = {}
_overrides_lock = threading.Lock()


@contextmanager
def overriding(env: Mapping[str, str]) -> Iterator[None]:
    """Set `env` in this process for the block (a task's own variables, on inline and
    threads), then put back what was there."""
    if not env:
        yield
        return
    with _overrides_lock:
        for k in env:
            n, before = _overrides.get(k, (0, os.environ.get(k)))
            _overrides[k] = (n + 1, before)
        os.environ.update(env)
    try:
        yield
    finally:
        with _overrides_lock:
            for k in env:
                n, before = _overrides[k]
                if n > 1:
                    _overrides[k] = (n - 1, before)
                    continue
                del _overrides[k]
                if before is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = before


def driver_environment(cwd: str | None = None) -> tuple[dict[str, str], str | None]:
    """This process's environment variables and working directory, for the worker processes
    that run its tasks: without what tasks running here set for their own duration (another
    task's GPU devices are not the driver's), and `cwd` when the working directory is gone."""
    with _overrides_lock:
        while True:
            try:
                env = dict(os.environ)
                break
            except KeyError:  # a variable went while being copied (user code in a thread)
                continue
        for k, (_, before) in _overrides.items():
            if before is None:
                env.pop(k, None)
            else:
                env[k] = before
    try:
        cwd = os.getcwd()
    except OSError:
        pass  # the folder was deleted: the one given (the last known), or the inherited one
    return env, cwd


def environment_change(old: Mapping[str, str] | None, new: Mapping[str, str]
                       ) -> tuple[dict[str, str], list[str]]:
    """The variables a worker must set and drop to go from the driver's `old` environment to
    its `new` one: only what the driver changed, so what the worker's own tasks or libraries
    set (a thread count, a device list) stays unless the driver changed that variable too."""
    before = old if old is not None else {}
    return ({k: v for k, v in new.items() if before.get(k) != v},
            [k for k in before if k not in new])


def apply_environment(changed: Mapping[str, str], removed: Iterable[str],
                      cwd: str | None) -> None:
    """Worker side of `environment_change`, and the driver's working directory (None: the
    driver's is gone; the worker keeps its own)."""
    for key in removed:
        os.environ.pop(key, None)
    os.environ.update(changed)
    if cwd is None:
        return
    try:
        os.chdir(cwd)
    except OSError:
        pass  # the folder went away: the task sees the one it had
