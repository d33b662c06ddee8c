"""`cadenza task-run` (one step of a compiled Kubeflow pipeline) and `cadenza runs import`.

What belongs here: reading the step's arguments as KFP renders them, writing the output
files KFP collects, and the exit code. What does not: running or recording the step
(engine/task_run.py, engine/step_records.py).

Exit codes of task-run: 0 the instance succeeded or its trigger rule skipped it; 1 it
failed (KFP retries the step when retries are left); 2 a usage or configuration error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cadenza.cli.console import escape, out


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    from cadenza.core.errors import UsageError

    result: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE",
                             hint=f"{option} name=value")
        result[name] = value
    return result


def _write(path: str | None, text: str) -> None:
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def task_run_command(
    pipeline: Annotated[str, typer.Option(
        "--pipeline", metavar="FILE:PIPELINE", help="The pipeline, as the image has it.")],
    run_id: Annotated[str, typer.Option(
        "--run-id", help="The run every step of one KFP run shares (its job uuid).")],
    task: Annotated[str | None, typer.Option("--task", help="The task id.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", metavar="NAME=VALUE", help="A pipeline parameter (JSON unless a str).")
    ] = None,
    input_: Annotated[list[str] | None, typer.Option(
        "--input", metavar="UPSTREAM=REF", help="The ref output of an upstream task's step.")
    ] = None,
    map_index: Annotated[int, typer.Option(
        "--map-index", help="Which instance of a mapped task.")] = -1,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds an attempt may take (default: the task's timeout).")] = None,
    fingerprint: Annotated[str | None, typer.Option(
        "--fingerprint", help="The code fingerprint the pipeline was compiled with (part "
        "of KFP's cache key).")] = None,
    output_ref: Annotated[str | None, typer.Option(
        "--output-ref", help="File to write the output reference to (KFP output).")] = None,
    output_branch: Annotated[str | None, typer.Option(
        "--output-branch", help="File to write a branch task's choice to.")] = None,
    expand: Annotated[bool, typer.Option(
        "--expand", help="Compute the mapped task's instances (its -map step).")] = False,
    output_indices: Annotated[str | None, typer.Option(
        "--output-indices", help="File to write the map indices to (with --expand).")] = None,
    finalize: Annotated[bool, typer.Option(
        "--finalize", help="Close the run (the ExitHandler's step).")] = False,
    status: Annotated[str | None, typer.Option(
        "--status", help="KFP's final status of the pipeline's body (with --finalize).")
    ] = None,
    executor: Annotated[str, typer.Option(
        "--executor", help="inline (default) or processes (always used with a timeout).")
    ] = "inline",
) -> None:
    """Run one task instance as a step of a compiled Kubeflow pipeline.

    Inputs are the references the upstream steps output (values stay in the artifact
    store, which must be s3:// or gs://); the output goes to the artifact store and the
    task instance to the metadata store when CADENZA_DATABASE_URL answers, else to records
    in the artifact store (`cadenza runs import RUN_ID` loads them).
    """
    import json

    from cadenza.cli.discovery import resolve_pipeline
    from cadenza.core.errors import UsageError
    from cadenza.core.settings import get_settings
    from cadenza.engine.step_records import open_book
    from cadenza.engine.task_run import (
        check_cluster_root,
        expand_indices,
        finalize_run,
        run_step,
    )

    settings = get_settings()
    plan = resolve_pipeline(pipeline, settings)
    check_cluster_root(settings, plan.name)
    if fingerprint and task is not None:
        _check_fingerprint(plan, task, fingerprint)
    if finalize:
        run = finalize_run(plan, run_id, book=open_book(settings),
                           body_ok=_succeeded(status))
        out().print(f"run {escape(run_id)} of {escape(plan.name)}: {run.state}")
        raise typer.Exit(0)
    if task is None:
        raise UsageError("say which task the step runs", pipeline=plan.name,
                         hint="cadenza task-run --pipeline FILE:PIPELINE --task TASK "
                         "--run-id RUN_ID")
    params, inputs = _pairs(param, "--param"), _pairs(input_, "--input")
    if expand:
        indices = expand_indices(plan, task, params=params, inputs=inputs, settings=settings,
                                 run_id=run_id, book=open_book(settings))
        _write(output_indices, json.dumps(indices))
        out().print(f"task {escape(task)}: {len(indices)} instances")
        raise typer.Exit(0)
    outcome = run_step(plan, task, run_id=run_id, settings=settings, book=open_book(settings),
                       params=params, inputs=inputs, map_index=map_index, timeout_s=timeout,
                       executor=executor)
    _write(output_ref, outcome.ref)
    if outcome.branch is not None:
        _write(output_branch, outcome.branch)
    label = task if map_index < 0 else f"{task}[{map_index}]"
    out().print(f"task {escape(label)} of run {escape(run_id)}: {outcome.state}")
    raise typer.Exit(outcome.exit_code)


def _check_fingerprint(plan: object, task: str, compiled: str) -> None:
    """KFP keys its cache on the fingerprint the pipeline was compiled with: say so when the
    image holds other code (the cache would serve results of the compiled code)."""
    import logging

    from cadenza.cli.compile import fingerprints_of

    here = fingerprints_of(plan).get(task)
    if here is not None and here != compiled:
        logging.getLogger("cadenza.cli.task_run").warning(
            "task '%s': the image's code differs from the code the pipeline was compiled "
            "from (fingerprint %s, compiled %s); KFP's cache keys on the compiled one: "
            "compile the pipeline again from this image's sources", task, here, compiled)


def _succeeded(status: str | None) -> bool | None:
    """KFP's PipelineTaskFinalStatus JSON -> did the body succeed (None: not told)."""
    import json

    if not status:
        return None
    try:
        state = json.loads(status).get("state")
    except (ValueError, AttributeError):
        return None
    return str(state).upper() == "SUCCEEDED" if state else None


def runs_import_command(
    run_id: Annotated[str, typer.Argument(help="The run id the steps were given.")],
    artifact_root: Annotated[str | None, typer.Option(
        "--artifact-root", help="Where the steps wrote (default: the configured root).")
    ] = None,
) -> None:
    """Load a compiled pipeline's run, recorded by its steps in the artifact store, into
    the metadata store (run again to update it)."""
    from cadenza.core.settings import get_settings
    from cadenza.engine.step_records import import_run
    from cadenza.store import open_store

    settings = get_settings()
    root = artifact_root or settings.artifact_root
    run, count = import_run(run_id, artifact_root=root, store=open_store(settings.database_url))
    out().print(f"imported run {escape(run.run_id)} of {escape(run.pipeline)} ({run.state}, "
                f"{count} task instances) into {escape(settings.database_url.split('@')[-1])}")
