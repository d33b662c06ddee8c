"""Fraud detection: check the data, build features, train, evaluate, then deploy or alert.

    python examples/fraud_detection.py                # or: cadenza run examples/fraud_detection.py

A day of card transactions lands as a CSV (synthetic, from scikit-learn's
make_classification: about 3 % fraud, on amount, hour, merchant risk, distance, ...).
The pipeline

    extract -> check_data (pandera) -> build_features -> quality_gate -> train -> evaluate
            -> decide (branch) -> deploy | alert -> cleanup (trigger_rule="all_done")

validates the landed file against a schema (a failed check fails the task with a readable
report), builds features, stops at a data-quality gate if there are too few frauds to learn
from, trains a gradient-boosted classifier, and registers it in MLflow's model registry with
the alias "staging" when its ROC AUC clears `min_auc`; otherwise it raises an alert. The
landing folder is removed whatever happened. Every task's metrics and params go to MLflow
(one parent run per pipeline run, one nested run per task; the local store under
CADENZA_HOME unless MLFLOW_TRACKING_URI says otherwise).

Run it twice: the second run lands a new file (so extract and check_data run again), but the
data are the same, so build_features, train and evaluate are served from the cache.

Set FRAUD_ALERTS_URL to any apprise URL (slack://..., mailto://..., json://host/path) to be
told when a run fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cadenza import MLflow, Notify, get_context, pipeline, register_model, task, validate

FEATURES = ["amount", "log_amount", "hour", "is_night", "merchant_risk", "distance_km",
            "tx_last_hour", "card_age_days", "v1", "v2"]
MODEL_NAME = "fraud-detector"


def transactions_schema() -> Any:
    """The contract of a landed transactions file (pandera). Built on first use so that
    importing this module does not import pandera."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "transaction_id": pa.Column(int, unique=True),
            "amount": pa.Column(float, [pa.Check.gt(0), pa.Check.lt(100_000)]),
            "hour": pa.Column(int, pa.Check.in_range(0, 23)),
            "merchant_risk": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
            "distance_km": pa.Column(float, pa.Check.ge(0)),
            "tx_last_hour": pa.Column(int, pa.Check.ge(0)),
            "card_age_days": pa.Column(int, pa.Check.ge(0)),
            "country": pa.Column(str, pa.Check.isin(["FR", "DE", "ES", "IT", "NL", "GB"])),
            "v1": pa.Column(float),
            "v2": pa.Column(float),
            "is_fraud": pa.Column(int, pa.Check.isin([0, 1])),
        },
        name="transactions",
        strict=True,
    )


@task
def extract(n: int, fraud_rate: float, seed: int) -> str:
    """Land a day of transactions as a CSV in a per-run folder; return its path."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n, n_features=7, n_informative=5, n_redundant=1,
        weights=[1.0 - fraud_rate], flip_y=0.005, class_sep=1.2, random_state=seed,
    )
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "transaction_id": np.arange(n, dtype=np.int64),
        "amount": np.round(np.exp(3.5 + 0.9 * X[:, 0]), 2),
        "hour": np.clip(np.round(13 + 3.5 * X[:, 1]), 0, 23).astype(np.int64),
        "merchant_risk": np.round(1 / (1 + np.exp(-X[:, 2])), 4),
        "distance_km": np.round(np.abs(X[:, 3]) * 35, 1),
        "tx_last_hour": np.round(np.abs(X[:, 4]) * 2).astype(np.int64),
        "card_age_days": (np.exp(5 + 0.8 * X[:, 5]) % 4000).astype(np.int64),
        "country": rng.choice(["FR", "DE", "ES", "IT", "NL", "GB"], size=n),
        "v1": X[:, 6],
        "v2": rng.normal(size=n),  # noise: the model should learn to ignore it
        "is_fraud": y.astype(np.int64),
    })
    folder = Path(tempfile.gettempdir()) / "cadenza-fraud" / get_context().run_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "transactions.csv"
    frame.to_csv(path, index=False)
    print(f"landed {len(frame)} transactions in {path}")
    return str(path)


@task
def check_data(path: str) -> Any:
    """Read the landed file and hold it to its schema (fails with a readable report)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"country": str})
    get_context().log_metric("rows", len(frame))
    return validate(frame, transactions_schema())


@task(cache=True)
def build_features(transactions: Any, seed: int) -> Any:
    """Model features plus a stratified train/test split column."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    frame = transactions.copy()
    frame["log_amount"] = np.log1p(frame["amount"])
    frame["is_night"] = frame["hour"].isin([0, 1, 2, 3, 4, 5]).astype(int)
    train_idx, _ = train_test_split(frame.index, test_size=0.25, random_state=seed,
                                    stratify=frame["is_fraud"])
    frame["split"] = np.where(frame.index.isin(train_idx), "train", "test")
    return frame[["transaction_id", *FEATURES, "is_fraud", "split"]]


@task(cache=True)
def quality_gate(features: Any, min_frauds: int) -> dict:
    """Stop before training on data that cannot make a useful model."""
    ctx = get_context()
    train = features[features["split"] == "train"]
    frauds = int(train["is_fraud"].sum())
    rate = float(features["is_fraud"].mean())
    ctx.log_metric("train_frauds", frauds)
    ctx.log_metric("fraud_rate", rate)
    problems = []
    if frauds < min_frauds:
        problems.append(f"only {frauds} frauds in the training split (need {min_frauds})")
    if features[FEATURES].isna().any().any():
        problems.append("features contain missing values")
    if not 0.001 <= rate <= 0.2:
        problems.append(f"fraud rate {rate:.2%} is outside 0.1%..20%: check the extract")
    if problems:
        raise ValueError("data quality gate failed: " + "; ".join(problems))
    return {"rows": len(features), "train_frauds": frauds, "fraud_rate": rate}


@task(cache=True)
def train(features: Any, max_iter: int, learning_rate: float) -> Any:
    """A gradient-boosted classifier, weighted for the rare fraud class."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    ctx = get_context()
    ctx.log_param("max_iter", max_iter)
    ctx.log_param("learning_rate", learning_rate)
    data = features[features["split"] == "train"]
    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate,
                                           class_weight="balanced", random_state=0)
    return model.fit(data[FEATURES], data["is_fraud"])


