"""Pipelines of every authoring shape in SPEC §1: fan-out, fan-in, branch, trigger rules."""

from __future__ import annotations

from cadenza import get_context, pipeline, task


@task
def build(n: int) -> list[int]:
    return list(range(n))


@task
def train(df: list[int], config: dict) -> dict:
    return {"depth": config["depth"], "auc": round(0.80 + config["depth"] / 100, 4), "rows": len(df)}


@task
def select_best(results: list[dict]) -> dict:
    return max(results, key=lambda r: r["auc"])


@task.branch
def gate(best: dict, threshold: float) -> str:
    return "deploy" if best["auc"] >= threshold else "alert"


@task
def deploy(best: dict) -> str:
    return f"deployed depth={best['depth']}"


@task
def alert(best: dict) -> str:
    return "alert sent"


@task(trigger_rule="all_done")
def cleanup() -> str:
    return "cleaned"


@pipeline(tags=["training"])
def fraud_training(n: int = 100, threshold: float = 0.85):
    df = build(n)
    results = train.partial(df=df).expand(config=[{"depth": d} for d in (3, 5, 7)])
    best = select_best(results)
    g = gate(best, threshold)
    g >> [deploy(best), alert(best)]
    [deploy, alert] >> cleanup()


@task
def square(x: int) -> int:
    return x * x


@task
def add_one(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@pipeline
def chained_maps(n: int = 5):
    xs = build(n)
    squares = square.expand(x=xs)
    plus = add_one.expand(x=squares)  # element-wise over the mapped output
    total(plus)


@task
def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad element {x}")
    return x


@pipeline
def map_with_failure(n: int = 4, bad: int = 2):
    xs = build(n)
    ys = fail_on.partial(bad=bad).expand(x=xs)
    total(ys)


@task
def product(a: int, b: str) -> str:
    return f"{b}{a}"


@pipeline
def cartesian():
    product.expand(a=[1, 2, 3], b=["x", "y"])


@task
def context_fields() -> dict:
    ctx = get_context()
    ctx.logger.info("hello from the context logger")
    print("hello from print")
    ctx.log_metric("auc", 0.91)
    ctx.log_param("depth", 5)
    return {
        "run_id": ctx.run_id,
        "pipeline": ctx.pipeline,
        "task_id": ctx.task_id,
        "map_index": ctx.map_index,
        "attempt": ctx.attempt,
        "params": ctx.params,
        "logical_date": ctx.logical_date,
        "data_interval": ctx.data_interval,
    }


@task
def mapped_context(x: int) -> list:
    ctx = get_context()
    return [ctx.task_id, ctx.map_index, x]


@pipeline
def context_pipeline(label: str = "ctx"):
    context_fields()
    mapped_context.expand(x=[10, 20])


@task
def boom() -> int:
    raise RuntimeError("boom: the data source is down")


@task
def after(x: int) -> int:
    return x


@task(trigger_rule="one_failed")
def on_any_failure() -> str:
    return "paged"


@task(trigger_rule="all_done")
def always_cleanup() -> str:
    return "cleaned"


@task(trigger_rule="none_failed")
def none_failed_task() -> str:
    return "ran"


@pipeline
def failing():
    b = boom()
    a = after(b)
    [b, a] >> on_any_failure()
    [b, a] >> always_cleanup()
    a >> none_failed_task()


@task
def exits() -> int:
    import sys

    sys.exit(3)  # a BaseException: worker.execute's boundary leaves it alone


@pipeline
def exiting():
    after(exits())


@pipeline
def empty_map(n: int = 0):
    xs = build(n)
    ys = square.expand(x=xs)
    total(ys)


@task
def pick(items: list[str]) -> list[str]:
    return items


@task.branch
def choose_many(which: list[str]) -> list[str]:
    return which


@task
def left() -> str:
    return "left"


@task
def middle() -> str:
    return "middle"


@task
def right() -> str:
    return "right"


@task(trigger_rule="none_failed_min_one_success")
def join() -> str:
    return "joined"


@pipeline
def multi_branch(which: list[str] = ["left", "right"]):  # noqa: B006 - stored as JSON
    b = choose_many(which)
    legs = [left(), middle(), right()]
    b >> legs
    legs >> join()
