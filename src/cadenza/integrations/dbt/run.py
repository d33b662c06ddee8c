"""The worker side of a dbt task: one `dbtRunner` invocation, its results read back.

What belongs here: building dbt's command line from the task's settings, invoking dbt-core in
this process, and turning what dbt reports into the task's output (a summary of every node's
status) or into a DbtFailed naming the failing models and tests. What does not: defining the
task (`tasks.py`) or reading the manifest at definition time (`manifest.py`).

This module runs in the task's own uv environment (dbt's pins clash with Cadenza's, see
`tasks.py`), whose interpreter finds Cadenza after the environment's packages: it imports the
standard library and `cadenza.core`/`cadenza.integrations.errors` only, and dbt inside
`run_dbt`.

Outcomes, by case:
  1. every selected node succeeded (a dbt test may warn) -> {"command", "nodes", "warnings"};
  2. dbt could not connect to the warehouse -> DbtUnavailable (retried when the task has
     retries, by default);
  3. the project did not load or compile, or the profile is wrong -> DbtFailed with dbt's
     own message;
  4. models failed or dbt tests failed -> DbtFailed listing each failing node (a test with
     the number of rows it returned) and how many nodes were skipped after them;
  5. the selection matched no node -> DbtFailed (a typo in `select` would otherwise pass).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from cadenza.integrations.errors import DbtFailed, DbtUnavailable, IntegrationMissing, task_location

# dbt keeps process-wide state (flags, the adapter registry, its event manager): two
# invocations at once in one process (a threads executor running dbt in the driver's
# environment) would share it. They take turns; env workers are one process per call anyway.
_invoke_lock = threading.Lock()

_FAILED = frozenset({"error", "fail", "runtime error"})
_MAX_LISTED = 12


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def command_line(config: Mapping[str, Any], arguments: Mapping[str, Any],
                 scratch: str | None) -> list[str]:
    """dbt's arguments: `build --project-dir ... --select ...` (`scratch`: a folder of this
    attempt for target/ and logs/, so tasks of one project running at once do not share)."""
    command = str(config["command"])
    args = [command, "--project-dir", str(config["project_dir"])]
    if config.get("profiles_dir"):
        args += ["--profiles-dir", str(config["profiles_dir"])]
    if scratch is not None:
        args += ["--target-path", os.path.join(scratch, "target"),
                 "--log-path", os.path.join(scratch, "logs")]
    if arguments.get("target"):
        args += ["--target", str(arguments["target"])]
    if command != "parse":
        select = _words(arguments.get("select"))
        if select:
            args += ["--select", *select]
        if config.get("node"):  # expand_models: the tests whose parents are built by now
            args += ["--indirect-selection", "buildable"]
        exclude = _words(arguments.get("exclude"))
        if exclude:
            args += ["--exclude", *exclude]
    variables = arguments.get("vars")
    if variables:
        args += ["--vars", json.dumps(variables, sort_keys=True, default=str)]
    if arguments.get("full_refresh") and command in ("build", "run", "seed"):
        args.append("--full-refresh")
    # No usage statistics or version check over the network; plain text in the task log.
    args += ["--no-send-anonymous-usage-stats", "--no-version-check", "--no-use-colors"]
    return args


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line.rstrip() for line in str(text).strip().splitlines() if line.strip()]
    more = f" ... ({len(lines) - n} more lines in the task log)" if len(lines) > n else ""
    return "\n  ".join(lines[:n]) + more


def _status(result: Any) -> str:
    status = getattr(result, "status", "")
    return str(getattr(status, "value", status))


def _describe_failure(result: Any) -> str:
    node = result.node
    kind = str(getattr(node.resource_type, "value", node.resource_type))
    name = getattr(node, "name", node.unique_id)
    status = _status(result)
    if kind == "test" and status == "fail":
        rows = getattr(result, "failures", None)
        count = f"{rows} failing row{'s' if rows != 1 else ''}" if rows is not None else "failed"
        return f"test {name} failed ({count})"
    message = _first_lines(getattr(result, "message", "") or "", 3) or status
    return f"{kind} {name}: {status}: {message}"


def _is_connection_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return "FailedToConnectError" in names


def summarise(command: str, results: Any, project_dir: str,
              selected: list[str]) -> dict[str, Any]:
    """The task's output from dbt's results, or DbtFailed (cases 4 and 5)."""
    pipeline, task = task_location()
    nodes: dict[str, str] = {}
    failed: list[str] = []
    warnings: list[str] = []
    failed_names: list[str] = []
    skipped = 0
    for result in results:
        status = _status(result)
        nodes[result.node.unique_id] = status
        if status in _FAILED:
            failed.append(_describe_failure(result))
            failed_names.append(str(getattr(result.node, "name", result.node.unique_id)))
        elif status == "skipped":
            skipped += 1
        elif status == "warn":
            warnings.append(f"{result.node.name}: {_first_lines(result.message or '', 1)}")
    if failed:
        listed = failed[:_MAX_LISTED]
        if len(failed) > _MAX_LISTED:
            listed.append(f"... and {len(failed) - _MAX_LISTED} more")
        after = f"; {skipped} node{'s' if skipped != 1 else ''} skipped after them" if skipped else ""
        raise DbtFailed(
            f"dbt {command} failed: {len(failed)} of {len(nodes)} nodes failed{after}:\n  "
            + "\n  ".join(listed),
            pipeline=pipeline, task=task,
            hint=(f"see the failing rows with `dbt {command} --select {' '.join(failed_names[:5])}"
                  f" --project-dir {project_dir}` (the task log has dbt's full output); fix the "
                  "data or the SQL, then `cadenza resume` the run"))
    if not nodes and command not in ("parse", "compile", "deps", "debug"):
        what = f"select={' '.join(selected)!r}" if selected else "the project"
        raise DbtFailed(
            f"dbt {command} ran nothing: {what} matches no enabled node", pipeline=pipeline,
            task=task, hint="check the model names in select= (`dbt ls --select ...` lists "
            "what a selection matches)")
    return {"command": command, "nodes": nodes, "warnings": warnings}


def run_dbt(config: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Invoke dbt once for a task (see the module docstring for the outcomes)."""
    pipeline, task = task_location()
    try:
        from dbt.cli.main import dbtRunner
    except ImportError as exc:
        raise IntegrationMissing(
            f"dbt-core is not installed in this task's environment ({exc})",
            pipeline=pipeline, task=task,
            hint="leave dbt_task's requirements= unset (dbt runs in its own environment), or "
            "install dbt-core and your adapter (pip install dbt-core dbt-postgres) where the "
            "task runs") from exc
    command = str(config["command"])
    project_dir = str(config["project_dir"])
    with tempfile.TemporaryDirectory(prefix="cadenza-dbt-") as scratch:
        args = command_line(config, arguments, scratch if config.get("isolate") else None)
        print(f"[cadenza] dbt {' '.join(args)}", flush=True)
        with _invoke_lock:
            outcome = dbtRunner().invoke(args)
    if outcome.exception is not None:
        error = outcome.exception
        text = _first_lines(str(error)) or type(error).__name__
        if _is_connection_error(error):
            raise DbtUnavailable(
                f"dbt could not connect to the warehouse: {text}", pipeline=pipeline, task=task,
                hint="check that the database is up and that the profile's host, port and "
                "credentials are right (profiles.yml); the task is retried if it has retries"
            ) from None
        raise DbtFailed(
            f"dbt {command} could not run: {type(error).__name__}: {text}", pipeline=pipeline,
            task=task, hint=f"run `dbt {command} --project-dir {project_dir}` to see the "
            "problem; fix the project, profile or selection") from None
    result = outcome.result
    if command == "parse":
        return {"command": command, "nodes": {}, "warnings": []}
    results = getattr(result, "results", None)
    if results is None:
        if not outcome.success:
            raise DbtFailed(f"dbt {command} failed", pipeline=pipeline, task=task,
                            hint="the task log has dbt's output")
        return {"command": command, "nodes": {}, "warnings": []}
    return summarise(command, results, project_dir, _words(arguments.get("select")))
