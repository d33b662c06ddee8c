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

Modules: `tracker.py` (MLflow), `registry.py` (register_model, load_model), `connect.py`
(URIs, clients, the per-attempt sink).
"""

from cadenza.integrations.mlflow.registry import load_model, register_model
from cadenza.integrations.mlflow.tracker import MLflow

__all__ = ["MLflow", "load_model", "register_model"]
