"""`MLflow`, the `core.tracking.Tracker` a pipeline names with
`@pipeline(tracking=MLflow(experiment="fraud"))`: one MLflow run per Cadenza run, one nested
run per task attempt (how, in the package docstring).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cadenza.core.errors import ConfigError, TaskInterrupt
from cadenza.core.states import RunState
from cadenza.integrations.errors import TrackingUnavailable
from cadenza.integrations.mlflow.connect import (
    TaskSink,
    client_for,
    default_tracking_uri,
    enter_uris,
    fix_hint,
    is_http,
    leave_uris,
    mlflow_module,
    param_text,
    sqlite_path,
)

log = logging.getLogger(__name__)

_STATUS: dict[str, str] = {RunState.SUCCESS: "FINISHED", RunState.FAILED: "FAILED",
                           RunState.CANCELLED: "KILLED"}


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
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()

    @staticmethod
    def _artifact_location(uri: str, experiment: str) -> str | None:
        # A SQLite store keeps artifacts beside it; MLflow's default would be ./mlruns in
        # whatever folder the run happened to start from. A server decides for itself.
        path = sqlite_path(uri)
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
            client = client_for(uri, self.timeout_s, strict=self.fail_on_error)
            experiment_id = self._experiment_id(client, uri)
            run_tags = {"cadenza.run_id": run_id, "cadenza.pipeline": pipeline}
            if tags:
                run_tags["cadenza.tags"] = ",".join(tags)
            run = client.create_run(experiment_id, run_name=run_id, tags=run_tags)
            if params:
                from mlflow.entities import Param

                client.log_batch(run.info.run_id, params=[
                    Param(str(k), param_text(v)) for k, v in sorted(params.items())])
        except TrackingUnavailable:
            raise
        except Exception as exc:
            raise TrackingUnavailable(
                f"MLflow at {uri} could not open a run in experiment '{self.experiment}': "
                f"{type(exc).__name__}: {exc}", pipeline=pipeline,
                hint=fix_hint(uri, strict=self.fail_on_error)) from exc
        info: dict[str, Any] = {
            "tracker": "mlflow",
            "tracking_uri": uri,
            "experiment": self.experiment,
            "experiment_id": experiment_id,
            "mlflow_run_id": run.info.run_id,
        }
        if is_http(uri):
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
            client = client_for(uri, self.timeout_s, strict=self.fail_on_error)
            client.set_terminated(mlflow_run_id, status=status)
        except TrackingUnavailable:
            raise
        except Exception as exc:
            raise TrackingUnavailable(
                f"MLflow at {uri} could not close run {mlflow_run_id}: {type(exc).__name__}: "
                f"{exc}", hint=fix_hint(uri, strict=self.fail_on_error)) from exc

    @contextmanager
    def task_scope(self, ctx: Any, info: dict[str, Any]) -> Iterator[TaskSink | None]:
        """Around one task attempt, in the worker: a nested run, active for MLflow's fluent
        API in this thread, ended FINISHED / FAILED / KILLED with the attempt."""
        uri = info.get("tracking_uri")
        parent = info.get("mlflow_run_id")
        experiment_id = info.get("experiment_id")
        if not (uri and parent and experiment_id):
            yield None
            return
        mlflow = mlflow_module()
        client = client_for(uri, self.timeout_s, strict=self.fail_on_error)
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
                                      hint=fix_hint(uri, strict=self.fail_on_error)) from exc
        nested = run.info.run_id
        sink = TaskSink(client=client, uri=uri, run_id=nested, experiment_id=experiment_id,
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
    enter_uris(mlflow, uri)
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
        leave_uris(mlflow)
