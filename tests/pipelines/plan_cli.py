"""Fixture for `cadenza plan` and `cadenza lineage` (tests/e2e/test_cli_plan_lineage.py):
cached tasks whose outputs are NumPy arrays, so each output is an artifact with lineage.

make_data -> normalise (calls the helper `shift`, which the tests edit) -> features (outlet
"features/plan") ; normalise -> score, mapped over the parameter `weights`.
Not named cli_*.py: the other CLI tests copy every cli_*.py into their projects and count
the pipelines there. Self-contained (imports only cadenza; NumPy inside the tasks).
"""

from __future__ import annotations

from typing import Any

from cadenza import Asset, pipeline, task


def shift() -> float:
    return 0.5


@task(cache=True)
def make_data(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.float64)


@task(cache=True)
def normalise(data: Any) -> Any:
    return (data - data.mean()) / (data.std() or 1.0) + shift()


@task(cache=True, outlets=[Asset("features/plan")])
def features(values: Any) -> Any:
    import numpy as np

    return np.stack([values, values**2])


@task(cache=True)
def score(values: Any, weight: float) -> Any:
    return values * weight


@pipeline
def plan_demo(n: int = 100, weights: list[float] = [2.0, 3.0]):  # noqa: B006 - stored, never mutated
    values = normalise(make_data(n))
    features(values)
    score.partial(values=values).expand(weight=weights)
