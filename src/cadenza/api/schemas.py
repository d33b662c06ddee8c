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


class RerunOut(BaseModel):
    """A retried or resumed run, queued again: a scheduler drives it and reruns `tasks`."""

    run: RunOut
    tasks: list[str] = Field(description="The task ids that run again.")


class CancelOut(BaseModel):
    """`outcome`: cancelled (it has ended cancelled) or requested (its driver stops it at
    its next heartbeat; the run then ends cancelled)."""

    run: RunOut
    outcome: str


# -- task instances, artifacts, lineage (routes/task_instances.py) --------------------------------


class ErrorDetailOut(BaseModel):
    """A failure with its traceback (Cadenza's own frames trimmed)."""

    kind: str = Field(description="exception, timeout, cancelled, worker_lost, interrupted, "
                      "serialization, input, artifact_write, resources, branch or unknown.")
    type: str = Field(description="The exception's qualified class name.")
    message: str
    traceback: str = ""


class ValueRefOut(BaseModel):
    """Where a value is: inline JSON (`value`) or an artifact (`sha256`, `uri`, ...)."""

    kind: str = Field(description="json (the value is inline) or artifact.")
    value: Any = None
    sha256: str | None = None
    uri: str | None = None
    serializer: str | None = None
    size_bytes: int | None = None
    type_name: str | None = None


class AttemptOut(BaseModel):
    attempt: int = Field(description="Numbered from 1.")
    state: TaskState
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    worker: str | None = None
    error: ErrorDetailOut | None = None
    has_log: bool = Field(description="A log file exists for it.")
    live: bool = Field(False, description="Running now: its log is still growing.")


class RunAttemptOut(AttemptOut):
    """An ended attempt of some task instance of a run."""

    task_id: str
    map_index: int = -1


class InputOut(BaseModel):
    """One input of a task instance (see `source`)."""

    name: str = Field(description="The task's parameter name.")
    index: int = Field(description="Position among the inputs under this name (a structure "
                       "may hold several upstream outputs); pass it to the preview.")
    source: str = Field(description="task (an upstream output), param (a pipeline parameter) "
                        "or literal (a value written in the pipeline).")
    task_id: str | None = None
    map_index: int = -1
    param: str | None = None
    element: int | None = Field(None, description="For a mapped instance: the index of the "
                                "element of the upstream list or parameter it received.")
    ref: ValueRefOut | None = Field(None, description="Null when the upstream has no output.")


class TaskInstanceDetailOut(BaseModel):
    run_id: str
    pipeline: str
    task_id: str
    map_index: int = -1
    state: TaskState
    attempt: int = Field(description="Attempts started so far.")
    pool: str
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    next_retry_at: datetime | None = None
    reason: str = ""
    worker: str | None = None
    map_count: int | None = Field(None, description="For a mapped task's summary (map index "
                                  "-1): how many instances it expanded to.")
    cache_key: str | None = None
    cache_origin: dict[str, Any] | None = Field(
        None, description="For a cached instance: the run and task instance it reused.")
    error: ErrorDetailOut | None = None
    output: ValueRefOut | None = None
    inputs: list[InputOut] = Field(
        description="From the pipeline's code when the server has loaded it; otherwise the "
        "input artifacts the lineage recorded (named 'input N').")
    inputs_from: str = Field(description="plan, lineage or none: where `inputs` came from.")
    attempts: list[AttemptOut] = Field(description="Every attempt, in order (the running one "
                                       "last, with live=true).")


class ColumnOut(BaseModel):
    name: str
    dtype: str


class PreviewOut(BaseModel):
    """A bounded look at a value (never the whole of a large one).

    kind: json (`value`, or `text` for a JSON artifact too large to parse), dataframe or
    table (`columns`, `rows` as records, `shape`), array (`shape`, `dtype`, first `values`
    in storage order), opaque (a pickled or custom-serialized value: only its type and size;
    the server never unpickles), missing (the artifact is gone from the artifact store).
    """

    kind: str
    type_name: str | None = None
    serializer: str | None = None
    size_bytes: int | None = None
    truncated: bool = False
    value: Any = None
    text: str | None = None
    columns: list[ColumnOut] = []
    rows: list[dict[str, Any]] = []
    shape: list[int] | None = None
    dtype: str | None = None
    values: list[Any] = []
    note: str = ""


class LogChunkOut(BaseModel):
    """Bytes [offset, next_offset) of an attempt's log as UTF-8 text. Ask again from
    `next_offset` for more; `complete` once the attempt has ended and all was read."""

    run_id: str
    task_id: str
    map_index: int
    attempt: int
    offset: int
    next_offset: int
    size: int = Field(description="The log's size in bytes when it was read.")
    text: str
    live: bool = Field(description="The attempt is running: the log may still grow.")
    complete: bool


class ArtifactOut(BaseModel):
    """An artifact and the task instance that first produced it."""

    sha256: str
    uri: str
    size_bytes: int | None = None
    serializer: str | None = None
    type_name: str | None = None
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    code_fingerprint: str | None = None
    input_sha256s: list[str] = []
    created_at: datetime | None = None


