"""Hyper-parameter search: 36 mapped configurations, cross-validated in parallel, best one refit.

    python examples/hyperparameter_search.py   # or: cadenza run examples/hyperparameter_search.py

The Wisconsin breast-cancer data set (bundled with scikit-learn) is split once; then
`cross_validate` is mapped over the cartesian product of C (4 values) x gamma (3) x kernel (3)
= 36 support-vector-machine configurations, each scored by k-fold ROC AUC in its own task
instance (in parallel on the processes executor). `select_best` receives the 36 results as a
list in map order, and `refit` trains the winner on the whole training split and scores it
on the held-out test split. In MLflow every configuration is a nested run with its params
and cross-validated AUC, so the search can be compared in the MLflow UI.
"""

from __future__ import annotations

from typing import Any

from cadenza import MLflow, get_context, pipeline, task


@task(cache=True)
def load_data(test_size: float, seed: int) -> Any:
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    train_idx, _ = train_test_split(frame.index, test_size=test_size, random_state=seed,
                                    stratify=frame["target"])
    frame["split"] = np.where(frame.index.isin(train_idx), "train", "test")
    return frame


def _model(C: float, gamma: float, kernel: str) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(C=C, gamma=gamma, kernel=kernel))


def _xy(data: Any, split: str) -> tuple[Any, Any]:
    rows = data[data["split"] == split]
    return rows.drop(columns=["target", "split"]), rows["target"]


@task(cache=True)
def cross_validate(data: Any, C: float, gamma: float, kernel: str, folds: int) -> dict:
    """k-fold ROC AUC of one configuration on the training split."""
    from sklearn.model_selection import cross_val_score

    ctx = get_context()
    for name, value in (("C", C), ("gamma", gamma), ("kernel", kernel)):
        ctx.log_param(name, value)
    X, y = _xy(data, "train")
    scores = cross_val_score(_model(C, gamma, kernel), X, y, cv=folds, scoring="roc_auc")
    ctx.log_metric("cv_auc", float(scores.mean()))
    return {"C": C, "gamma": gamma, "kernel": kernel, "cv_auc": float(scores.mean()),
            "cv_std": float(scores.std())}


@task
def select_best(results: list[dict]) -> dict:
    best = max(results, key=lambda r: r["cv_auc"])
    ctx = get_context()
    ctx.log_metric("configs", len(results))
    ctx.log_metric("best_cv_auc", best["cv_auc"])
    ctx.log_param("best", f"C={best['C']} gamma={best['gamma']} kernel={best['kernel']}")
    return best


@task
def refit(data: Any, best: dict) -> dict:
    """Train the winning configuration on the whole training split; score the test split."""
    from sklearn.metrics import roc_auc_score

    model = _model(best["C"], best["gamma"], best["kernel"])
    X, y = _xy(data, "train")
    model.fit(X, y)
    X_test, y_test = _xy(data, "test")
    auc = float(roc_auc_score(y_test, model.decision_function(X_test)))
    get_context().log_metric("test_auc", auc)
    return {**best, "test_auc": auc}


@pipeline(tracking=MLflow(experiment="hyperparameter-search"), tags=["tuning"])
def hyperparameter_search(
    C: list[float] = [0.1, 1.0, 10.0, 100.0],  # noqa: B006 - stored with the run as JSON
    gamma: list[float] = [0.001, 0.01, 0.1],  # noqa: B006
    kernel: list[str] = ["rbf", "sigmoid", "poly"],  # noqa: B006
    folds: int = 3,
    test_size: float = 0.25,
    seed: int = 0,
):
    data = load_data(test_size, seed)
    results = cross_validate.partial(data=data, folds=folds).expand(C=C, gamma=gamma,
                                                                    kernel=kernel)
    best = select_best(results)
    refit(data, best)


if __name__ == "__main__":
    result = hyperparameter_search.run()
    print(f"hyperparameter_search run {result.run_id}: {result.state}")
    if result.ok:
        ranked = sorted(result.outputs["cross_validate"], key=lambda r: -r["cv_auc"])
        print(f"{len(ranked)} configurations; top 3 by cross-validated ROC AUC:")
        for r in ranked[:3]:
            print(f"  C={r['C']:<6} gamma={r['gamma']:<6} kernel={r['kernel']:<8} "
                  f"AUC {r['cv_auc']:.4f} +- {r['cv_std']:.4f}")
        final = result.outputs["refit"]
        print(f"refit on the training split: test ROC AUC {final['test_auc']:.4f}")
    raise SystemExit(0 if result.ok else 1)
