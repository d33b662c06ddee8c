"""Pipelines for `cadenza gc` / `cadenza runs delete`: outputs shared by every run, outputs
unique to a run, a cached task and an asset, each big enough to be an artifact."""

from __future__ import annotations

import hashlib
from typing import Any

from cadenza import Asset, pipeline, task

model_asset = Asset("gc/model")


def _block(seed: str) -> Any:
    import numpy as np

    digest = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    return np.full(2000, digest, dtype="int64")


@task
def shared() -> Any:
    """The same bytes in every run (content-addressed: stored once)."""
    return _block("shared")


@task
def unique(tag: str) -> Any:
    print(f"unique output for {tag}")  # an attempt log to delete with the run
    return _block(f"unique-{tag}")


@task(cache=True)
def expensive(n: int) -> Any:
    return _block(f"expensive-{n}")


@task(outlets=[model_asset])
def model(tag: str) -> Any:
    return _block(f"model-{tag}")


@pipeline
def outputs(tag: str = "a"):
    shared()
    unique(tag)


@pipeline
def cached(n: int = 1):
    expensive(n)


@pipeline
def modelling(tag: str = "a"):
    model(tag)
