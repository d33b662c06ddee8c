"""Inside a Ray worker: the actor that runs Cadenza calls, and the artifact-store probe.

What belongs here: code that runs in Ray's worker processes (imported there by reference, so
Cadenza must be installed on every node, as Ray itself is). An actor loads each function
once (cloudpickle bytes sent the first time the driver routes that function to it), runs the
call through the one user-code boundary, `executors/worker.py` (which writes outputs to the
artifact store), and returns the outcome as the processes executor's flat tuple, with the
attempt's log: the worker writes it at the driver's path on this node's disk, which is not
the driver's disk when this node is another machine, so its bytes travel back with the
outcome and the driver writes them where `cadenza logs` reads them (`pool.py`). What does
not: choosing actors, timeouts, kills (`pool.py`, in the driver).
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from typing import Any

# An attempt's log travels back with its outcome up to this size (the end of it, beyond).
LOG_SHIP_BYTES = 16 * 1024 * 1024

from cadenza.core.records import ErrorKind
from cadenza.executors.base import TaskCall
from cadenza.executors.processes.main_module import adopt_main_names
from cadenza.executors.processes.wire import (
    CALL_FIELDS,
    HOSTNAME,
    call_label,
    encode_outcome,
    error_info,
)


def read_probe(artifact_root: str, path: str, token: str, env: dict[str, str]) -> str | None:
    """On one node: None if the probe file the driver wrote reads back, else why not.
    `env`: the driver's forwarded variables (object-store endpoint and credentials)."""
    os.environ.update(env)
    try:
        import fsspec

        fs, _ = fsspec.core.url_to_fs(artifact_root)
        found = fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001 - reported to the driver as text
        return f"{type(exc).__name__}: {exc}"
    if found != token.encode():
        return f"{path} holds something else there (another folder under the same path?)"
    return None


def node_env_lock(requirements: tuple[str, ...], python: str | None, build: bool,
                  env: dict[str, str]) -> tuple[str, str | None, str | None]:
    """On one node: the resolved lock of the env of this requirement set in the node's env
    cache (built there first when `build`): ("ok", lock or None, None), or ("error", uv's
    message, the fix). `env`: the driver's forwarded variables (CADENZA_HOME: where envs are
    kept)."""
    from cadenza.core.settings import set_settings
    from cadenza.executors.envs import EnvBuildError, env_lock

    os.environ.update(env)
    set_settings(None)
    try:
        return ("ok", env_lock(requirements, python, build=build), None)
    except EnvBuildError as exc:
        return ("error", exc.message, exc.hint)


class CadenzaActor:
    """One persistent worker on a node of the cluster, holding the resources of its shape."""

    def __init__(self) -> None:
        self._fns: dict[str, Callable[..., Any]] = {}
        self._env: dict[str, str] = {}
        import ray

        node = ray.get_runtime_context().get_node_id()
        self.name = f"ray:{node[:8]}/pid:{os.getpid()}@{HOSTNAME}"
        self.node_id = node

    def ready(self) -> tuple[str, str, int]:
        """(worker name, node id, pid) once the actor is up."""
        return self.name, self.node_id, os.getpid()

    def _apply(self, sys_path: list[str] | None, env: dict[str, str] | None) -> None:
        if sys_path is not None:
            # The driver's import path, after ours: functions pickled by reference import
            # here from the same folders (on a shared checkout, or a local cluster).
            for entry in sys_path:
                if entry not in sys.path:
                    sys.path.append(entry)
        if env is not None:
            for key in [k for k in self._env if k not in env]:
                os.environ.pop(key, None)
            os.environ.update(env)
            self._env = dict(env)
            # Settings read from the environment (CADENZA_HOME: where envs are kept) are
            # read again: this actor may serve the next run of another project.
            from cadenza.core.settings import set_settings

            set_settings(None)

    def run(self, key: str, fn_blob: bytes | None, payload: bytes,
            sys_path: list[str] | None, env: dict[str, str] | None) -> tuple[Any, ...]:
        """Run one call: ("ok", encoded outcome, the attempt's log bytes or None) or
        ("fail", ErrorInfo)."""
        from cadenza.executors import worker

        self._apply(sys_path, env)
        try:
            msg = pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
            return ("fail", error_info(
                exc, ErrorKind.SERIALIZATION,
                f"the inputs of the task could not be unpickled in the Ray worker: {exc}. "
                "Fix: pass only values whose classes are importable on every node"))
        fields = dict(zip(CALL_FIELDS, msg[2]))
        label = call_label(fields)
        fn = self._fns.get(key)
        if fn is None:
            if fn_blob is None:
                return ("fail", error_info(
                    RuntimeError(key), ErrorKind.SERIALIZATION,
                    f"the function of task '{label}' was not loaded in this Ray worker "
                    "(a Cadenza bug)"))
            try:
                fn = pickle.loads(fn_blob)
            except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
                return ("fail", error_info(
                    exc, ErrorKind.SERIALIZATION,
                    f"the function of task '{label}' could not be loaded in the Ray worker "
                    f"{self.name}: {type(exc).__name__}: {exc}. Fix: install the module that "
                    "defines it on every node (or ship it with the cluster's runtime_env "
                    "py_modules), or define the task in the script you run"))
            if getattr(fn, "__module__", None) == "__main__":
                adopt_main_names(fn)
            self._fns[key] = fn
        call = TaskCall(fn=fn, **fields)
        try:
            if call.isolated:
                # Its own environment: built (or found) in this node's env cache and run on
                # a kept env worker process, a child of this actor (killed with it).
                from cadenza.executors.envs import run_isolated

                outcome = run_isolated(call)
            else:
                outcome = worker.execute(call, enforce_timeout=False, worker=self.name)
        except BaseException as exc:  # noqa: BLE001 - e.g. sys.exit() in the task
            return ("fail", error_info(
                exc, ErrorKind.EXCEPTION,
                f"task '{label}' ended the Ray worker's call with {type(exc).__name__}: {exc}"))
        return ("ok", encode_outcome(outcome), _log_bytes(outcome.log_path))


def _log_bytes(path: str | None) -> bytes | None:
    """The attempt's log as written on this node (its last LOG_SHIP_BYTES), or None."""
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size <= LOG_SHIP_BYTES:
                fh.seek(0)
                return fh.read()
            fh.seek(size - LOG_SHIP_BYTES)
            return (f"[cadenza] the first {size - LOG_SHIP_BYTES} bytes of this log stayed on "
                    f"the Ray node that ran the task\n").encode() + fh.read()
    except OSError:
        return None
