"""Pipelines for the ray executor's own tests (tests/integration/test_ray.py): where a task
runs (`ray.get_runtime_context()` inside the task), tasks that wait on a gate file, one that
outlives its timeout, a wide map, and resources no node has."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cadenza import pipeline, task


def _node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


@task(resources={"special": 1})
def on_special() -> str:
    return _node()


@task
def anywhere() -> str:
    return _node()


@pipeline
def placed():
    on_special()
    anywhere()


@task(retries=2)
def gated(i: int, folder: str) -> str:
    """Say where it runs (FOLDER/<i>.<attempt>: node pid), then wait for FOLDER/release."""
    from cadenza import get_context

    attempt = get_context().attempt
    Path(folder, f"{i}.{attempt}").write_text(f"{_node()} {os.getpid()}")
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the task")
        time.sleep(0.02)
    return f"{i} done on attempt {attempt}"


@pipeline
def gated_pair(folder: str):
    gated.partial(folder=folder).expand(i=[0, 1])


@task(timeout=1)
def sleeps(folder: str) -> str:
    Path(folder, "sleeper.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return "woke"


@pipeline
def too_slow(folder: str):
    sleeps(folder)


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@pipeline
def wide_map(n: int):
    total(inc.expand(x=numbers(n)))


@task(resources={"TPU": 1})
def wants_tpu() -> str:
    return "never"


@pipeline
def no_such_resource():
    wants_tpu()


@task
def waits(folder: str) -> str:
    Path(folder, "waiter.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return "woke"


@pipeline
def waiting(folder: str):
    waits(folder)


@task(timeout=3)
def first_is_slow(i: int, folder: str) -> int:
    """Instance 0 outlives its timeout; the others wait until it started, then return, so
    each actor has a call queued behind its running one while instance 0 runs."""
    if i == 0:
        Path(folder, "slow.pid").write_text(str(os.getpid()))
        time.sleep(60)
    deadline = time.monotonic() + 60
    while not Path(folder, "slow.pid").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("instance 0 never started")
        time.sleep(0.02)
    return i


@pipeline
def slow_first(folder: str):
    first_is_slow.partial(folder=folder).expand(i=[0, 1, 2, 3])


@pipeline
def gated_four(folder: str):
    gated.partial(folder=folder).expand(i=[0, 1, 2, 3])


@task(resources={"special": 1})
def speaks() -> str:
    """Prints where it runs: the line goes to the attempt's log."""
    print(f"hello from node {_node()}")
    return _node()


@pipeline
def speaking():
    speaks()
