"""Functions bench/data.py runs, importable by worker processes."""

import numpy as np
import pandas as pd


def make_array(mb: int, salt: int):
    arr = np.ones(mb * 1024 * 1024 // 8, dtype=np.float64)
    arr[0] = salt
    return arr


def consume_array(arr) -> float:
    return float(arr.sum())


def make_frame(rows: int, salt: int):
    rng = np.random.default_rng(salt)
    return pd.DataFrame({"x": rng.random(rows), "y": rng.integers(0, 100, rows),
                         "k": np.arange(rows) % 1000})


def consume_frame(df) -> float:
    return float(df["x"].sum())


def cached_inc(x: int) -> int:
    return x + 1
