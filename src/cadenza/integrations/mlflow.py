"""MLflow experiment tracking and model registry for Cadenza pipelines.

What belongs here: `MLflow`, the `core.tracking.Tracker` a pipeline names with
`@pipeline(tracking=MLflow(experiment="fraud"))`; `register_model` and `load_model`, the task
helpers for the model registry. What does not: anything the engine decides (when a run
starts or ends, retries); the engine calls the tracker through `core.tracking` only.

How a run maps onto MLflow:
  - one MLflow run per Cadenza run (the parent), named after the run id and tagged
    `cadenza.run_id` / `cadenza.pipeline`, with the pipeline's parameters as params; its id
    is kept on the Cadenza run as `run.extra["tracking"]["mlflow_run_id"]`;
  - one nested run per task attempt (`mlflow.parentRunId`), named after the task instance
    ("train[3]", "train[3] (attempt 2)"), receiving `get_context().log_metric/log_param`;
    metrics of unmapped tasks are mirrored on the parent as "<task>.<metric>" so runs can be
    compared in the MLflow UI without opening them;
  - inside a task the nested run is MLflow's active run, so `mlflow.log_metric(...)` and
    `mlflow.sklearn.autolog()` in user code land in it too.

Where it tracks, first that applies: `MLflow(tracking_uri=...)`, `MLFLOW_TRACKING_URI`, else an
embedded store needing no server: SQLite at `$CADENZA_HOME/mlflow/mlflow.db` with artifacts in
`$CADENZA_HOME/mlflow/artifacts` (see it with `mlflow ui --backend-store-uri sqlite:///...`).

Failures (the tracker never fails a run unless `fail_on_error=True`):
  1. store or server unreachable when the run starts -> `start_run` raises TrackingUnavailable
     naming the URL and the fix; the driver records it once as a warning on the run and runs
     the tasks untracked.
  2. unreachable when a task starts -> the task runs untracked, a line in its log says why.
  3. one logging call fails inside a task -> reported once in the task log, the task goes on.
The tracker is pickled into every worker process with each task call, so it holds only
configuration; mlflow is imported inside the methods (it costs ~2 s), never at import time.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cadenza.core.errors import ConfigError, TaskInterrupt
from cadenza.integrations.errors import ModelRegistrationError, TrackingUnavailable, task_location

log = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
_STATUS = {"success": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def _mlflow() -> Any:
    # Cadenza starts many short-lived worker processes; each would start MLflow's usage
    # telemetry thread. Off unless the user says otherwise (MLFLOW_DISABLE_TELEMETRY=false).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as exc:
        raise TrackingUnavailable(
            "MLflow is not installed in this environment",
            hint="pip install 'cadenza[ml]' (or pip install mlflow), or drop tracking= from "
            "the @pipeline",
        ) from exc
    return mlflow


def _default_tracking_uri() -> str:
    from cadenza.core.settings import get_settings

    db = get_settings().home / "mlflow" / "mlflow.db"
    return f"sqlite:///{db}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(raw) if raw and raw != ":memory:" else None


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _fix_hint(uri: str, *, strict: bool = False) -> str:
    then = ("this tracker has fail_on_error=True, so the run stops instead of running "
            "untracked" if strict else "tasks run untracked meanwhile; "
            "MLflow(..., fail_on_error=True) fails the run instead")
    if _is_http(uri):
        return (
            f"start the MLflow server at {uri} (e.g. mlflow server --host 127.0.0.1 --port "
            "5000 --backend-store-uri sqlite:///mlflow.db), or point MLflow(tracking_uri=...) "
            "or MLFLOW_TRACKING_URI at one that runs, or set neither to track in the local "
            f"store under CADENZA_HOME; {then}"
        )
    return (
        f"check that {uri} can be created and written (folder exists, permissions, disk "
        f"space), or point MLflow(tracking_uri=...) elsewhere; {then}"
    )


def _probe(uri: str, timeout_s: float, *, strict: bool = False) -> None:
    """Fail fast on an unreachable server: MLflow's own client retries with backoff for
    minutes before giving up, which would stall the run."""
    if not _is_http(uri):
        return
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read(64)
    except urllib.error.HTTPError:
        return  # something answered; MLflow's own calls will say more if it is not MLflow
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason})",
            hint=_fix_hint(uri, strict=strict)
        ) from exc


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _client(uri: str, timeout_s: float, *, strict: bool = False) -> Any:
    """One MlflowClient per URI and process (a SQLite store opens its engine once)."""
    _probe(uri, timeout_s, strict=strict)
    with _clients_lock:
        client = _clients.get(uri)
        if client is None:
            mlflow = _mlflow()
            path = _sqlite_path(uri)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    log.info("creating the MLflow store %s (first run only, takes a few "
                             "seconds)", path)
            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            _clients[uri] = client
        return client


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return text[:_MAX_PARAM_CHARS]


# --- the process's MLflow URIs, for user code that uses MLflow's fluent API in a task -------

_uri_lock = threading.Lock()
_uri_users = 0
_uri_saved: tuple[Any, ...] | None = None


def _enter_uris(mlflow: Any, uri: str) -> None:
    """Make `uri` the process's tracking and registry URI while tracked tasks run in it.

    MLflow keeps these per process. Threads running tasks of pipelines with different
    tracking URIs at once share one (the last set): a documented limitation."""
    global _uri_users, _uri_saved
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _uri_lock:
        if _uri_users == 0:
            _uri_saved = (
                getattr(tracking_utils, "_tracking_uri", None),
                getattr(registry_utils, "_registry_uri", None),
                os.environ.get("MLFLOW_TRACKING_URI"),
                os.environ.get("MLFLOW_REGISTRY_URI"),
            )
        _uri_users += 1
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)


def _leave_uris(mlflow: Any) -> None:
    global _uri_users, _uri_saved
    with _uri_lock:
        _uri_users -= 1
        if _uri_users > 0 or _uri_saved is None:
            return
        tracking, registry, env_tracking, env_registry = _uri_saved
        _uri_saved = None
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)
        for key, value in (("MLFLOW_TRACKING_URI", env_tracking),
                           ("MLFLOW_REGISTRY_URI", env_registry)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- the sink a task's log_metric / log_param go to --------------------------------------------


class _Sink:
    """Receives one task attempt's metrics and params (core.tracking.MetricSink)."""

    def __init__(self, *, client: Any, uri: str, run_id: str, experiment_id: str,
                 parent_run_id: str, mirror_prefix: str | None, fail_on_error: bool) -> None:
        self.client = client
        self.uri = uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.mirror_prefix = mirror_prefix
        self.fail_on_error = fail_on_error
        self._steps: dict[str, int] = {}
        self._reported = False

    def _failed(self, what: str, exc: Exception) -> None:
        if self.fail_on_error:
            raise TrackingUnavailable(f"MLflow ({self.uri}) could not {what}: {exc}",
                                      hint=_fix_hint(self.uri, strict=True)) from exc
        if not self._reported:  # once per attempt: a dead server would repeat it per call
            self._reported = True
            print(f"[cadenza] MLflow ({self.uri}) could not {what}: {type(exc).__name__}: "
                  f"{exc}; further tracking errors of this attempt are not shown",
                  file=sys.stderr)

    def log_metric(self, name: str, value: float) -> None:
        step = self._steps.get(name, 0)
        self._steps[name] = step + 1
        try:
            self.client.log_metric(self.run_id, name, value, step=step)
            if self.mirror_prefix:
                self.client.log_metric(self.parent_run_id, f"{self.mirror_prefix}.{name}", value,
                                       step=step)
        except Exception as exc:  # noqa: BLE001 - tracking never fails the task by default
            self._failed(f"log metric '{name}'", exc)

    def log_param(self, name: str, value: Any) -> None:
        try:
            self.client.log_param(self.run_id, name, _param_text(value))
        except Exception as exc:  # noqa: BLE001 - e.g. a param logged twice with new values
            self._failed(f"log param '{name}'", exc)


