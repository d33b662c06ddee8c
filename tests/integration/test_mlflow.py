"""MLflow tracking and registry (SPEC §8), against a real `mlflow server` and the local store.

A session fixture starts `mlflow server` on a free loopback port with a SQLite backend and a
temporary artifact root, waits until it answers, and stops it at the end. Everything is
asserted through MlflowClient. MLflow's SQLite schema takes ~8 s to create on this machine,
so one migrated database is made per session and copied wherever a fresh store is needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza import MLflow, RunState, TaskState, get_context, pipeline, register_model, task
from cadenza.core.settings import Settings
from cadenza.store import open_store
from tests.fixtures.ports import refusing_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::FutureWarning", "ignore::UserWarning")

SERVER_START_TIMEOUT_S = 180.0


def _require_mlflow() -> Any:
    return pytest.importorskip(
        "mlflow", reason="mlflow is not installed: pip install 'cadenza[ml]' to run these tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An MLflow URL nothing answers at, held for the test (tests/fixtures/ports.py)."""
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}"


def make_template_db(folder: Path) -> Path:
    """A SQLite file with MLflow's schema created (the slow part of a first run)."""
    mlflow = _require_mlflow()
    path = folder / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}")
    client.search_experiments()
    return path


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_db(tmp_path_factory.mktemp("mlflow-template"))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1:<free port>, SQLite backend, temporary artifact root."""
    _require_mlflow()
    root = tmp_path_factory.mktemp("mlflow-server")
    db = root / "server.db"
    shutil.copy(mlflow_template_db, db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe) if exe.exists() else "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{db}",
           "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           # The server's job runner starts half a dozen worker processes we do not need.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = root / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _answers(url):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode} before answering on "
                            f"{url}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer on {url} within "
                            f"{SERVER_START_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture
def local_store(sqlite_env: Settings, mlflow_template_db: Path,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default MLflow location of this test's CADENZA_HOME, pre-migrated."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    target = sqlite_env.home / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True)
    shutil.copy(mlflow_template_db, target)
    return target


def _client(uri: str) -> Any:
    mlflow = _require_mlflow()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs_of(client: Any, experiment: str, run_id: str) -> tuple[Any, dict[str, Any]]:
    """(parent run, nested runs by name) of one Cadenza run."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    runs = client.search_runs([exp.experiment_id], f"tags.`cadenza.run_id` = '{run_id}'",
                              max_results=500)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    nested = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents[0], nested


# --- a small real training pipeline, built per test with the tracker under test -------------


@task
def load_iris_data() -> Any:
    from sklearn.datasets import load_iris

    return load_iris(as_frame=True).frame


@task
def fit(data: Any, C: float) -> dict:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    ctx = get_context()
    ctx.log_param("C", C)
    X, y = data.drop(columns=["target"]), data["target"]
    model = LogisticRegression(C=C, max_iter=500).fit(X, y)
    accuracy = float(model.score(X, y))
    ctx.log_metric("accuracy", accuracy)
    ctx.log_metric("loss_curve", 1.0)
    ctx.log_metric("loss_curve", 0.5)
    mlflow.log_metric("fluent_metric", 42.0)  # MLflow's own API, in user code
    return {"C": C, "accuracy": accuracy, "model": model}


@task
def pick(results: list[dict]) -> dict:
    best = max(results, key=lambda r: r["accuracy"])
    get_context().log_metric("best_accuracy", best["accuracy"])
    return best


@task
def publish(best: dict, model_name: str) -> str:
    return register_model(best["model"], model_name, alias="staging")


def _training_body(model_name: str = "m", Cs: list[float] = [0.1, 1.0, 10.0]):  # noqa: B006
    results = fit.partial(data=load_iris_data()).expand(C=Cs)
    publish(pick(results), model_name)


def training_pipeline(tracking: Any) -> Any:
    return pipeline(name="mlflow_training", tracking=tracking)(_training_body)


