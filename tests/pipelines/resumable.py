"""Pipelines for resume and crash tests. Side effects are counted in files, so counts
survive worker and driver processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cadenza import get_context, pipeline, task
from tests.pipelines.common import bump


@task
def extract(folder: str) -> list[int]:
    bump(folder, "extract")
    Path(folder, "run_id").write_text(get_context().run_id)
    return [1, 2, 3, 4]


@task
def transform(x: int, folder: str) -> int:
    bump(folder, f"transform-{x}")
    if x == 3 and not Path(folder, "fixed").exists():
        raise ValueError("element 3 is broken until the 'fixed' file exists")
    return x * 10


@task
def load(values: list[int], folder: str) -> int:
    bump(folder, "load")
    return sum(values)


@pipeline
def etl(folder: str):
    xs = extract(folder)
    ys = transform.partial(folder=folder).expand(x=xs)
    load(ys, folder)


@task
def step(name: str, folder: str, after: int = 0) -> str:
    bump(folder, name)
    return name


@task
def blocker(prev: str, folder: str) -> str:
    """Signals it started, then waits until released (or 120 s)."""
    n = bump(folder, "blocker")
    Path(folder, f"blocker-started-{n}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)
    return prev + "+blocker"


@task
def finish(prev: str, other: str, folder: str) -> str:
    bump(folder, "finish")
    return prev + "+finish+" + other


@pipeline
def crashy(folder: str):
    a = step("a", folder)
    b = step.with_options(name="b")("b", folder)
    c = blocker(a, folder)
    b >> c  # so both a and b are recorded finished when the blocker starts
    finish(c, b, folder)


@task(cache=True)
def expensive(n: int, folder: str) -> list[int]:
    bump(folder, "expensive")
    return list(range(n))


@task(cache=True, version="1")
def summarise(xs: list[int], folder: str) -> int:
    bump(folder, "summarise")
    return sum(xs)


@pipeline
def cached(n: int, folder: str):
    summarise(expensive(n, folder), folder)


@task
def big_array(mb: int):
    import numpy as np

    return np.ones(mb * 1024 * 1024 // 8, dtype=np.float64)


@task
def array_sum(arr) -> float:
    return float(arr.sum())


@pipeline
def big_output(mb: int = 50):
    array_sum(big_array(mb))


@task(cache=True)
def make_array(folder: str):
    import numpy as np

    bump(folder, "make_array")
    return np.arange(1000, dtype=np.int64)


@task
def checked_sum(arr, folder: str) -> int:
    if not Path(folder, "fixed").exists():
        raise ValueError("not fixed yet")
    return int(arr.sum())


@pipeline
def fragile(folder: str):
    checked_sum(make_array(folder), folder)


@task(cache=True)
def vector(i: int, folder: str):
    import numpy as np

    bump(folder, "vector")
    return np.full(20_000, i, dtype=np.int64)  # large enough to be an artifact


@task(cache=True)
def vector_sum(v, folder: str) -> int:
    bump(folder, "vector_sum")
    return int(v.sum())


@pipeline
def chained_artifacts(folder: str):
    vs = vector.partial(folder=folder).expand(i=[1, 2, 3])
    vector_sum.partial(folder=folder).expand(v=vs)


@task
def chatty(folder: str) -> str:
    print("step 1 of 2 done", flush=True)
    deadline = time.monotonic() + 60
    while not Path(folder, "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("step 2 of 2 done")
    return "ok"


@pipeline
def chatty_pipeline(folder: str):
    chatty(folder)
