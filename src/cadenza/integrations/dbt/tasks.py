"""`dbt_task`: dbt-core as Cadenza tasks (SPEC §9).

What belongs here: the definition side. `dbt_task(...)` called in a `@pipeline` body adds a
task whose function invokes dbt (`run.py`, in the worker) and returns its output reference;
with `expand_models=True` it adds one task per model (and seed, snapshot) of the project's
`manifest.json`, wired in dbt's dependency order, and returns their references in that
order. Retries, timeouts, pools, caching and resume are the engine's, as for any task.

dbt's own environment. dbt-core pins `pathspec<0.13` (our mypy needs >= 1.0) and its 1.12
line needs a parser that downloads a binary from outside PyPI at install time, so dbt cannot
share Cadenza's environment. A dbt task therefore runs, by default, in a per-task uv
environment (`@task(requirements=...)`, executors/envs.py) holding `DBT_REQUIREMENTS`: built
once per machine and kept, the task runs on a kept worker process there. Pass your own
`requirements=[...]` for another adapter or version, or `requirements=[]` to use a dbt
installed where Cadenza runs.

Cache keys. The task's settings (project folder, command, profiles folder) and a digest of
the project's files (`manifest.project_digest`; per node with `expand_models`, the node's and
its tests' checksums from the manifest) are closure values of the task's function, which the
fingerprint hashes by content: editing a model is a cache miss, running dbt is not. The
selection, target, vars and full_refresh are the task's arguments, so part of the key too.
What the warehouse holds is not: `cache=True` on a dbt task means "skip dbt when the project
and arguments did not change".

Example:
    from cadenza import dbt_task, pipeline, task

    @pipeline
    def warehouse(day: str = "2026-01-01"):
        staged = dbt_task("warehouse/", select="staging", target="dev", vars={"day": day})
        marts = dbt_task("warehouse/", select="marts", retries=2)
        staged >> marts
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cadenza.authoring.builder import current_builder
from cadenza.authoring.task import TaskDef
from cadenza.core.errors import DefinitionError, Problem
from cadenza.integrations.dbt.manifest import ManifestError, project_digest, read_nodes
from cadenza.integrations.errors import DbtUnavailable
from cadenza.integrations.files import caller_dir, resolve_folder

# dbt-core 1.11 (1.12 needs a parser binary fetched from outside PyPI when it installs) and
# its PostgreSQL adapter, tested against the real server (tests/integration/test_dbt.py).
DBT_REQUIREMENTS: tuple[str, ...] = ("dbt-core==1.11.16", "dbt-postgres==1.11.0")
COMMANDS = ("build", "run", "test", "seed", "snapshot", "compile", "parse")


def _runner(config: dict[str, Any], task_name: str) -> Callable[..., Any]:
    """The task's function: one dbt invocation with `config` (closure: in the cache key)."""

    def dbt(select: Any = None, exclude: Any = None, target: str | None = None,
            vars: Mapping[str, Any] | None = None, full_refresh: bool = False) -> Any:
        from cadenza.integrations.dbt.run import run_dbt

        return run_dbt(config, {"select": select, "exclude": exclude, "target": target,
                                "vars": vars, "full_refresh": full_refresh})

    dbt.__name__ = task_name
    # A name of its own per task: the processes pool keeps one pickled function per name.
    dbt.__qualname__ = f"dbt_task.<{task_name}>"
    return dbt


def _options(options: dict[str, Any], requirements: Sequence[str] | None) -> dict[str, Any]:
    options = dict(options)
    options["requirements"] = list(DBT_REQUIREMENTS if requirements is None else requirements)
    if options.get("retry_on") is None:
        # A warehouse that is down is worth another attempt; a failing test or a broken
        # model fails the same way again.
        options["retry_on"] = (DbtUnavailable,)
    return options


def _settings_problems(project: Path, profiles: Path | None, command: str,
                       task: str) -> list[Problem]:
    problems = []
    if not (project / "dbt_project.yml").is_file():
        problems.append(Problem(
            message=f"no dbt project at {project} (dbt_project.yml not found)", task=task,
            hint="dbt_task('path/to/project'): a folder holding dbt_project.yml, relative to "
            "the pipeline's file or absolute"))
    if profiles is not None and not (profiles / "profiles.yml").is_file():
        problems.append(Problem(
            message=f"no profiles.yml in {profiles}", task=task,
            hint="profiles_dir= names the folder holding profiles.yml (leave it out to use "
            "the project's folder or ~/.dbt, as dbt does)"))
    if command not in COMMANDS:
        from cadenza.core.suggest import did_you_mean

        problems.append(Problem(
            message=f"unknown dbt command {command!r}." + did_you_mean(command, list(COMMANDS)),
            task=task, hint=f"command= is one of {', '.join(COMMANDS)}"))
    return problems


