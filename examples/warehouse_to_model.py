"""Warehouse to model: SQL lands the data, dbt shapes it, Python trains, a shell step ships.

    python examples/warehouse_to_model.py        # or: cadenza run examples/warehouse_to_model.py

On the local PostgreSQL (127.0.0.1:5432, database `test`, schema `cadenza_example`; change
them with WAREHOUSE_HOST / WAREHOUSE_PORT / WAREHOUSE_USER / WAREHOUSE_PASSWORD /
WAREHOUSE_DB / WAREHOUSE_SCHEMA, which dbt's profile in examples/warehouse/ reads too):

  land_orders   @task.sql: (re)creates raw_orders, 90 days of orders of 400 customers
  dbt           dbt_task: builds examples/warehouse/ (a staging view, customer_features,
                their tests); a failing dbt test stops the run here, naming the test
  features      sql_task: SELECT customer_features -> a pandas DataFrame (Parquet)
  train         plain Python: a churn classifier (scikit-learn), scored on held-out rows
  package       @task.shell: tars the model with a manifest and prints its SHA-256

dbt runs in its own environment (built with uv on first use, then kept; see cadenza.dbt_task).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cadenza import dbt_task, get_context, pipeline, sql_task, task


def _url() -> str:
    user = os.environ.get("WAREHOUSE_USER", "postgres")
    password = os.environ.get("WAREHOUSE_PASSWORD", "")
    auth = f"{user}:{password}" if password else user
    return (f"postgresql+psycopg://{auth}@{os.environ.get('WAREHOUSE_HOST', '127.0.0.1')}:"
            f"{os.environ.get('WAREHOUSE_PORT', '5432')}/{os.environ.get('WAREHOUSE_DB', 'test')}")


WAREHOUSE = _url()
SCHEMA = os.environ.get("WAREHOUSE_SCHEMA", "cadenza_example")
FEATURES = ["orders", "spent", "avg_amount", "active_span", "days_since_last"]


@task.sql(url=WAREHOUSE)
def land_orders(customers: int) -> list[str]:
    """Synthetic orders: customer c orders every (c % 9 + 3) days from day c % 11, stopping
    early for some; 5% are cancelled. Deterministic, so the numbers below can be checked."""
    table = f'"{SCHEMA}".raw_orders'
    return [
        f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"',
        f"DROP TABLE IF EXISTS {table} CASCADE",
        (f"CREATE TABLE {table} (order_id bigint, customer_id int, day int, amount numeric, "
        "status text)"),
        (f"INSERT INTO {table} "
        "SELECT c * 1000 + d, c, d, round(((c * 37 + d * 11) % 90 + 10)::numeric, 2), "
        "CASE WHEN (c + d) % 20 = 0 THEN 'cancelled' ELSE 'paid' END "
        f"FROM generate_series(1, {int(customers)}) AS c, generate_series(0, 89) AS d "
        "WHERE d >= c % 11 AND (d - c % 11) % (c % 9 + 3) = 0 "
        "AND d < CASE WHEN c % 5 IN (0, 1) THEN 40 + c % 17 ELSE 90 END"),
    ]


@task
def train(features: Any, seed: int) -> dict[str, Any]:
    """A logistic regression predicting churn; returns its scores and where the model is."""
    import pickle

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    x = features[FEATURES].astype(float)
    y = features["churned"].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed,
                                                        stratify=y)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    accuracy = float(accuracy_score(y_test, model.predict(x_test)))
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    ctx = get_context()
    ctx.log_metric("accuracy", accuracy)
    ctx.log_metric("auc", auc)
    folder = Path(os.environ.get("CADENZA_HOME", ".cadenza")) / "models" / ctx.run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    return {"folder": str(folder), "rows": len(features), "churn_rate": float(y.mean()),
            "accuracy": accuracy, "auc": auc}


@task.shell(output="last_line")
def package(trained: dict[str, Any]) -> str:
    """The model and a one-line manifest in model.tgz; the task's output is its SHA-256."""
    folder = trained["folder"]
    return (f"cd {folder} && echo 'churn model: accuracy={trained['accuracy']:.3f} "
            f"auc={trained['auc']:.3f} rows={trained['rows']}' > MANIFEST && "
            "tar -czf model.tgz model.pkl MANIFEST && sha256sum model.tgz | cut -d' ' -f1")


@pipeline
def warehouse_to_model(customers: int = 400, seed: int = 7) -> None:
    landed = land_orders(customers)
    built = dbt_task("warehouse", profiles_dir="warehouse", retries=1)
    features = sql_task("features", WAREHOUSE,
                        f'SELECT * FROM "{SCHEMA}".customer_features ORDER BY customer_id')
    landed >> built >> features
    package(train(features, seed))


if __name__ == "__main__":
    result = warehouse_to_model.run()
    print(result.state, result.outputs["train"] if result.ok else result.failed)
