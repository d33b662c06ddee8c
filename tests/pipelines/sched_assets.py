"""Scheduler fixtures: asset-driven pipelines (all of a list, AnyOf)."""

from __future__ import annotations

from cadenza import AnyOf, Asset, get_context, pipeline, task

features = Asset("sched/features")
labels = Asset("sched/labels")


@task(outlets=[features])
def build_features(n: int) -> list[int]:
    return list(range(n))


@task(outlets=[labels])
def build_labels(n: int) -> list[int]:
    return [i % 2 for i in range(n)]


@task
def seen_trigger() -> dict:
    ctx = get_context()
    return {"trigger": ctx.extra.get("trigger"), "run_id": ctx.run_id}


@pipeline
def make_features(n: int = 3):
    build_features(n)


@pipeline
def make_labels(n: int = 3):
    build_labels(n)


@pipeline(triggers=[features, labels])
def train_on_both():
    seen_trigger()


@pipeline(triggers=AnyOf(features, labels))
def train_on_any():
    seen_trigger()
