"""Quickstart: a small, real training pipeline with a fan-out, a fan-in and a branch.

    python examples/quickstart.py

It makes a synthetic two-class data set, trains a logistic-regression model for several
learning rates in parallel (fan-out with .expand), keeps the best (fan-in), and a branch
decides whether the model is good enough to "deploy" or whether to raise an alert.
Pure Python on purpose: no extra packages are needed to see Cadenza work.
"""

from __future__ import annotations

import math
import random

from cadenza import get_context, pipeline, task


@task
def make_data(n: int, seed: int) -> dict:
    """Two Gaussian blobs in 2-D, split into train and test."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        cx, cy = (1.0, 1.0) if label else (-1.0, -1.0)
        rows.append([rng.gauss(cx, 1.1), rng.gauss(cy, 1.1), label])
    rng.shuffle(rows)
    cut = int(n * 0.8)
    return {"train": rows[:cut], "test": rows[cut:]}


def _predict(w: list[float], x: list[float]) -> float:
    z = w[0] + w[1] * x[0] + w[2] * x[1]
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


@task(retries=2, retry_delay=0.5)
def train(data: dict, lr: float, epochs: int = 60) -> dict:
    """Logistic regression by batch gradient descent."""
    w = [0.0, 0.0, 0.0]
    rows = data["train"]
    for _ in range(epochs):
        grad = [0.0, 0.0, 0.0]
        for x0, x1, y in rows:
            err = _predict(w, [x0, x1]) - y
            grad[0] += err
            grad[1] += err * x0
            grad[2] += err * x1
        w = [wi - lr * gi / len(rows) for wi, gi in zip(w, grad, strict=True)]
    get_context().log_param("lr", lr)
    return {"lr": lr, "weights": w}


@task
def evaluate(model: dict, data: dict) -> dict:
    rows = data["test"]
    correct = sum(1 for x0, x1, y in rows if (_predict(model["weights"], [x0, x1]) >= 0.5) == y)
    accuracy = correct / len(rows)
    get_context().log_metric("accuracy", accuracy)
    return {**model, "accuracy": accuracy}


@task
def select_best(scored: list[dict]) -> dict:
    return max(scored, key=lambda m: m["accuracy"])


@task.branch
def quality_gate(best: dict, threshold: float) -> str:
    return "deploy" if best["accuracy"] >= threshold else "alert"


@task
def deploy(best: dict) -> str:
    print(f"deploying model lr={best['lr']} with accuracy {best['accuracy']:.3f}")
    return f"model-lr{best['lr']}"


@task
def alert(best: dict) -> str:
    print(f"best accuracy {best['accuracy']:.3f} is below the threshold")
    return "alerted"


@pipeline(tags=["quickstart"])
def quickstart(n: int = 400, seed: int = 7, threshold: float = 0.8):
    data = make_data(n, seed)
    models = train.partial(data=data).expand(lr=[0.01, 0.1, 0.5, 1.0])
    scored = evaluate.partial(data=data).expand(model=models)
    best = select_best(scored)
    gate = quality_gate(best, threshold)
    gate >> [deploy(best), alert(best)]


if __name__ == "__main__":
    from cadenza.core.settings import get_settings

    result = quickstart.run()
    settings = get_settings()
    print()
    print(f"run {result.run_id}: {result.state}")
    for task_id, state in result.task_states.items():
        print(f"  {task_id:<14} {state}")
    best = result.outputs["select_best"]
    print(f"best model: lr={best['lr']} accuracy={best['accuracy']:.3f}")
    print()
    print(f"The run is stored in {settings.database_url}")
    print(f"Task outputs and logs are under {settings.home}")
    print("Look next:")
    print(f"  .venv/bin/cadenza runs show {result.run_id}")
    print("  .venv/bin/cadenza runs list")
    raise SystemExit(0 if result.ok else 1)
