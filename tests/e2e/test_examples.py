"""Every example in examples/ runs end to end on small data (SPEC §8).

The fraud example is the one `make demo` runs: it is run here the same way, as
`python examples/fraud_detection.py` on the default processes executor with a fresh
CADENZA_HOME, then again through `cadenza run` to show the cache. The others are imported and
run in this process on the threads executor, which keeps them quick; MLflow is the default
local store under CADENZA_HOME in every case (pre-migrated from a session template, since
creating MLflow's schema takes ~8 s here).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cadenza import RunState, TaskState
from cadenza.core.settings import Settings
from cadenza.store import open_store
from tests.e2e.test_cli_support import CADENZA, clean_env
from tests.integration.test_mlflow import make_template_db

pytest.importorskip("sklearn", reason="scikit-learn is not installed: pip install 'cadenza[ml]'")
mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'cadenza[ml]'")
pytest.importorskip("pandera", reason="pandera is not installed: pip install 'cadenza[ml]'")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
S = TaskState


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_db(tmp_path_factory.mktemp("mlflow-template"))


def _seed_mlflow(home: Path, template: Path) -> Path:
    """Put a migrated MLflow store where the examples look by default."""
    target = home / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, target)
    return target


@pytest.fixture
def ml_env(sqlite_env: Settings, template_db: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # batch_inference loads models its own tests registered.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    _seed_mlflow(sqlite_env.home, template_db)
    yield sqlite_env


def example(name: str) -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def client_for(settings: Settings) -> Any:
    uri = f"sqlite:///{settings.home / 'mlflow' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def nested_runs(client: Any, experiment: str, run_id: str) -> dict[str, Any]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`cadenza.run_id` = '{run_id}'",
                              max_results=500)
    return {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}


# --- fraud detection: the `make demo` pipeline ------------------------------------------------


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n--- stdout\n{proc.stdout}" \
                                 f"\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


def _script_env(home: Path, template_db: Path) -> tuple[dict[str, str], Path]:
    """The environment of an example run as a script: its own home and MLflow store."""
    env = clean_env(home)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env, _seed_mlflow(home, template_db)


def test_fraud_detection_script_trains_registers_and_reruns_from_cache(
        tmp_path: Path, template_db: Path) -> None:
    env, db = _script_env(tmp_path / "home", template_db)

    first = _run([sys.executable, str(EXAMPLES / "fraud_detection.py")], env, tmp_path)

    out = first.stdout.splitlines()
    head = out[0].split()
    assert head[0] == "fraud_detection" and head[-1] == "success", first.stdout
    run_id = head[2].rstrip(":")
    states = dict(line.split() for line in out[1:11])
    assert states == {"extract": "success", "check_data": "success",
                      "build_features": "success", "quality_gate": "success",
                      "train": "success", "evaluate": "success", "decide": "success",
                      "deploy": "success", "alert": "skipped", "cleanup": "success"}
    assert out[11].startswith("ROC AUC 0.9")
    assert "model registered: models:/fraud-detector/1 (alias 'staging')" in out
    assert f"  cadenza runs show {run_id}" in out
    assert f"  mlflow ui --backend-store-uri sqlite:///{db}   (then open http://127.0.0.1:5000)" in out

    uri = f"sqlite:///{db}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("fraud-detector", "staging")
    assert version.version == 1 and version.tags["cadenza.run_id"] == run_id
    nested = nested_runs(client, "fraud-detection", run_id)
    assert set(nested) == set(states) - {"alert"}
    assert nested["evaluate"].data.metrics["roc_auc"] >= 0.85
    assert nested["train"].data.params == {"max_iter": "100", "learning_rate": "0.1"}
    assert not (Path(os.environ.get("TMPDIR", "/tmp")) / "cadenza-fraud" / run_id).exists()

    # Again, through the CLI: the same data, so features, gate, model and metrics are cached.
    second = _run([*CADENZA, "run", str(EXAMPLES / "fraud_detection.py")], env, tmp_path)

    assert "succeeded" in second.stdout
    store = open_store(env["CADENZA_DATABASE_URL"])
    latest = store.list_runs(pipeline="fraud_detection", limit=1)[0]
    assert latest.run_id != run_id and latest.state is RunState.SUCCESS
    rerun = {t.task_id: t.state for t in store.get_task_instances(latest.run_id)}
    assert {t for t, s in rerun.items() if s is S.CACHED} == {
        "build_features", "quality_gate", "train", "evaluate"}
    assert client.get_model_version_by_alias("fraud-detector", "staging").version == 2


def test_fraud_detection_alerts_when_the_model_is_not_good_enough(ml_env: Settings) -> None:
    fraud = example("fraud_detection")

    result = fraud.fraud_detection.run(executor="threads", n=1500, min_frauds=10, max_iter=20,
                                       min_auc=0.9999)

    assert result.state is RunState.SUCCESS
    assert result.task_states["deploy"] is S.SKIPPED
    assert result.task_states["alert"] is S.SUCCESS
    assert result.task_states["cleanup"] is S.SUCCESS
    assert result.outputs["alert"].startswith("fraud model not deployed: ROC AUC ")
    assert "Look next:" in fraud.summary(result)


def test_fraud_detection_quality_gate_stops_training_and_cleanup_still_runs(
        ml_env: Settings) -> None:
    fraud = example("fraud_detection")

    result = fraud.fraud_detection.run(executor="threads", n=400, fraud_rate=0.02,
                                       min_frauds=50)

    assert result.state is RunState.FAILED
    assert "data quality gate failed: only" in result.failed["quality_gate"].message
    for task_id in ("train", "evaluate", "decide", "deploy", "alert"):
        assert result.task_states[task_id] is S.UPSTREAM_FAILED, task_id
    assert result.task_states["cleanup"] is S.SUCCESS
    assert not Path(result.outputs["extract"]).parent.exists()


# --- iris training, then batch inference with the model it registered ----------------------


def test_iris_training_then_batch_inference_scores_partitions_to_parquet(
        ml_env: Settings, tmp_path: Path) -> None:
    import pandas as pd

    iris = example("iris_training").iris_training
    batch = example("batch_inference").batch_inference

    trained = iris.run(executor="threads")

    assert trained.state is RunState.SUCCESS, trained.failed
    assert trained.outputs["evaluate"]["accuracy"] >= 0.9
    assert trained.outputs["register"] == "models:/iris-classifier/1"
    client = client_for(ml_env)
    assert client.get_model_version_by_alias("iris-classifier", "staging").version == 1
    assert set(nested_runs(client, "iris", trained.run_id)) == {
        "load_data", "train", "evaluate", "register"}

    scored = batch.run(executor="threads", partitions=3, rows=200, output_dir=str(tmp_path))

    assert scored.state is RunState.SUCCESS, scored.failed
    summary = scored.outputs["summarize"]
    assert summary["partitions"] == 3 and summary["rows"] == 600
    assert sum(summary["counts"].values()) == 600
    assert set(summary["counts"]) <= {"setosa", "versicolor", "virginica"}
    files = sorted((tmp_path / scored.run_id / "predictions").glob("*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet",
                                       "part-00002.parquet"]
    frame = pd.read_parquet(files[0])
    assert len(frame) == 200 and {"species", "probability"} <= set(frame.columns)
    assert frame["probability"].between(0, 1).all()
    assert set(nested_runs(client, "batch-inference", scored.run_id)) >= {
        "fetch_model", "score[0]", "score[1]", "score[2]", "summarize"}


def test_batch_inference_without_a_registered_model_says_what_to_do(ml_env: Settings) -> None:
    batch = example("batch_inference").batch_inference

    result = batch.run(executor="inline", model_name="never-registered")

    error = result.failed["fetch_model"]
    assert "no model 'never-registered' with alias 'staging'" in error.message
    assert "register one first with register_model" in error.message


# --- hyper-parameter search ----------------------------------------------------------------


def test_hyperparameter_search_maps_36_configs_and_refits_the_best(ml_env: Settings) -> None:
    search = example("hyperparameter_search").hyperparameter_search

    result = search.run(executor="threads")

    assert result.state is RunState.SUCCESS, result.failed
    results = result.outputs["cross_validate"]
    assert len(results) == 36
    assert len({(r["C"], r["gamma"], r["kernel"]) for r in results}) == 36
    best = result.outputs["select_best"]
    assert best["cv_auc"] == max(r["cv_auc"] for r in results)
    assert result.outputs["refit"]["test_auc"] > 0.95
    nested = nested_runs(client_for(ml_env), "hyperparameter-search", result.run_id)
    mapped = [r for name, r in nested.items() if name.startswith("cross_validate[")]
    assert len(mapped) == 36
    assert all({"C", "gamma", "kernel"} == set(r.data.params) for r in mapped)
    assert max(r.data.metrics["cv_auc"] for r in mapped) == best["cv_auc"]


# --- features -> training, chained by an asset -----------------------------------------------


def test_features_asset_version_then_training_reads_it(ml_env: Settings, tmp_path: Path) -> None:
    chain = example("features_to_training")

    produced = chain.build_wine_features.run(executor="threads", data_dir=str(tmp_path))

    assert produced.state is RunState.SUCCESS, produced.failed
    path = Path(produced.outputs["publish"])
    assert path == tmp_path / "features" / "wine.parquet" and path.exists()
    store = open_store(ml_env.database_url)
    version = store.latest_asset_version("features/wine")
    assert version is not None and version.run_id == produced.run_id
    assert version.task_id == "publish"
    assert [a.name for a in chain.train_on_features.triggers] == ["features/wine"]

    trained = chain.train_on_features.run(executor="threads", data_dir=str(tmp_path))

    assert trained.state is RunState.SUCCESS, trained.failed
    metrics = trained.outputs["train_and_evaluate"]
    assert metrics["rows"] == 178 and metrics["features"] == 15
    assert metrics["cv_accuracy"] > 0.9
    assert metrics["features_version"] is None  # started by hand, not by the asset


def test_a_new_features_version_makes_the_scheduler_start_training(ml_env: Settings) -> None:
    from cadenza.triggers import Scheduler

    chain = example("features_to_training")
    pipelines = [chain.build_wine_features, chain.train_on_features]
    scheduler = Scheduler(pipelines, executor="threads")
    try:
        assert scheduler.run_once(timeout_s=120).created == []  # no version yet
        produced = chain.build_wine_features.run(executor="threads")
        assert produced.state is RunState.SUCCESS, produced.failed
        tick = scheduler.run_once(timeout_s=300)
        assert len(tick.created) == 1
        assert scheduler.run_once(timeout_s=120).created == []  # that version is consumed
    finally:
        scheduler.close()
    store = open_store(ml_env.database_url)
    version = store.latest_asset_version("features/wine")
    run = store.get_run(tick.created[0])
    assert run.pipeline == "train_on_features" and run.state is RunState.SUCCESS
    assert run.trigger == "asset"
    assert run.extra["trigger"]["assets"] == {"features/wine": version.version}
    from cadenza.engine.api import result_from_store

    trained = result_from_store(store, run.run_id, ml_env.artifact_root)
    assert trained.outputs["train_and_evaluate"]["features_version"] == version.version


def test_the_features_example_script_runs_training_from_a_scheduler_tick(
        tmp_path: Path, template_db: Path) -> None:
    env, _ = _script_env(tmp_path / "home", template_db)

    proc = _run([sys.executable, str(EXAMPLES / "features_to_training.py")], env, tmp_path)

    assert "scheduler tick: started 1 run(s) for new asset versions" in proc.stdout
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("train_on_features run ") and ": success" in last, proc.stdout
    assert "{'features/wine': 1}" in last


def test_training_before_any_features_explains_the_order(ml_env: Settings,
                                                        tmp_path: Path) -> None:
    chain = example("features_to_training")

    result = chain.train_on_features.run(executor="inline", data_dir=str(tmp_path / "empty"))

    assert "run build_wine_features first" in result.failed["read_features"].message


# --- warehouse to model: SQL + dbt + Python + shell on the local PostgreSQL -------------------


@pytest.mark.postgres
def test_warehouse_to_model_lands_builds_trains_and_packages(
        sqlite_env: Settings, warehouse: Any, kind_envs: Path, tmp_path: Path) -> None:
    import hashlib

    env = clean_env(sqlite_env.home)
    env["CADENZA_ENVS_DIR"] = str(kind_envs)  # dbt's environment, built once per test run
    env["WAREHOUSE_SCHEMA"] = warehouse.schema
    proc = subprocess.run([*CADENZA, "run", str(EXAMPLES / "warehouse_to_model.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]

    store = open_store(env["CADENZA_DATABASE_URL"])
    run = store.list_runs(limit=1)[0]
    states = {t.task_id: t.state for t in store.get_task_instances(run.run_id)}
    assert states == {"land_orders": S.SUCCESS, "dbt": S.SUCCESS, "features": S.SUCCESS,
                      "train": S.SUCCESS, "package": S.SUCCESS}
    from cadenza import get_run

    outputs = get_run(run.run_id).outputs
    assert outputs["land_orders"] > 0  # rows inserted by the last statement
    nodes = outputs["dbt"]["nodes"]
    assert nodes["model.warehouse.customer_features"] == "success"
    assert "test.warehouse.no_negative_spend" in nodes
    trained = outputs["train"]
    assert trained["rows"] == 400 and trained["churn_rate"] == pytest.approx(0.4)
    assert 0.5 < trained["auc"] <= 1.0
    tarball = Path(trained["folder"]) / "model.tgz"
    assert outputs["package"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    rows = warehouse.execute("SELECT count(*), sum(churned) FROM {schema}.customer_features")
    assert rows == [(400, 160)]