class MLflow:
    """Track a pipeline's runs in MLflow: `@pipeline(tracking=MLflow(experiment="fraud"))`.

    Args:
        experiment: the MLflow experiment's name; created on first use.
        tracking_uri: an MLflow tracking URI (`http://host:5000`, `sqlite:///path.db`, ...).
            Default: `MLFLOW_TRACKING_URI`, else a local store under CADENZA_HOME.
        fail_on_error: fail the run (and a task) when MLflow cannot be reached or written,
            instead of warning and running untracked.
        timeout_s: how long to wait for a tracking server to answer before calling it
            unreachable.

    Example:
        @pipeline(tracking=MLflow(experiment="fraud"))
        def fraud_detection(n: int = 5000):
            ...

        @task
        def evaluate(model, data) -> dict:
            get_context().log_metric("auc", auc)  # -> the task's nested MLflow run
    """

    def __init__(self, experiment: str, *, tracking_uri: str | None = None,
                 fail_on_error: bool = False, timeout_s: float = 5.0) -> None:
        if not isinstance(experiment, str) or not experiment.strip():
            raise ConfigError(f"MLflow experiment must be a non-empty name, got {experiment!r}",
                              hint='MLflow(experiment="fraud")')
        if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri):
            raise ConfigError(f"MLflow tracking_uri must be a URI, got {tracking_uri!r}",
                              hint='MLflow(experiment="fraud", tracking_uri="http://127.0.0.1:5000")')
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.fail_on_error = bool(fail_on_error)
        self.timeout_s = float(timeout_s)

    def __repr__(self) -> str:
        where = self.tracking_uri or "default"
        return f"MLflow(experiment={self.experiment!r}, tracking_uri={where!r})"

    # -- where ------------------------------------------------------------------------------------
    def resolve_tracking_uri(self) -> str:
        """The tracking URI a run started now would use."""
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _default_tracking_uri()

    @staticmethod
    def _artifact_location(uri: str, experiment: str) -> str | None:
        # A SQLite store keeps artifacts beside it; MLflow's default would be ./mlruns in
        # whatever folder the run happened to start from. A server decides for itself.
        path = _sqlite_path(uri)
        if path is None:
            return None
        folder = path.parent / "artifacts" / "".join(
            c if c.isalnum() or c in "-_." else "_" for c in experiment)
        return folder.resolve().as_uri()

    def _experiment_id(self, client: Any, uri: str) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return str(client.create_experiment(
                    self.experiment, artifact_location=self._artifact_location(uri, self.experiment)))
            except Exception:  # created meanwhile by a concurrent run: use that one
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if getattr(exp, "lifecycle_stage", "active") == "deleted":
            raise TrackingUnavailable(
                f"MLflow experiment '{self.experiment}' is deleted in {uri}",
                hint=f"restore it (mlflow experiments restore --experiment-id "
                f"{exp.experiment_id}) or use another name in MLflow(experiment=...)")
        return str(exp.experiment_id)

    # -- core.tracking.Tracker ------------------------------------------------------------------
    def start_run(self, *, pipeline: str, run_id: str, params: dict[str, Any],
                  tags: tuple[str, ...]) -> dict[str, Any]:
        """Open the parent MLflow run of one Cadenza run (in the driver)."""
        uri = self.resolve_tracking_uri()
        try:
            client = _client(uri, self.timeout_s, strict=self.fail_on_error)
            experiment_id = self._experiment_id(client, uri)
            run_tags = {"cadenza.run_id": run_id, "cadenza.pipeline": pipeline}
            if tags:
                run_tags["cadenza.tags"] = ",".join(tags)
            run = client.create_run(experiment_id, run_name=run_id, tags=run_tags)
            if params:
                from mlflow.entities import Param

                client.log_batch(run.info.run_id, params=[
                    Param(str(k), _param_text(v)) for k, v in sorted(params.items())])
        except TrackingUnavailable:
            raise
        except Exception as exc:
            raise TrackingUnavailable(
                f"MLflow at {uri} could not open a run in experiment '{self.experiment}': "
                f"{type(exc).__name__}: {exc}", pipeline=pipeline,
                hint=_fix_hint(uri, strict=self.fail_on_error)) from exc
        info: dict[str, Any] = {
            "tracker": "mlflow",
            "tracking_uri": uri,
            "experiment": self.experiment,
            "experiment_id": experiment_id,
            "mlflow_run_id": run.info.run_id,
        }
        if _is_http(uri):
            info["url"] = (f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/"
                           f"{run.info.run_id}")
        return info

    def end_run(self, *, run_id: str, state: str, info: dict[str, Any]) -> None:
        """Close the parent run with the Cadenza run's final state."""
        mlflow_run_id = info.get("mlflow_run_id")
        uri = info.get("tracking_uri")
        if not mlflow_run_id or not uri:
            return
        status = _STATUS.get(str(state), "FAILED")
        try:
            client = _client(uri, self.timeout_s, strict=self.fail_on_error)
            client.set_terminated(mlflow_run_id, status=status)
        except TrackingUnavailable:
            raise
        except Exception as exc:
            raise TrackingUnavailable(
                f"MLflow at {uri} could not close run {mlflow_run_id}: {type(exc).__name__}: "
                f"{exc}", hint=_fix_hint(uri, strict=self.fail_on_error)) from exc

    @contextmanager
    def task_scope(self, ctx: Any, info: dict[str, Any]) -> Iterator[_Sink | None]:
        """Around one task attempt, in the worker: a nested run, active for MLflow's fluent
        API in this thread, ended FINISHED / FAILED / KILLED with the attempt."""
        uri = info.get("tracking_uri")
        parent = info.get("mlflow_run_id")
        experiment_id = info.get("experiment_id")
        if not (uri and parent and experiment_id):
            yield None
            return
        mlflow = _mlflow()
        client = _client(uri, self.timeout_s, strict=self.fail_on_error)
        label = ctx.task_id if ctx.map_index < 0 else f"{ctx.task_id}[{ctx.map_index}]"
        name = label if ctx.attempt <= 1 else f"{label} (attempt {ctx.attempt})"
        tags = {
            "mlflow.parentRunId": parent,
            "cadenza.run_id": ctx.run_id,
            "cadenza.pipeline": ctx.pipeline,
            "cadenza.task_id": ctx.task_id,
            "cadenza.map_index": str(ctx.map_index),
            "cadenza.attempt": str(ctx.attempt),
        }
        try:
            run = client.create_run(experiment_id, run_name=name, tags=tags)
        except Exception as exc:
            raise TrackingUnavailable(f"MLflow at {uri} could not open a run for task "
                                      f"'{label}': {exc}",
                                      hint=_fix_hint(uri, strict=self.fail_on_error)) from exc
        nested = run.info.run_id
        sink = _Sink(client=client, uri=uri, run_id=nested, experiment_id=experiment_id,
                     parent_run_id=parent, mirror_prefix=ctx.task_id if ctx.map_index < 0 else None,
                     fail_on_error=self.fail_on_error)
        active = _activate(mlflow, uri, nested)
        status = "FINISHED"
        try:
            yield sink
        except TaskInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            _deactivate(mlflow, client, nested, status, active, fail=(
                self.fail_on_error and status == "FINISHED"))


