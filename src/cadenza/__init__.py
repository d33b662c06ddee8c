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

from cadenza.artifacts.serializers import register_serializer
from cadenza.authoring.assets import AnyOf, Asset
from cadenza.authoring.pipeline import PipelineDef, pipeline
from cadenza.authoring.task import TaskDef, task
from cadenza.core.context import TaskContext, get_context
from cadenza.core.errors import (
    CadenzaDefinitionError,
    CadenzaError,
    ConfigError,
    DefinitionError,
    ParameterError,
    RunNotFound,
    StoreError,
    TaskFailed,
    WorkerLost,
)
from cadenza.core.states import RunState, TaskState

__version__ = "0.1.0"

__all__ = [
    "AnyOf",
    "Asset",
    "CadenzaDefinitionError",
    "CadenzaError",
    "ConfigError",
    "DefinitionError",
    "ParameterError",
    "PipelineDef",
    "RunNotFound",
    "RunState",
    "StoreError",
    "TaskContext",
    "TaskDef",
    "TaskFailed",
    "TaskState",
    "WorkerLost",
    "get_context",
    "pipeline",
    "register_serializer",
    "task",
]