@task(cache=True)
def evaluate(model: Any, features: Any) -> dict:
    """Ranking quality (ROC AUC, average precision) and precision/recall at 0.5."""
    from sklearn.metrics import (
        average_precision_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    test = features[features["split"] == "test"]
    scores = model.predict_proba(test[FEATURES])[:, 1]
    predicted = (scores >= 0.5).astype(int)
    metrics = {
        "roc_auc": float(roc_auc_score(test["is_fraud"], scores)),
        "average_precision": float(average_precision_score(test["is_fraud"], scores)),
        "precision": float(precision_score(test["is_fraud"], predicted, zero_division=0)),
        "recall": float(recall_score(test["is_fraud"], predicted)),
        "test_rows": len(test),
    }
    ctx = get_context()
    for name, value in metrics.items():
        ctx.log_metric(name, value)
    return metrics


@task.branch
def decide(metrics: dict, min_auc: float) -> str:
    return "deploy" if metrics["roc_auc"] >= min_auc else "alert"


@task
def deploy(model: Any, metrics: dict) -> str:
    """Register the model; the alias "staging" now points at this version."""
    uri = register_model(model, MODEL_NAME, alias="staging",
                         tags={"roc_auc": f"{metrics['roc_auc']:.4f}"})
    print(f"deployed {uri} with ROC AUC {metrics['roc_auc']:.3f}")
    return uri


@task
def alert(metrics: dict, min_auc: float) -> str:
    message = (f"fraud model not deployed: ROC AUC {metrics['roc_auc']:.3f} is below "
               f"{min_auc:.3f}")
    get_context().logger.warning(message)
    return message


@task(trigger_rule="all_done")
def cleanup(path: str | None) -> str:
    """Remove this run's landing folder, whatever happened upstream."""
    folder = Path(path).parent if path else (
        Path(tempfile.gettempdir()) / "cadenza-fraud" / get_context().run_id)
    shutil.rmtree(folder, ignore_errors=True)
    return f"removed {folder}"


ALERTS = [Notify(url)] if (url := os.environ.get("FRAUD_ALERTS_URL")) else None


@pipeline(tracking=MLflow(experiment="fraud-detection"), tags=["fraud", "training"],
          on_failure=ALERTS)
def fraud_detection(n: int = 5000, fraud_rate: float = 0.03, seed: int = 7,
                    min_frauds: int = 30, max_iter: int = 100, learning_rate: float = 0.1,
                    min_auc: float = 0.85):
    landed = extract(n, fraud_rate, seed)
    transactions = check_data(landed)
    features = build_features(transactions, seed)
    gate = quality_gate(features, min_frauds)
    model = train(features, max_iter, learning_rate)
    gate >> model
    metrics = evaluate(model, features)
    choice = decide(metrics, min_auc)
    shipped, alerted = deploy(model, metrics), alert(metrics, min_auc)
    choice >> [shipped, alerted]
    [shipped, alerted] >> cleanup(landed)


def summary(result: Any) -> str:
    """A few lines on a finished run: task states, the model's quality, where to look next."""
    lines = [f"fraud_detection run {result.run_id}: {result.state}"]
    for node in fraud_detection.graph:
        lines.append(f"  {node.id:<15} {result.task_states.get(node.id, '-')}")
    if result.task_states.get("evaluate") in ("success", "cached"):
        m = result.outputs["evaluate"]
        lines.append(f"ROC AUC {m['roc_auc']:.3f}, average precision "
                     f"{m['average_precision']:.3f}, precision {m['precision']:.3f}, recall "
                     f"{m['recall']:.3f} on {m['test_rows']} held-out transactions")
    if result.task_states.get("deploy") == "success":
        lines.append(f"model registered: {result.outputs['deploy']} (alias 'staging')")
    elif result.task_states.get("alert") == "success":
        lines.append(result.outputs["alert"])
    for label, error in result.failed.items():
        lines.append(f"failed: {label}: {error.first_line()}")
    tracking_uri = fraud_detection.tracking.resolve_tracking_uri()
    lines.append("Look next:")
    lines.append(f"  cadenza runs show {result.run_id}")
    lines.append(f"  cadenza logs {result.run_id} train")
    if tracking_uri.startswith("sqlite:"):
        lines.append(f"  mlflow ui --backend-store-uri {tracking_uri}   (then open "
                     "http://127.0.0.1:5000)")
    else:
        lines.append(f"  MLflow: {tracking_uri}")
    return "\n".join(lines)


if __name__ == "__main__":
    result = fraud_detection.run()
    print(summary(result))
    raise SystemExit(0 if result.ok else 1)