def _activate(mlflow: Any, uri: str, run_id: str) -> tuple[bool, str | None]:
    """Make the nested run MLflow's active run in this thread. Returns (activated, id of the
    run that was active before, if any). Not activated: the sink still works; only user code
    calling mlflow.* directly loses its run."""
    _enter_uris(mlflow, uri)
    before = mlflow.active_run()
    outer = before.info.run_id if before is not None else None
    try:
        mlflow.start_run(run_id=run_id, nested=True)
    except Exception as exc:  # noqa: BLE001 - the task must run anyway
        print(f"[cadenza] MLflow: could not make run {run_id} active for mlflow.* calls: {exc}",
              file=sys.stderr)
        return False, outer
    return True, outer


def _deactivate(mlflow: Any, client: Any, run_id: str, status: str,
                active: tuple[bool, str | None], *, fail: bool) -> None:
    activated, outer = active
    try:
        closed = False
        if activated:
            # End what this attempt left open in this thread (runs the user's code started,
            # then ours), down to whatever was active before it (inline executor).
            while (run := mlflow.active_run()) is not None and run.info.run_id != outer:
                ours = run.info.run_id == run_id
                mlflow.end_run(status=status if ours else "FINISHED")
                closed = closed or ours
        if not closed:
            client.set_terminated(run_id, status=status)
    except Exception as exc:  # never mask the outcome of the task itself
        if fail:
            raise TrackingUnavailable(f"MLflow could not close run {run_id}: {exc}") from exc
        print(f"[cadenza] MLflow: could not close run {run_id}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
    finally:
        _leave_uris(mlflow)


# --- model registry --------------------------------------------------------------------------


def _current_sink() -> _Sink | None:
    from cadenza.core.context import _current

    ctx = _current.get()
    if ctx is None:
        return None
    return next((s for s in ctx.sinks if isinstance(s, _Sink)), None)


def _is_sklearn(model: Any) -> bool:
    if type(model).__module__.split(".", 1)[0] == "sklearn":
        return True
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(model, base.BaseEstimator)


def _is_python_model(model: Any) -> bool:
    import mlflow.pyfunc

    return isinstance(model, mlflow.pyfunc.PythonModel)


def register_model(model: Any, name: str, alias: str | None = "staging", *,
                   input_example: Any = None, tags: dict[str, str] | None = None) -> str:
    """Log `model` to the task's MLflow run, register it as a new version of `name`, point
    `alias` at that version, and return the version's URI (`models:/name/3`).

    Call it inside a task of a pipeline with `tracking=MLflow(...)`. `model` is a fitted
    scikit-learn estimator, an `mlflow.pyfunc.PythonModel`, or the URI of a model already
    logged (`runs:/<run id>/model`, `models:/m-...`). A model that cannot be logged or
    registered fails the task with a ModelRegistrationError naming the model and the reason.

    Example:
        @task
        def deploy(model) -> str:
            return register_model(model, "fraud-detector", alias="staging")
    """
    pipeline, label = task_location()

    def fail(reason: str, hint: str | None = None) -> ModelRegistrationError:
        return ModelRegistrationError(f"cannot register model '{name}': {reason}",
                                      pipeline=pipeline, task=label, hint=hint)

    if not isinstance(name, str) or not name.strip():
        raise fail(f"the model name must be a non-empty string, got {name!r}",
                   'register_model(model, "fraud-detector")')
    if pipeline is None:
        raise fail("register_model() was called outside a running task",
                   "call it inside a @task of a pipeline with tracking=MLflow(...)")
    sink = _current_sink()
    if sink is None:
        raise fail("experiment tracking is not active for this task (the pipeline has no "
                   "tracking=MLflow(...), or MLflow was unreachable: see the run's warnings)",
                   '@pipeline(tracking=MLflow(experiment="...")) and a reachable tracking store')
    mlflow = _mlflow()
    if isinstance(model, str):
        model_uri = model
    else:
        model_uri = _log_model(mlflow, model, sink, input_example, fail)
    version_tags = {"cadenza.run_id": "", "cadenza.task_id": label or ""}
    from cadenza.core.context import get_context

    version_tags["cadenza.run_id"] = get_context().run_id
    version_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    try:
        version = mlflow.register_model(model_uri, name, tags=version_tags)
        if alias:
            sink.client.set_registered_model_alias(name, alias, version.version)
    except Exception as exc:
        raise fail(f"{type(exc).__name__}: {exc}",
                   "check the name and alias (aliases may not be 'latest' or look like "
                   "'v3') and that the registry at " + sink.uri + " is writable") from exc
    uri = f"models:/{name}/{version.version}"
    print(f"registered {uri}" + (f" (alias '{alias}')" if alias else ""))
    return uri


def _log_model(mlflow: Any, model: Any, sink: _Sink, input_example: Any, fail: Any) -> str:
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    try:
        if _is_sklearn(model):
            from sklearn.exceptions import NotFittedError  # type: ignore[import-untyped,unused-ignore]
            from sklearn.utils.validation import check_is_fitted  # type: ignore[import-untyped,unused-ignore]

            try:
                check_is_fitted(model)
            except NotFittedError as exc:
                raise fail(f"the {kind} is not fitted", "call .fit(...) before registering "
                           "it") from exc
            import mlflow.sklearn

            # cloudpickle, not MLflow's default skops: skops would need every class in the
            # model on its allow-list (a HistGradientBoosting's TreePredictor is not), and
            # listing them all buys no safety, while importing skops costs 4-6 s per process
            # (cProfile, 2-core machine). Loading stays behind MLflow's own gate,
            # MLFLOW_ALLOW_PICKLE_DESERIALIZATION. Explicit pip requirements: inferring them
            # starts a subprocess that loads the model again.
            info = mlflow.sklearn.log_model(
                model, name="model", run_id=sink.run_id, input_example=input_example,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                    include_cloudpickle=True))
        elif _is_python_model(model):
            import mlflow.pyfunc

            info = mlflow.pyfunc.log_model(name="model", python_model=model, run_id=sink.run_id,
                                           input_example=input_example)
        else:
            raise fail(
                f"Cadenza cannot log a {kind} to MLflow",
                "pass a fitted scikit-learn estimator or an mlflow.pyfunc.PythonModel, or log "
                "it with its MLflow flavor yourself and pass the URI: "
                "register_model(mlflow.pytorch.log_model(net, name='model').model_uri, name)")
    except ModelRegistrationError:
        raise
    except Exception as exc:
        raise fail(f"logging the {kind} to MLflow failed: {type(exc).__name__}: {exc}") from exc
    return str(info.model_uri)


