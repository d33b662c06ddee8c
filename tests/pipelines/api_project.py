"""API fixture project: copied into a temporary project's pipelines/ by tests/fixtures/server.py.

- `etl`: scheduled daily, typed parameters, a mapped task (square over numbers) and a fan-in.
- `gated`: a -> check -> report; `check` fails until the file named by `gate` exists, so a
  test can make a failed run and then retry it successfully.
- `plain`: one task, no schedule, no parameters.
- `pair`: two independent gated checks (tasks check and check__1).
Self-contained (imports only cadenza).
"""

from __future__ import annotations

from pathlib import Path

from cadenza import pipeline, task


@task
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@task
def square(x: int, scale: float) -> float:
    return x * x * scale


@task
def total(values: list[float]) -> float:
    return sum(values)


@pipeline(schedule="@daily", start_date="2024-01-01", catchup=False, tags=["api", "daily"])
def etl(n: int = 3, scale: float = 1.0, label: str = "x"):
    """Squares the first n numbers and adds them up."""
    total(square.partial(scale=scale).expand(x=numbers(n)))


@task
def start(tag: str) -> str:
    return tag


@task
def check(value: str, gate: str) -> str:
    if gate and not Path(gate).exists():
        raise ValueError(f"the gate file {gate} does not exist yet")
    return value.upper()


@task
def report(value: str) -> str:
    return f"report: {value}"


@task
def side() -> int:
    return 1


@pipeline(tags=["api"])
def gated(gate: str = "", tag: str = "t"):
    report(check(start(tag), gate))
    side()


@task
def hello() -> str:
    return "hello"


@pipeline
def plain():
    hello()


@pipeline
def pair(gate: str = ""):
    """Two independent gated checks: retrying one leaves the other failed."""
    check(start("l"), gate)
    check(start("r"), gate)
