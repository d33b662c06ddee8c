"""Pipelines for the Kubeflow compiler (tests/unit/test_kfp_compile.py).

`trained_on_gpu` sets every option the compiler maps (resources with an accelerator type,
retries with backoff, cache, timeout, a parameter of each type); `not_for_kfp` has several
things KFP cannot express, each of which the compiler must name.
"""

from __future__ import annotations

from cadenza import FileSensor, pipeline, task


@task(resources={"cpu": 2, "memory": "4GiB", "gpu": 1, "gpu_type": "nvidia-tesla-a100"},
      retries=3, retry_delay=2.0, retry_backoff=2.0, max_retry_delay=60, timeout=600,
      cache=True, version="2")
def fit(rows: int, rate: float, name: str, flags: dict, sizes: list) -> dict:
    return {"rows": rows, "rate": rate, "name": name, "flags": flags, "sizes": sizes}


@task(cache=True)
def report(model: dict) -> str:
    return f"{model['name']}: {model['rows']}"


@task(trigger_rule="all_done")
def tidy(model: dict | None) -> str:
    return "tidied"


@pipeline
def trained_on_gpu(rows: int = 10, rate: float = 0.5, name: str = "m",
                   flags: dict = {"a": 1},  # noqa: B006 - stored with the run as JSON
                   sizes: list = [1, 2]):  # noqa: B006
    model = fit(rows, rate, name, flags, sizes)
    report(model)
    tidy(model)


@task(retries=2, retry_on=(ConnectionError,))
def flaky() -> int:
    return 1


@task(retries=2, retry_on=(ConnectionError,))
def wrong_error(marker: str) -> int:
    """Fails with an error retry_on does not name: not retried, even on KFP."""
    from pathlib import Path

    count = Path(marker)
    count.write_text(count.read_text() + "x" if count.exists() else "x")
    raise ValueError("not a connection problem")


@pipeline
def not_retried(marker: str):
    wrong_error(marker)


@task.branch
def choose(x: int) -> str:
    return "left" if x else "right"


@task
def left(x: int) -> int:
    return x + 1


@task
def right(x: int) -> int:
    return x - 1


@task(trigger_rule="none_failed_min_one_success")
def join(a: int | None, b: int | None) -> int:
    return (a or 0) + (b or 0)


@task(resources={"licence_seats": 1})
def licensed() -> int:
    return 1


@pipeline
def not_for_kfp():
    x = flaky()
    c = choose(x)
    a, b = left(x), right(x)
    c >> [a, b]
    join(a, b)
    licensed()
    FileSensor("/data/incoming/*.csv", poke_interval=5)()


@task
def pair(a: int, b: str) -> str:
    return f"{b}{a}"


@task
def collect(pairs: list[str]) -> str:
    return ",".join(pairs)


@pipeline
def param_grid(a: list[int] = [1, 2], b: list[str] = ["x", "y", "z"]):  # noqa: B006
    collect(pair.expand(a=a, b=b))
