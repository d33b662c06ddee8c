"""Pipelines whose outputs are artifacts (NumPy arrays), for lineage and asset-version tests.

load_raw -> scale -> features (outlet "features/user"); features also reads raw directly, so
the lineage graph has a diamond. `count_rows` has an outlet but a small JSON output (stored
inline, so its asset versions have no artifact)."""

from __future__ import annotations

from typing import Any

from cadenza import Asset, pipeline, task


@task
def load_raw(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.float64)


@task
def scale(raw: Any, factor: float) -> Any:
    return raw * factor


@task(outlets=[Asset("features/user")])
def features(scaled: Any, raw: Any) -> Any:
    import numpy as np

    return np.stack([scaled, raw])


@task(outlets=[Asset("metrics/rows")])
def count_rows(table: Any) -> int:
    return int(table.shape[1])


@pipeline
def chain(n: int = 5000, factor: float = 2.0):
    raw = load_raw(n)
    table = features(scale(raw, factor), raw)
    count_rows(table)