def _check_training_run(client: Any, experiment: str, result: Any, model_name: str,
                        database_url: str) -> None:
    assert result.state is RunState.SUCCESS, result.failed
    parent, nested = _runs_of(client, experiment, result.run_id)

    # One parent run per pipeline run, tagged and named with the Cadenza run id ...
    assert parent.info.run_name == result.run_id
    assert parent.data.tags["cadenza.pipeline"] == "mlflow_training"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model_name"] == model_name
    assert parent.data.params["Cs"] == "[0.1, 1.0, 10.0]"
    # ... and its id is on the Cadenza run.
    run = open_store(database_url).get_run(result.run_id)
    assert run.extra["tracking"]["mlflow_run_id"] == parent.info.run_id
    assert "warnings" not in run.extra

    # One nested run per task instance.
    assert set(nested) == {"load_iris_data", "fit[0]", "fit[1]", "fit[2]", "pick", "publish"}
    for r in nested.values():
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.status == "FINISHED"
        assert r.data.tags["cadenza.attempt"] == "1"
    for i, C in enumerate((0.1, 1.0, 10.0)):
        fitted = nested[f"fit[{i}]"]
        assert fitted.data.tags["cadenza.map_index"] == str(i)
        assert fitted.data.params == {"C": str(C)}
        assert 0.5 < fitted.data.metrics["accuracy"] <= 1.0
        assert fitted.data.metrics["fluent_metric"] == 42.0
        history = client.get_metric_history(fitted.info.run_id, "loss_curve")
        assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    best = result.outputs["pick"]["accuracy"]
    assert nested["pick"].data.metrics["best_accuracy"] == best
    # Metrics of unmapped tasks are mirrored on the parent, prefixed with the task id.
    assert client.get_run(parent.info.run_id).data.metrics["pick.best_accuracy"] == best

    # The registered version, its alias, and the URI the task returned.
    version = client.get_model_version_by_alias(model_name, "staging")
    assert result.outputs["publish"] == f"models:/{model_name}/{version.version}"
    assert version.run_id == nested["publish"].info.run_id
    assert version.tags["cadenza.run_id"] == result.run_id

    # Cadenza's own store has the metrics too (the UI shows them without MLflow).
    names = {(m.task_id, m.map_index, m.name) for m in open_store(database_url).get_metrics(
        result.run_id)}
    assert ("fit", 2, "accuracy") in names and ("pick", -1, "best_accuracy") in names


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_server_gets_a_parent_run_nested_runs_metrics_params_and_a_model_version(
        sqlite_env: Settings, mlflow_server: str, executor: str) -> None:
    model_name = f"iris-{executor}-{uuid.uuid4().hex[:8]}"
    experiment = f"server-{executor}"
    p = training_pipeline(MLflow(experiment=experiment, tracking_uri=mlflow_server))

    result = p.run(executor=executor, model_name=model_name)

    _check_training_run(_client(mlflow_server), experiment, result, model_name,
                        sqlite_env.database_url)
    info = open_store(sqlite_env.database_url).get_run(result.run_id).extra["tracking"]
    assert info["tracking_uri"] == mlflow_server
    assert info["url"].startswith(f"{mlflow_server}/#/experiments/")


@pytest.mark.slow
def test_default_is_a_local_store_under_cadenza_home(sqlite_env: Settings,
                                                     local_store: Path) -> None:
    model_name = f"iris-local-{uuid.uuid4().hex[:8]}"
    p = training_pipeline(MLflow(experiment="local"))

    result = p.run(executor="threads", model_name=model_name)

    uri = f"sqlite:///{local_store}"
    run = open_store(sqlite_env.database_url).get_run(result.run_id)
    assert run.extra["tracking"]["tracking_uri"] == uri
    client = _client(uri)
    _check_training_run(client, "local", result, model_name, sqlite_env.database_url)
    # Artifacts (the logged model) sit beside the store, not in the current folder.
    location = client.get_experiment_by_name("local").artifact_location
    assert location == (sqlite_env.home / "mlflow" / "artifacts" / "local").resolve().as_uri()
    assert any((sqlite_env.home / "mlflow" / "artifacts" / "local").rglob("MLmodel"))
    assert not Path("mlruns").exists()


