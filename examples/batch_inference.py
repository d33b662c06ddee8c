"""Batch inference: load the registered model, score partitions in parallel, write Parquet.

    python examples/batch_inference.py            # or: cadenza run examples/batch_inference.py

`fetch_model` loads the version of "iris-classifier" that the alias "staging" points at
(examples/iris_training.py registers it; run directly, this script trains one first when
there is none). `land_partitions` simulates new measurements arriving as Parquet
partitions; `score` is mapped over them (one task instance per partition, in parallel) and
writes each partition's predictions as Parquet next to them; `summarize` adds the
partitions up. The model is loaded once and handed to every instance as an artifact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cadenza import MLflow, get_context, pipeline, task

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SPECIES = ["setosa", "versicolor", "virginica"]


def _base(output_dir: str) -> Path:
    return Path(output_dir or os.path.join(os.environ.get("CADENZA_HOME", ".cadenza"),
                                           "batch-inference"))


@task
def fetch_model(model_name: str, alias: str) -> Any:
    """The registered model the alias points at, as a scikit-learn estimator."""
    from cadenza.integrations.mlflow import load_model

    # MLflow unpickles models only when told to: these are models this project registered.
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    model = load_model(model_name, alias)
    get_context().log_param("model", f"{model_name}@{alias}")
    return model


@task
def land_partitions(partitions: int, rows: int, seed: int, output_dir: str) -> list[str]:
    """New, unlabelled flowers (iris measurements with noise), one Parquet file each."""
    import numpy as np
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame[FEATURES]
    rng = np.random.default_rng(seed)
    folder = _base(output_dir) / get_context().run_id / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(partitions):
        sample = iris.sample(n=rows, replace=True, random_state=seed + i).reset_index(drop=True)
        sample = sample + rng.normal(0, 0.1, size=sample.shape)
        path = folder / f"part-{i:05d}.parquet"
        sample.to_parquet(path, index=False)
        paths.append(str(path))
    return paths


@task
def score(model: Any, path: str) -> dict:
    """Predict one partition; write its rows with the predicted species and probability as
    Parquet in the run's predictions/ folder."""
    import pandas as pd

    frame = pd.read_parquet(path)
    proba = model.predict_proba(frame[FEATURES])
    frame["species"] = [SPECIES[i] for i in proba.argmax(axis=1)]
    frame["probability"] = proba.max(axis=1).round(4)
    out_dir = Path(path).parent.parent / "predictions"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / Path(path).name
    frame.to_parquet(out, index=False)
    get_context().log_metric("rows", len(frame))
    return {"path": str(out), "rows": len(frame),
            "counts": {k: int(v) for k, v in frame["species"].value_counts().items()}}


@task
def summarize(parts: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for part in parts:
        for species, n in part["counts"].items():
            counts[species] = counts.get(species, 0) + n
    total = sum(p["rows"] for p in parts)
    get_context().log_metric("rows_scored", total)
    return {"partitions": len(parts), "rows": total, "counts": counts,
            "folder": str(Path(parts[0]["path"]).parent) if parts else ""}


@pipeline(tracking=MLflow(experiment="batch-inference"), tags=["inference"])
def batch_inference(model_name: str = "iris-classifier", alias: str = "staging",
                    partitions: int = 4, rows: int = 500, seed: int = 0, output_dir: str = ""):
    model = fetch_model(model_name, alias)
    paths = land_partitions(partitions, rows, seed, output_dir)
    scored = score.partial(model=model).expand(path=paths)
    summarize(scored)


if __name__ == "__main__":
    from cadenza.integrations.errors import ModelRegistrationError
    from cadenza.integrations.mlflow import load_model

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    try:
        load_model("iris-classifier", "staging",
                   tracking_uri=batch_inference.tracking.resolve_tracking_uri())
    except ModelRegistrationError:
        print("no model 'iris-classifier' with alias 'staging' yet: training one with "
              "examples/iris_training.py first")
        from iris_training import iris_training

        if not iris_training.run().ok:
            raise SystemExit("iris_training failed: see `cadenza runs list`") from None
    result = batch_inference.run()
    print(f"batch_inference run {result.run_id}: {result.state}")
    if result.ok:
        s = result.outputs["summarize"]
        print(f"scored {s['rows']} rows in {s['partitions']} partitions: {s['counts']}")
        print(f"predictions (Parquet): {s['folder']}")
    for label, error in result.failed.items():
        print(f"failed: {label}: {error.first_line()}")
    raise SystemExit(0 if result.ok else 1)
