"""Reaching MLflow from a process: importing it, the tracking URI, probing a server, one
client per URI, the process's fluent-API URIs while tracked tasks run, and the sink a task
attempt's metrics and params go to. Shared by the tracker (`tracker.py`) and the model
registry helpers (`registry.py`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from cadenza.integrations.errors import TrackingUnavailable

log = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def mlflow_module() -> Any:
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


def default_tracking_uri() -> str:
    from cadenza.core.settings import get_settings

    db = get_settings().home / "mlflow" / "mlflow.db"
    return f"sqlite:///{db}"


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(raw) if raw and raw != ":memory:" else None


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def fix_hint(uri: str, *, strict: bool = False) -> str:
    then = ("this tracker has fail_on_error=True, so the run stops instead of running "
            "untracked" if strict else "tasks run untracked meanwhile; "
            "MLflow(..., fail_on_error=True) fails the run instead")
    if is_http(uri):
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
    if not is_http(uri):
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
            hint=fix_hint(uri, strict=strict)
        ) from exc


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def client_for(uri: str, timeout_s: float, *, strict: bool = False) -> Any:
    """One MlflowClient per URI and process (a SQLite store opens its engine once)."""
    _probe(uri, timeout_s, strict=strict)
    with _clients_lock:
        client = _clients.get(uri)
        if client is None:
            mlflow = mlflow_module()
            path = sqlite_path(uri)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    log.info("creating the MLflow store %s (first run only, takes a few "
                             "seconds)", path)
            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            _clients[uri] = client
        return client


def param_text(value: Any) -> str:
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


def enter_uris(mlflow: Any, uri: str) -> None:
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


def leave_uris(mlflow: Any) -> None:
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


class TaskSink:
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
                                      hint=fix_hint(self.uri, strict=True)) from exc
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
            self.client.log_param(self.run_id, name, param_text(value))
        except Exception as exc:  # noqa: BLE001 - e.g. a param logged twice with new values
            self._failed(f"log param '{name}'", exc)
