"""Features -> training, chained by an asset: two pipelines, one data product between them.

    cadenza run examples/features_to_training.py:build_wine_features
    cadenza run examples/features_to_training.py:train_on_features

`build_wine_features` is owned by a data team: it derives model features from raw
measurements (the wine recognition data bundled with scikit-learn stand in for a raw
table), and its `publish` task declares `outlets=[WINE_FEATURES]`. Each successful `publish`
writes the features to a stable Parquet path and records a new version of the asset
"features/wine" (see `cadenza lineage features/wine`).

`train_on_features` is owned by the modelling team and declares `triggers=[WINE_FEATURES]`:
the scheduler starts it whenever a new version of the features has landed since its last
triggered run (one run per new version, whichever scheduler sees it first), and the run's
context says which version started it. It reads the features, trains a classifier and logs
its quality to MLflow. With a scheduler running,

    cadenza scheduler examples/features_to_training.py

each `cadenza run examples/features_to_training.py:build_wine_features` is followed by a
training run. `python examples/features_to_training.py` does both with one scheduler tick.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cadenza import Asset, MLflow, get_context, pipeline, task

WINE_FEATURES = Asset("features/wine")


def features_path(data_dir: str) -> Path:
    """Where the current version of the asset lives (stable, so consumers can find it)."""
    base = Path(data_dir or os.path.join(os.environ.get("CADENZA_HOME", ".cadenza"), "data"))
    return base / "features" / "wine.parquet"


@task
def load_raw() -> Any:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame


@task(cache=True)
def engineer(raw: Any) -> Any:
    """Standardised measurements plus two ratio features; the label stays as `target`."""
    features = raw.drop(columns=["target"])
    features = (features - features.mean()) / features.std()
    features["phenol_ratio"] = raw["flavanoids"] / raw["total_phenols"]
    features["color_per_hue"] = raw["color_intensity"] / raw["hue"]
    features["target"] = raw["target"]
    return features


@task(outlets=[WINE_FEATURES])
def publish(features: Any, data_dir: str) -> str:
    """Write the features where consumers read them; a new version of features/wine."""
    path = features_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    features.to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: a consumer never reads half a file
    get_context().log_metric("rows", len(features))
    return str(path)


@pipeline(tags=["features"])
def build_wine_features(data_dir: str = ""):
    publish(engineer(load_raw()), data_dir)


@task
def read_features(data_dir: str) -> Any:
    import pandas as pd

    path = features_path(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist yet: run build_wine_features first "
                                "(cadenza run examples/features_to_training.py:"
                                "build_wine_features)")
    return pd.read_parquet(path)


@task
def train_and_evaluate(features: Any, C: float, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    ctx = get_context()
    ctx.log_param("C", C)
    # A run the scheduler started for a new version of the features says which one.
    trigger = ctx.extra.get("trigger") or {}
    version = (trigger.get("assets") or {}).get(WINE_FEATURES.name)
    X, y = features.drop(columns=["target"]), features["target"]
    model = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    scores = cross_val_score(model, X, y, cv=5, scoring="accuracy")
    ctx.log_metric("cv_accuracy", float(scores.mean()))
    return {"cv_accuracy": float(scores.mean()), "rows": len(features),
            "features": X.shape[1], "features_version": version}


@pipeline(triggers=[WINE_FEATURES], tracking=MLflow(experiment="wine-from-features"),
          tags=["training"])
def train_on_features(data_dir: str = "", C: float = 1.0, seed: int = 0):
    train_and_evaluate(read_features(data_dir), C, seed)


if __name__ == "__main__":
    from cadenza.triggers import Scheduler

    produced = build_wine_features.run()
    print(f"build_wine_features run {produced.run_id}: {produced.state}; "
          f"features at {produced.outputs['publish'] if produced.ok else '-'}")
    if not produced.ok:
        raise SystemExit(1)
    # One scheduler tick: it sees the new version of features/wine and starts the consumer.
    scheduler = Scheduler([build_wine_features, train_on_features], executor="threads")
    try:
        tick = scheduler.run_once(timeout_s=600)
    finally:
        scheduler.close()
    print(f"scheduler tick: started {len(tick.started)} run(s) for new asset versions")
    from cadenza.core.settings import get_settings
    from cadenza.store import open_store

    store = open_store(get_settings().database_url)
    trained_runs = store.list_runs(pipeline="train_on_features", limit=1)
    if not trained_runs:
        raise SystemExit("the scheduler started no training run")
    trained = trained_runs[0]
    print(f"train_on_features run {trained.run_id}: {trained.state} "
          f"(triggered by {trained.extra['trigger']['assets']})")
    raise SystemExit(0 if trained.state == "success" else 1)