def dbt_task(
    project_dir: str | os.PathLike[str],
    *,
    select: Any = None,
    exclude: Any = None,
    target: str | None = None,
    vars: Mapping[str, Any] | None = None,
    full_refresh: bool = False,
    command: str = "build",
    profiles_dir: str | os.PathLike[str] | None = None,
    expand_models: bool = False,
    manifest_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    requirements: Sequence[str] | None = None,
    **options: Any,
) -> Any:
    """Run dbt on a project as a task; inside a `@pipeline` body, add it and return its output
    reference (a dict: the command, each node's status, dbt test warnings).

    `command` is dbt's (`build` runs seeds, models, snapshots and their tests in dependency
    order); `select`/`exclude` take dbt's selection syntax (a string or a list); `target`
    picks the profile's output; `vars` are dbt's `--vars` (values may be pipeline parameters
    or upstream outputs). Relative folders are read from the pipeline file's folder. Other
    keyword arguments are @task's options (`retries`, `timeout`, `cache`, `pool`, ...).

    A failing dbt test or model fails the task with the failing nodes named; a warehouse that
    cannot be reached fails it as DbtUnavailable, which `retries` retry.

    `expand_models=True` adds one task per model, seed and snapshot of the project (named
    `<name>_<model>`), reading the graph from `manifest_path` (default
    `<project>/target/manifest.json`, which `dbt parse` writes: run it, or a
    `dbt_task(..., command="parse")` pipeline, after changing models). Each runs
    `dbt <command> --select <model>` with the tests whose parents it has built; a failure
    stops only that model's downstream. `select` then lists plain model names (default:
    all); the references come back as a list, upstream first.

    Example:
        @pipeline
        def nightly():
            models = dbt_task("warehouse", target="prod", expand_models=True, retries=2)
            models >> train(load_features())
    """
    base = caller_dir(1)
    project = resolve_folder(project_dir, base)
    profiles = resolve_folder(profiles_dir, base)
    assert project is not None
    task_name = name or "dbt"
    problems = _settings_problems(project, profiles, command, task_name)
    config: dict[str, Any] = {
        "project_dir": str(project),
        "profiles_dir": None if profiles is None else str(profiles),
        "command": command,
        "isolate": False,
    }
    opts = _options(options, requirements)
    arguments = {"select": select, "exclude": exclude, "target": target, "vars": vars,
                 "full_refresh": full_refresh}
    if not expand_models:
        if not problems:
            config["project"] = project_digest(project)
        tdef = TaskDef(_runner(config, task_name), name=task_name, explicit=name is not None,
                       **opts)
        return _add(tdef, problems, arguments)
    return _expand(config, project, resolve_folder(manifest_path, base), task_name, problems, opts,
                   arguments)


def _add(tdef: TaskDef[Any, Any], problems: list[Problem], arguments: dict[str, Any]) -> Any:
    tdef.problems.extend(problems)
    if current_builder() is None and tdef.problems:
        raise DefinitionError(None, list(tdef.problems))  # outside a pipeline: it runs now
    return tdef(**arguments)


def _expand(config: dict[str, Any], project: Path, manifest: Path | None, name: str,
            problems: list[Problem], opts: dict[str, Any],
            arguments: dict[str, Any]) -> list[Any]:
    path = manifest or project / "target" / "manifest.json"
    nodes = []
    if current_builder() is None:
        problems.append(Problem(
            message="expand_models=True adds tasks, so it works only in a @pipeline body",
            task=name, hint="call dbt_task(..., expand_models=True) inside the function "
            "decorated with @pipeline"))
    if not problems:
        try:
            nodes = read_nodes(path)
        except ManifestError as exc:
            problems.append(Problem(
                message=f"expand_models=True needs the project's manifest.json: {exc}",
                task=name, hint=f"run `dbt parse --project-dir {project}` once (and after "
                "changing models), or point manifest_path= at a manifest.json"))
    wanted = arguments.pop("select")
    names = None if wanted is None else ([wanted] if isinstance(wanted, str) else list(wanted))
    if names is not None:
        odd = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
        known = {n.name for n in nodes}
        missing = [n for n in names if n not in known and n not in odd]
        if odd:
            problems.append(Problem(
                message=f"with expand_models=True, select= lists model names; got {odd!r}",
                task=name, hint="select=['stg_orders', 'customer_totals'], or leave it out "
                "for every model; for dbt's selection syntax use one task: expand_models=False"))
        if missing and nodes:
            from cadenza.core.suggest import did_you_mean

            problems.append(Problem(
                message=f"the manifest has no model {missing[0]!r}."
                + did_you_mean(missing[0], sorted(known)),
                task=name, hint=f"models in {path}: {', '.join(sorted(known)[:20])}"))
        nodes = [n for n in nodes if n.name in names]
    if problems or not nodes:
        if not problems:
            problems.append(Problem(message=f"the manifest at {path} has no model", task=name,
                                    hint="check the project's model-paths"))
        tdef = TaskDef(_runner(config, name), name=name, explicit=True, **opts)
        return [_add(tdef, problems, {**arguments, "select": wanted})]
    refs: dict[str, Any] = {}
    for node in nodes:
        task_name = f"{name}_{node.name}"
        node_config = {**config, "isolate": True, "node": node.unique_id, "digest": node.digest}
        tdef = TaskDef(_runner(node_config, task_name), name=task_name, explicit=True, **opts)
        ref = _add(tdef, [], {**arguments, "select": node.name})
        for upstream in node.upstream:
            if upstream in refs:
                refs[upstream] >> ref
        refs[node.unique_id] = ref
    return list(refs.values())
