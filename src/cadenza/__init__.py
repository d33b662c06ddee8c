"""Cadenza: a workflow orchestrator for machine-learning pipelines.

Example:
    from cadenza import pipeline, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @pipeline
    def tiny(x: int = 2):
        double(x)

    result = tiny.run()
"""

from cadenza.core import hooks
from cadenza.core.context import TaskContext, get_context
from cadenza.core.errors import (
    ArtifactError,
    ArtifactNotFound,
    CadenzaDefinitionError,
    CadenzaError,
    ConfigError,
    DefinitionError,
    InternalError,
    NotFound,
    ParameterError,
    PipelineNotFound,
    RunNotFound,
    StoreError,
    TaskFailed,
    TaskNotFound,
    UsageError,
    UserCodeError,
    WorkerLost,
)
from cadenza.core.states import RunState, TaskState

__version__ = "0.1.0"


def _run(pipeline: "HasPlan", params: "Mapping[str, Any]", executor: str | None) -> "RunResult":
    """`PipelineDef.run`'s way to the engine (authoring must not import it: STYLE §1).
    The engine is imported here on the first run, not by `import cadenza`.

    On the processes executor, its forkserver starts first: the worker's modules load in that
    process while this one imports the engine and opens the store (a one-task script's cold
    start is mostly those two, one after the other otherwise). The pipeline's Plan is built
    after that too (run_pipeline)."""
    if (executor or _settings_executor()) == "processes":
        from cadenza.executors.processes.forkserver import start_early

        start_early()
    from cadenza.engine.api import run_pipeline

    return run_pipeline(pipeline, params, executor=executor)


def _settings_executor() -> str:
    from cadenza.core.settings import get_settings

    return get_settings().executor


hooks.runner = _run


# The task kinds of SPEC §9 run through cadenza.integrations (authoring may not import it);
# each runtime module is imported in the worker on a kind's first call, not here.
def _run_shell(command: "Any", config: "Mapping[str, Any]") -> "Any":
    from cadenza.integrations.shell import run_shell

    return run_shell(command, config)


def _run_sql(request: "Any", config: "Mapping[str, Any]") -> "Any":
    from cadenza.integrations.sql import run_sql

    return run_sql(request, config)


def _run_http(request: "Any", config: "Mapping[str, Any]") -> "Any":
    from cadenza.integrations.http import run_http

    return run_http(request, config)


hooks.runtimes.update(shell=_run_shell, sql=_run_sql, http=_run_http)


def _spark_task(*args: "Any", **kwargs: "Any") -> "Any":
    """`@task.spark` (cadenza.integrations.spark, imported on first use: pyspark only in the
    task itself)."""
    from cadenza.integrations.spark import spark_task

    return spark_task(*args, **kwargs)


hooks.task_kinds["spark"] = _spark_task

__all__ = [
    "AnyOf",
    "ArtifactError",
    "ArtifactNotFound",
    "Asset",
    "CadenzaDefinitionError",
    "CadenzaError",
    "ConfigError",
    "DefinitionError",
    "InternalError",
    "NotFound",
    "ParameterError",
    "PipelineDef",
    "PipelineNotFound",
    "RunNotFound",
    "RunState",
    "StoreError",
    "TaskContext",
    "TaskDef",
    "TaskFailed",
    "TaskNotFound",
    "TaskState",
    "UsageError",
    "UserCodeError",
    "WorkerLost",
    "get_context",
    "http_task",
    "pipeline",
    "register_serializer",
    "sql_task",
    "task",
]

# Loaded on first use (PEP 562, `__getattr__` below), the engine and the integrations being
# wired in through core.hooks above. The authoring API: a worker process imports `cadenza`
# (its modules are in the package) but never defines a task, and the forkserver's preload of
# the worker's modules is on a one-task script's critical path (~60 M of its ~440 M
# instructions were authoring's; bench/cold_start.py). ML integrations (SPEC §8, §2 Notify)
# and triggers (§4): importing them eagerly would add ~20 ms to `import cadenza` (measured
# with -X importtime on the 2-core machine) although mlflow, pandera and apprise themselves
# are only imported when used.
from typing import TYPE_CHECKING, Any

_LAZY = {
    "AnyOf": "cadenza.authoring.assets",
    "Asset": "cadenza.authoring.assets",
    "http_task": "cadenza.authoring.kinds",
    "sql_task": "cadenza.authoring.kinds",
    "PipelineDef": "cadenza.authoring.pipeline",
    "pipeline": "cadenza.authoring.pipeline",
    "TaskDef": "cadenza.authoring.task",
    "task": "cadenza.authoring.task",
    "register_serializer": "cadenza.artifacts.serializers",
    "MLflow": "cadenza.integrations.mlflow",
    "register_model": "cadenza.integrations.mlflow",
    "Notify": "cadenza.integrations.notify",
    "validate": "cadenza.integrations.pandera",
    # Task kinds of SPEC §9 built on third-party tools (each imports its tool in the task).
    "dbt_task": "cadenza.integrations.dbt.tasks",
    "spark_task": "cadenza.integrations.spark",
    "feast_materialize": "cadenza.integrations.feast.tasks",
    "feast_historical_features": "cadenza.integrations.feast.tasks",
    # Triggers (SPEC §4): the sensors and event triggers a pipeline declares.
    "FileSensor": "cadenza.triggers.sensors",
    "sensor": "cadenza.triggers.sensors",
    "EventTrigger": "cadenza.triggers.events",
    # Past runs as data: the RunResult of any stored run (loads the store on first use).
    "get_run": "cadenza.engine.history",
    "get_runs": "cadenza.engine.history",
}

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cadenza.artifacts.serializers import register_serializer
    from cadenza.authoring.assets import AnyOf, Asset
    from cadenza.authoring.kinds import http_task, sql_task
    from cadenza.authoring.pipeline import PipelineDef, pipeline
    from cadenza.authoring.task import TaskDef, task
    from cadenza.engine.api import RunResult
    from cadenza.engine.history import get_run, get_runs
    from cadenza.graph.plan import HasPlan
    from cadenza.integrations.dbt.tasks import dbt_task
    from cadenza.integrations.feast.tasks import feast_historical_features, feast_materialize
    from cadenza.integrations.mlflow import MLflow, register_model
    from cadenza.integrations.notify import Notify
    from cadenza.integrations.pandera import validate
    from cadenza.integrations.spark import spark_task
    from cadenza.triggers.events import EventTrigger
    from cadenza.triggers.sensors import FileSensor, sensor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cadenza' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ += ["EventTrigger", "FileSensor", "MLflow", "Notify", "dbt_task", "feast_historical_features",
            "feast_materialize", "get_run", "get_runs", "register_model", "sensor", "spark_task",
            "validate"]
