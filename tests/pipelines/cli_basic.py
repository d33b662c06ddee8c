"""CLI fixture: typed parameters, a fan-out, a fan-in, prints, a metric and a cached task.

Self-contained (imports only cadenza) so the e2e tests can copy it into a temporary project.
"""

from __future__ import annotations

from cadenza import get_context, pipeline, task


@task
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@task
def square(x: int, scale: float) -> float:
    print(f"squaring {x}")
    return x * x * scale


@task
def total(values: list[float], labels: dict, words: list[str]) -> dict:
    result = sum(values)
    get_context().log_metric("total", result)
    print(f"total of {len(values)} values is {result}")
    return {"total": result, "labels": labels, "words": words, "types": [type(v).__name__ for v in values]}


@task(cache=True)
def describe(n: int) -> str:
    return f"{n} numbers"


@pipeline(schedule="0 2 * * *", tags=["cli", "demo"])
def basic(n: int = 3, scale: float = 1.0, labels: dict = {"a": 1},  # noqa: B006 - stored, never mutated
          words: list[str] = ["x"]):  # noqa: B006
    squares = square.partial(scale=scale).expand(x=numbers(n))
    total(squares, labels, words)
    describe(n)
