"""Iris training: load -> train -> evaluate -> register, tracked in MLflow.

    python examples/iris_training.py                 # or: cadenza run examples/iris_training.py

Fisher's iris flowers (bundled with scikit-learn, no download) are split into train and
test sets, a random forest is trained and evaluated, and if its test accuracy clears
`min_accuracy` it is registered in MLflow's model registry as "iris-classifier" with the alias
"staging" (examples/batch_inference.py scores new flowers with it). The run, one nested run
per task, the params and the metrics are in MLflow: the local store under CADENZA_HOME
unless MLFLOW_TRACKING_URI points elsewhere.
"""

from __future__ import annotations

from typing import Any

from cadenza import MLflow, get_context, pipeline, register_model, task

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@task(cache=True)
def load_data(test_size: float, seed: int) -> Any:
    """The iris table with a stratified train/test split column."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    frame = load_iris(as_frame=True).frame
    train_idx, _ = train_test_split(frame.index, test_size=test_size, random_state=seed,
                                    stratify=frame["target"])
    frame["split"] = np.where(frame.index.isin(train_idx), "train", "test")
    get_context().log_metric("rows", len(frame))
    return frame


@task
def train(data: Any, n_estimators: int, max_depth: int, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    ctx = get_context()
    ctx.log_param("n_estimators", n_estimators)
    ctx.log_param("max_depth", max_depth)
    rows = data[data["split"] == "train"]
    model = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                   random_state=seed)
    return model.fit(rows[FEATURES], rows["target"])


@task
def evaluate(model: Any, data: Any) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    rows = data[data["split"] == "test"]
    predicted = model.predict(rows[FEATURES])
    metrics = {
        "accuracy": float(accuracy_score(rows["target"], predicted)),
        "f1_macro": float(f1_score(rows["target"], predicted, average="macro")),
    }
    ctx = get_context()
    for name, value in metrics.items():
        ctx.log_metric(name, value)
    return metrics


@task
def register(model: Any, metrics: dict, min_accuracy: float, model_name: str) -> str:
    """Register the model if it is good enough; fail the task (and the run) if not."""
    if metrics["accuracy"] < min_accuracy:
        raise ValueError(f"test accuracy {metrics['accuracy']:.3f} is below {min_accuracy}: "
                         "model not registered")
    return register_model(model, model_name, alias="staging")


@pipeline(tracking=MLflow(experiment="iris"), tags=["iris", "training"])
def iris_training(test_size: float = 0.3, seed: int = 42, n_estimators: int = 100,
                  max_depth: int = 4, min_accuracy: float = 0.9,
                  model_name: str = "iris-classifier"):
    data = load_data(test_size, seed)
    model = train(data, n_estimators, max_depth, seed)
    metrics = evaluate(model, data)
    register(model, metrics, min_accuracy, model_name)


if __name__ == "__main__":
    result = iris_training.run()
    print(f"iris_training run {result.run_id}: {result.state}")
    if result.task_states.get("evaluate") == "success":
        m = result.outputs["evaluate"]
        print(f"test accuracy {m['accuracy']:.3f}, macro F1 {m['f1_macro']:.3f}")
    if result.ok:
        print(f"registered {result.outputs['register']} (alias 'staging')")
    for label, error in result.failed.items():
        print(f"failed: {label}: {error.first_line()}")
    print(f"MLflow: {iris_training.tracking.resolve_tracking_uri()}")
    raise SystemExit(0 if result.ok else 1)