# --- failures ----------------------------------------------------------------------------------


@task(retries=1)
def flaky() -> int:
    ctx = get_context()
    ctx.log_metric("attempt_seen", ctx.attempt)
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return ctx.attempt


@task
def boom() -> None:
    raise ValueError("boom")


def _failing_body():
    flaky()
    boom()


def test_failed_run_and_retried_task_are_visible_in_mlflow(sqlite_env: Settings,
                                                           local_store: Path) -> None:
    p = pipeline(name="mlflow_failing", tracking=MLflow(experiment="failing"))(_failing_body)

    result = p.run(executor="inline")

    assert result.state is RunState.FAILED
    assert result.task_states["flaky"] is TaskState.SUCCESS
    parent, nested = _runs_of(_client(f"sqlite:///{local_store}"), "failing", result.run_id)
    assert parent.info.status == "FAILED"
    # One nested run per attempt: the retry does not overwrite the failed attempt's run.
    assert nested["flaky"].info.status == "FAILED"
    assert nested["flaky (attempt 2)"].info.status == "FINISHED"
    assert nested["flaky (attempt 2)"].data.tags["cadenza.attempt"] == "2"
    assert nested["flaky (attempt 2)"].data.metrics["attempt_seen"] == 2
    assert nested["boom"].info.status == "FAILED"


@task
def fails_until_fixed(folder: str) -> str:
    if not os.path.exists(os.path.join(folder, "fixed")):
        raise RuntimeError("not fixed yet")
    get_context().log_metric("fixed", 1.0)
    return "ok"


def _resumable_body(folder: str = ""):
    fails_until_fixed(folder)


def test_resumed_run_keeps_writing_to_the_same_mlflow_run(sqlite_env: Settings,
                                                          local_store: Path,
                                                          tmp_path: Path) -> None:
    p = pipeline(name="mlflow_resumable",
                 tracking=MLflow(experiment="resumable"))(_resumable_body)
    first = p.run(executor="inline", folder=str(tmp_path))
    assert first.state is RunState.FAILED
    (tmp_path / "fixed").touch()

    resumed = first.resume(executor="inline")

    assert resumed.state is RunState.SUCCESS
    client = _client(f"sqlite:///{local_store}")
    parent, nested = _runs_of(client, "resumable", first.run_id)
    assert parent.info.status == "FINISHED"
    assert [r.info.status for r in nested.values()].count("FAILED") == 1
    rerun = [r for r in nested.values() if r.info.status == "FINISHED"]
    assert len(rerun) == 1 and rerun[0].data.metrics["fixed"] == 1.0


@task
def count_and_log(folder: str) -> int:
    with open(os.path.join(folder, "ran"), "a") as fh:
        fh.write("x\n")
    get_context().log_metric("value", 3.0)
    get_context().log_param("kind", "untracked")
    return 3


def _counting_body(folder: str = ""):
    count_and_log(folder)


def test_unreachable_server_runs_the_tasks_and_warns_once_with_the_url_and_fix(
        sqlite_env: Settings, tmp_path: Path, refused_url: str) -> None:
    url = refused_url
    p = pipeline(name="mlflow_unreachable",
                 tracking=MLflow(experiment="nowhere", tracking_uri=url))(_counting_body)

    result = p.run(executor="processes", folder=str(tmp_path))

    assert result.state is RunState.SUCCESS
    assert result.outputs["count_and_log"] == 3
    store = open_store(sqlite_env.database_url)
    run = store.get_run(result.run_id)
    warnings = run.extra["warnings"]
    assert len(warnings) == 1, warnings
    assert url in warnings[0] and "unreachable" in warnings[0]
    assert "Fix: start the MLflow server" in warnings[0] and "fail_on_error=True" in warnings[0]
    assert "tracking" not in run.extra
    # Cadenza still keeps the task's metrics and params.
    assert {(m.name, m.kind) for m in store.get_metrics(result.run_id)} == {
        ("value", "metric"), ("kind", "param")}