class LineageNodeOut(BaseModel):
    """An artifact in a lineage tree: what it was computed from (`upstream`) and what was
    computed from it (`downstream`). `repeated`: shown elsewhere in the tree already;
    `truncated`: more lineage beyond the requested depth."""

    sha256: str | None
    artifact: ArtifactOut | None = Field(None, description="Null when the SHA-256 has no "
                                         "lineage record.")
    upstream: list[LineageNodeOut] = []
    downstream: list[LineageNodeOut] = []
    repeated: bool = False
    truncated: bool = False


# -- assets ---------------------------------------------------------------------------------------


class AssetOut(BaseModel):
    name: str
    latest_version: int
    versions: int = Field(description="How many versions it has.")
    updated_at: datetime | None = Field(None, description="When its newest version was made.")


class AssetVersionOut(BaseModel):
    """A version of an asset: made by a successful task instance with the asset in its
    outlets."""

    asset: str
    version: int
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    artifact_sha256: str | None = Field(None, description="Null when the producing task's "
                                        "output was stored inline (small JSON).")
    created_at: datetime | None = None


class AssetRunOut(BaseModel):
    """A run an asset version triggered."""

    run_id: str
    pipeline: str
    state: RunState
    created_at: datetime


class AssetLineageOut(BaseModel):
    """Both ways from one asset version: what produced it (the task instance, and the
    artifacts its output was computed from) and what consumed it (artifacts computed from it,
    and the first page of runs it triggered)."""

    version: AssetVersionOut
    produced_by: LineageNodeOut | None = Field(
        None, description="The version's artifact with its upstream lineage (null when the "
        "output was stored inline).")
    consumed_by: list[LineageNodeOut] = Field(
        [], description="Artifacts computed from it, with their downstream lineage.")
    triggered_runs: Page[AssetRunOut]


# -- pools, events, SLA misses --------------------------------------------------------------------


class PoolOut(BaseModel):
    name: str
    slots: int = Field(description="How many task instances of the pool may run at once (0 "
                       "pauses the pool).")
    description: str = ""


class PoolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slots: int = Field(ge=0, le=1_000_000, description="0 or more; 0 pauses the pool.")
    description: str = Field("", max_length=2000)


class TriggerEventOut(BaseModel):
    """A message an event trigger processed: the run it created, or why it created none."""

    id: int
    pipeline: str
    source: str
    message_id: str
    status: str = Field(description="run (a run was created) or invalid (see error).")
    run_id: str | None = None
    error: str | None = None
    payload: dict[str, Any] | None = None
    received_at: datetime | None = None


class SlaMissOut(BaseModel):
    run_id: str
    pipeline: str
    sla_s: float
    deadline_at: datetime
    detected_at: datetime


# --- users, tokens, secrets, audit (admin; api/routes/users.py, tokens.py, secrets.py, audit.py)


class MeOut(BaseModel):
    """Who the caller is (the anonymous admin while auth is not configured)."""

    name: str
    role: str = Field(description="viewer, operator or admin")
    anonymous: bool
    token_id: str | None = None


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    role: str = Field(pattern=r"^(viewer|operator|admin)$")
    password: str | None = Field(default=None, min_length=1, max_length=1000,
                                 description="Left out: a token-only user.")


class UserPatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str | None = Field(default=None, pattern=r"^(viewer|operator|admin)$")
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=1, max_length=1000)


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    has_password: bool
    created_at: datetime


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64)
    expires_in_s: int | None = Field(default=None, ge=1, le=10 * 365 * 86400,
                                     description="Lifetime in seconds (left out: never "
                                     "expires).")


class TokenOut(BaseModel):
    """An API token, never its value."""

    id: str
    user: str
    status: str = Field(description="active, expired or revoked")
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The token: shown this once, only its SHA-256 is kept.")


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=65536)


class SecretOut(BaseModel):
    """A secret's name; its value is never sent back."""

    name: str
    updated_at: datetime


class AuditOut(BaseModel):
    id: int
    at: datetime
    who: str
    method: str
    path: str
    status: int
    detail: str | None = None


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1000)
    expires_in_s: int = Field(default=12 * 3600, ge=60, le=30 * 86400,
                              description="The token's lifetime in seconds (default 12 h).")


# -- grid (api/routes/grid.py) -------------------------------------------------------------------


class GridOut(BaseModel):
    """A pipeline's runs x tasks (the grid view): `runs` newest first, `tasks` in graph
    order, and per run one string of one character per task: `codes[k]` is the state whose
    code is the k-th letter `a`, `b`, ... (`.`: the run has no such task). Compact on
    purpose: 1,000 runs x 200 tasks is 200 kB, not megabytes of JSON."""

    tasks: list[str]
    runs: list[RunBriefOut]
    codes: list[TaskState] = Field(description="cells' letters a, b, c, ... in this order.")
    cells: list[str] = Field(description="One string per run (as `runs`), one letter per "
                             "task (as `tasks`).")
    next_cursor: str | None = None
