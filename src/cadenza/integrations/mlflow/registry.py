"""The model registry from inside a task: `register_model` logs and registers a model in the
task's MLflow run; `load_model` loads a version back by alias.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from cadenza.integrations.errors import ModelRegistrationError, task_location
from cadenza.integrations.mlflow.connect import (
    TaskSink,
    client_for,
    default_tracking_uri,
    enter_uris,
    leave_uris,
    mlflow_module,
)


def _current_sink() -> TaskSink | None:
    from cadenza.core.context import _current

    ctx = _current.get()
    if ctx is None:
        return None
    return next((s for s in ctx.sinks if isinstance(s, TaskSink)), None)


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
    mlflow = mlflow_module()
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


def _log_model(mlflow: Any, model: Any, sink: TaskSink, input_example: Any, fail: Any) -> str:
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
    mlflow = mlflow_module()
    sink = _current_sink()
    uri = sink.uri if sink is not None and tracking_uri is None else (
        tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    model_uri = f"models:/{name}@{alias}"
    try:
        client = client_for(uri, 5.0)
        version = client.get_model_version_by_alias(name, alias)
    except Exception as exc:
        raise ModelRegistrationError(
            f"no model '{name}' with alias '{alias}' in {uri}: {type(exc).__name__}: {exc}",
            pipeline=pipeline, task=label,
            hint="register one first with register_model(model, name, alias=...)") from exc
    try:
        if sink is None:
            enter_uris(mlflow, uri)
        try:
            flavors = mlflow.models.get_model_info(model_uri).flavors
            if "sklearn" in flavors:
                import mlflow.sklearn

                return mlflow.sklearn.load_model(model_uri)
            return mlflow.pyfunc.load_model(model_uri)
        finally:
            if sink is None:
                leave_uris(mlflow)
    except Exception as exc:
        hint = None
        if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in str(exc):
            hint = ("MLflow unpickles models only when MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true;"
                    " set it if you trust this registry")
        raise ModelRegistrationError(
            f"cannot load model '{name}' version {version.version} (alias '{alias}'): "
            f"{type(exc).__name__}: {exc}", pipeline=pipeline, task=label, hint=hint) from exc
