"""The API's pydantic models: `*In` is what a client sends, `*Out` what it gets back.

Never a store row or a core record: routes build these from records, so the store can
change its tables without changing the API (STYLE §3). Every list is a `Page[T]`:
`{"items": [...], "next_cursor": "..." | null}` (see `pagination.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cadenza.core.states import RunState, TaskState

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` as `cursor` for the next (null: the last)."""

    items: list[T]
    next_cursor: str | None = None


class ErrorOut(BaseModel):
    """An error with what went wrong (`detail`) and how to fix it (`hint`)."""

    detail: str
    hint: str | None = None
    type: str = ""
    pipeline: str | None = None
    task: str | None = None


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    store: str = Field(description="The metadata store's URL, password masked.")


# -- pipelines ------------------------------------------------------------------------------------


class RunBriefOut(BaseModel):
    run_id: str
    state: RunState
    created_at: datetime
    logical_date: datetime | None = None


class PipelineOut(BaseModel):
    name: str
    description: str = ""
    tags: list[str] = []
    file: str | None = Field(None, description="The file that defines it.")
    schedule: str | None = None
    timezone: str = "UTC"
    triggers: list[str] = []
    paused: bool = False
    next_run_at: datetime | None = Field(
        None, description="When the scheduler creates its next scheduled run (null: not "
        "time-scheduled, paused, past its end_date, or the server runs without a scheduler's "
        "timetable).")
    task_count: int
    last_runs: list[RunBriefOut] = Field(description="Its newest runs, newest first.")


class ImportErrorOut(BaseModel):
    """A pipeline file that failed to import (the project's other files still load)."""

    file: str
    error: str
    detail: str | None = None


class PipelinePage(Page[PipelineOut]):
    import_errors: list[ImportErrorOut] = []


class TaskNodeOut(BaseModel):
    id: str
    task: str
    function: str
    mapped: bool = Field(description="Expanded over lists at run time (one instance per "
                         "element).")
    mapped_args: list[str] = []
    upstream: list[str] = []
    is_branch: bool = False
    options: dict[str, Any] = {}


class EdgeOut(BaseModel):
    upstream: str
    downstream: str
    kind: str = Field(description="data: reads the upstream's output; order: `a >> b`.")
    args: list[str] = []


class ParameterOut(BaseModel):
    name: str
    type: str
    required: bool
    default: Any = None


class PipelineDetailOut(PipelineOut):
    source: str = ""
    start_date: str | None = None
    end_date: str | None = None
    catchup: bool = False
    max_active_runs: int | None = None
    sla_s: float | None = None
    parameters: list[ParameterOut] = []
    params_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON schema of the run parameters (for a form).")
    nodes: list[TaskNodeOut] = []
    edges: list[EdgeOut] = []


# -- runs -----------------------------------------------------------------------------------------


class RunOut(BaseModel):
    run_id: str
    pipeline: str
    state: RunState
    trigger: str
    params: dict[str, Any] = {}
    tags: list[str] = []
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    executor: str = ""
    error: str | None = None
    cancel_requested_at: datetime | None = None


class TaskErrorOut(BaseModel):
    kind: str
    type: str
    message: str


class MapSummaryOut(BaseModel):
    """A mapped task's instances: how many, and how many in each state."""

    count: int
    states: dict[str, int] = {}


class TaskInstanceOut(BaseModel):
    task_id: str
    map_index: int = -1
    state: TaskState
    attempts: int = Field(description="Attempts started so far.")
    pool: str = "default"
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    next_retry_at: datetime | None = None
    cache_origin: dict[str, Any] | None = Field(
        None, description="For a cached instance: the run and task instance it reused.")
    error: TaskErrorOut | None = None
    reason: str = ""
    worker: str | None = None
    map_summary: MapSummaryOut | None = None


class RunDetailOut(RunOut):
    task_instances: list[TaskInstanceOut] = Field(
        description="One per task (mapped tasks by their summary, with `map_summary`), in "
        "graph order.")


class TriggerIn(BaseModel):
    """A run to create: parameters as JSON (validated against the pipeline's)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = {}
    logical_date: datetime | None = None
    tags: list[str] = []


class RetryIn(BaseModel):
    """Which failed task instances to run again: `task_id` (with `downstream`, its
    downstream tasks too), or, without `task_id`, every failed one."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = None
    downstream: bool = False


class RetryOut(BaseModel):
    run: RunOut
    cleared: list[str] = Field(description="Task ids reset to run again.")