def load_model(name: str, alias: str = "staging", *, tracking_uri: str | None = None) -> Any:
    """Load a registered model version by alias (`models:/name@alias`), in its own flavor
    (a scikit-learn estimator stays one).

    Inside a tracked task it reads the pipeline's registry; elsewhere `tracking_uri`, else
    MLFLOW_TRACKING_URI, else the local store under CADENZA_HOME. MLflow refuses to unpickle
    models unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true: set it when you trust the registry.
    """
    pipeline, label = task_location()
    mlflow = _mlflow()
    sink = _current_sink()
    uri = sink.uri if sink is not None and tracking_uri is None else (
        tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _default_tracking_uri())
    model_uri = f"models:/{name}@{alias}"
    try:
        client = _client(uri, 5.0)
        version = client.get_model_version_by_alias(name, alias)
    except Exception as exc:
        raise ModelRegistrationError(
            f"no model '{name}' with alias '{alias}' in {uri}: {type(exc).__name__}: {exc}",
            pipeline=pipeline, task=label,
            hint="register one first with register_model(model, name, alias=...)") from exc
    try:
        if sink is None:
            _enter_uris(mlflow, uri)
        try:
            flavors = mlflow.models.get_model_info(model_uri).flavors
            if "sklearn" in flavors:
                import mlflow.sklearn

                return mlflow.sklearn.load_model(model_uri)
            return mlflow.pyfunc.load_model(model_uri)
        finally:
            if sink is None:
                _leave_uris(mlflow)
    except Exception as exc:
        hint = None
        if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in str(exc):
            hint = ("MLflow unpickles models only when MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true;"
                    " set it if you trust this registry")
        raise ModelRegistrationError(
            f"cannot load model '{name}' version {version.version} (alias '{alias}'): "
            f"{type(exc).__name__}: {exc}", pipeline=pipeline, task=label, hint=hint) from exc