def test_an_mlflow_run_open_around_an_inline_run_stays_open(
        sqlite_env: Settings, local_store: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = _require_mlflow()
    uri = f"sqlite:///{local_store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p = pipeline(name="mlflow_inside", tracking=MLflow(experiment="inside"))(_counting_body)

    with mlflow.start_run() as outer:
        result = p.run(executor="inline", folder=str(tmp_path))
        still = mlflow.active_run()
        assert still is not None and still.info.run_id == outer.info.run_id
        assert mlflow.get_tracking_uri() == uri

    assert result.state is RunState.SUCCESS
    client = _client(uri)
    assert client.get_run(outer.info.run_id).info.status == "FINISHED"
    _, nested = _runs_of(client, "inside", result.run_id)
    assert nested["count_and_log"].info.status == "FINISHED"
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_fail_on_error_stops_the_run_before_any_task_naming_the_url(
        sqlite_env: Settings, tmp_path: Path, refused_url: str) -> None:
    url = refused_url
    p = pipeline(name="mlflow_strict", tracking=MLflow(
        experiment="nowhere", tracking_uri=url, fail_on_error=True))(_counting_body)

    result = p.run(executor="inline", folder=str(tmp_path))

    assert not result.ok
    assert not (tmp_path / "ran").exists()
    assert result.task_states["count_and_log"] is not TaskState.SUCCESS
    run = open_store(sqlite_env.database_url).get_run(result.run_id)
    assert run.state.is_final
    assert url in (run.error or "") and "unreachable" in (run.error or "")
    assert "fail_on_error=True, so the run stops" in (run.error or "")


def test_fail_on_error_records_the_run_as_failed(sqlite_env: Settings, tmp_path: Path,
                                                refused_url: str) -> None:
    url = refused_url
    p = pipeline(name="mlflow_strict_state", tracking=MLflow(
        experiment="nowhere", tracking_uri=url, fail_on_error=True))(_counting_body)

    result = p.run(executor="inline", folder=str(tmp_path))

    assert result.state is RunState.FAILED


class NotAModel:
    pass


@task
def register_junk() -> str:
    return register_model(NotAModel(), "junk-model")


@task
def register_unfitted() -> str:
    from sklearn.linear_model import LogisticRegression

    return register_model(LogisticRegression(), "unfitted-model")


def _registering_body():
    register_junk()
    register_unfitted()


def test_a_model_that_cannot_be_registered_fails_the_task_naming_the_model_and_reason(
        sqlite_env: Settings, local_store: Path) -> None:
    p = pipeline(name="mlflow_bad_models",
                 tracking=MLflow(experiment="bad-models"))(_registering_body)

    result = p.run(executor="inline")

    assert result.state is RunState.FAILED
    junk = result.failed["register_junk"]
    assert junk.type.endswith("ModelRegistrationError")
    assert "cannot register model 'junk-model'" in junk.message
    assert "cannot log a tests.integration.test_mlflow.NotAModel" in junk.message
    assert "pass a fitted scikit-learn estimator" in junk.message
    unfitted = result.failed["register_unfitted"]
    assert "cannot register model 'unfitted-model'" in unfitted.message
    assert "is not fitted" in unfitted.message
    _, nested = _runs_of(_client(f"sqlite:///{local_store}"), "bad-models", result.run_id)
    assert nested["register_junk"].info.status == "FAILED"


def _untracked_body():
    register_junk()


def test_register_model_without_tracking_says_how_to_turn_it_on(sqlite_env: Settings) -> None:
    result = pipeline(name="mlflow_untracked")(_untracked_body).run(executor="inline")

    error = result.failed["register_junk"]
    assert "cannot register model 'junk-model'" in error.message
    assert "tracking=MLflow(" in error.message


def test_importing_cadenza_and_its_ml_names_imports_no_ml_library() -> None:
    code = ("import sys, cadenza\n"
            "from cadenza import MLflow, Notify, register_model, validate\n"
            "heavy = [m for m in ('mlflow', 'pandera', 'apprise', 'sklearn', 'pandas')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
