"""A pipeline whose outputs are a DataFrame, an array, a small JSON value and a mapped list:
what a notebook reads back from a past run with `cadenza.get_run`."""

from __future__ import annotations

from typing import Any

from cadenza import pipeline, task


@task
def frame(n: int) -> Any:
    import pandas as pd

    return pd.DataFrame({"x": list(range(n)), "y": [i * i for i in range(n)]})


@task
def array(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype="float64") * 1.5


@task
def summary(df: Any) -> dict[str, int]:
    return {"rows": len(df), "total": int(df["y"].sum())}


@task
def chunks(n: int) -> list[int]:
    return list(range(n))


@task
def block(i: int) -> Any:
    import numpy as np

    return np.full(3, i, dtype="int64")


@pipeline
def history(n: int = 5):
    df = frame(n)
    array(n)
    summary(df)
    block.expand(i=chunks(n))
