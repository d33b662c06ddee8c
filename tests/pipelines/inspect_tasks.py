"""Pipelines whose task instances the API shows: DataFrame, NumPy and JSON outputs, a
mapped task, an asset producer and its consumer, a task that fails with a traceback after
a retry, and one that logs, waits to be released, then logs more (for live log follow)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from cadenza import Asset, get_context, pipeline, task

frames = Asset("inspect/frames")


@task
def make_frame(n: int) -> pd.DataFrame:
    print(f"making a frame of {n} rows")
    return pd.DataFrame({"id": range(n), "score": [i / 10 for i in range(n)],
                         "name": [f"n{i}" for i in range(n)]})


@task
def make_array(n: int) -> np.ndarray:
    return np.arange(n * 4, dtype=np.float64).reshape(n, 4)


@task
def combine(frame: pd.DataFrame, arr: np.ndarray) -> dict:
    return {"rows": len(frame), "cells": int(arr.size)}


@task
def square(x: int) -> int:
    return x * x


@task(outlets=[frames])
def publish(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["id"] % 2 == 0].reset_index(drop=True)


@task
def summarize(published: pd.DataFrame) -> np.ndarray:
    return published["score"].to_numpy()


@pipeline
def data_pipe(n: int = 30, xs: list[int] = [1, 2, 3]):  # noqa: B006 - a JSON default
    frame = make_frame(n)
    combine(frame, make_array(n))
    square.expand(x=xs)
    summarize(publish(frame))


@task
def use_frames() -> dict:
    return {"trigger": get_context().extra.get("trigger")}


@pipeline(triggers=[frames])
def frames_consumer():
    use_frames()


@task(retries=1)
def explode(n: int) -> int:
    print(f"attempt {get_context().attempt}: about to fail")
    raise ValueError(f"bad value {n}")


@pipeline
def failing(n: int = 42):
    explode(n)


@task
def chatty(folder: str) -> int:
    print("first line", flush=True)
    Path(folder, "started").write_text("yes")
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the task")
        time.sleep(0.02)
    print("second line", flush=True)
    return 1


@task
def after_chatty(x: int) -> int:
    print(f"after chatty: {x}", flush=True)
    return x + 1


@pipeline
def slow_logger(folder: str):
    after_chatty(chatty(folder))


@task
def scale(arr: np.ndarray, k: int) -> np.ndarray:
    return arr * k


@pipeline
def fan_out(n: int = 3, ks: list[int] = [2, 3, 4, 5, 6, 7, 8, 9]):  # noqa: B006 - JSON default
    scale.partial(arr=make_array(n)).expand(k=ks)


@task
def leak() -> dict:
    token = get_context().secrets["API_TOKEN"]
    print(f"using {token}")
    return {"token": token, "rows": 2}


@task
def leak_frame() -> pd.DataFrame:
    return pd.DataFrame({"k": [get_context().secrets["API_TOKEN"], "plain"]})


@pipeline
def leaky():
    leak()
    leak_frame()
