"""`cadenza compile --format kfp`: every example and test pipeline compiles to a KFP v2 spec
that the kfp SDK's own loader accepts, with the Cadenza graph's structure (issue 16).

Structure, read back from what the SDK loaded (its PipelineSpec proto): every task is one
step running `cadenza task-run --task TASK`; every edge of the graph is a dependency between
the step (or the condition group / loop holding it) of the upstream and of the downstream;
resources, retries, caching and timeouts are set as the task asks. A pipeline KFP cannot
express fails with every problem listed, each naming the task and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cadenza.core.errors import DefinitionError
from cadenza.engine.loading import load_file
from cadenza.graph.kfp import FINALIZE, compile_kfp
from cadenza.graph.plan import Plan

kfp = pytest.importorskip("kfp", reason="the kfp SDK comes with the test extra")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "examples").glob("*.py")) + sorted(
    p for p in (ROOT / "tests" / "pipelines").glob("*.py") if p.name != "__init__.py")
# Pipelines that use what KFP cannot express, and the problem the compiler must name.
INEXPRESSIBLE = {
    "not_for_kfp": "resources licence_seats have no KFP equivalent",
    # tests/pipelines/on_ray.py: custom Ray resources
    "placed": "resources special have no KFP equivalent",
    "no_such_resource": "resources TPU have no KFP equivalent",
}
# What the compiler refuses (graph/kfp.py). A test pipeline written for another feature may
# use one of these (custom Ray resources, a sensor task): it must then fail to compile with
# only such problems, each naming its task and the fix. Every example must compile.
REFUSED = ("have no KFP equivalent", "a sensor task waits", "KFP cannot pass an output out",
           "which KFP cannot nest", "a mapped (.expand) branch task")


def _plans() -> list[tuple[str, Plan]]:
    found: list[tuple[str, Plan]] = []
    for path in FILES:
        loaded = load_file(path)
        assert loaded.exception is None, f"{path} does not import: {loaded.error}"
        for name, plan in sorted(loaded.pipelines.items()):
            found.append((f"{path.relative_to(ROOT).as_posix()}:{name}", plan))
    return found


PLANS = _plans()


def _write(tmp_path: Path, compiled: Any) -> Path:
    out = tmp_path / "pipeline.yaml"
    out.write_text(yaml.safe_dump_all(compiled.documents, sort_keys=False), encoding="utf-8")
    return out


def _loaded_spec(path: Path) -> dict[str, Any]:
    """The pipeline spec as the kfp SDK loaded it (its proto, back to plain data)."""
    from google.protobuf import json_format

    component = kfp.components.load_component_from_file(str(path))
    spec: dict[str, Any] = json_format.MessageToDict(component.pipeline_spec)
    return spec


def _walk(spec: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]],
                                          dict[str, str | None]]:
    """(every executor task by its `--task` id, what each KFP task (by unique path name)
    holds, the parent DAG task of each)."""
    components = spec["components"]
    executors = spec["deploymentSpec"]["executors"]
    steps: dict[str, dict[str, Any]] = {}
    holds: dict[str, set[str]] = {}
    parent: dict[str, str | None] = {}

    def visit(dag: dict[str, Any], owner: str | None) -> set[str]:
        inside: set[str] = set()
        for name, task in dag.get("tasks", {}).items():
            comp = components[task["componentRef"]["name"]]
            parent[name] = owner
            if "dag" in comp:
                held = visit(comp["dag"], name)
            else:
                args = executors[comp["executorLabel"]]["container"].get("args", [])
                held = set()
                if "--task" in args and "--expand" not in args:
                    task_id = args[args.index("--task") + 1]
                    assert task_id not in steps, f"two steps run task {task_id}"
                    steps[task_id] = {"name": name, "task": task, "component": comp,
                                      "container": executors[comp["executorLabel"]]["container"],
                                      "owner": owner}
                    held = {task_id}
            holds[name] = held
            inside |= held
        return inside

    visit(spec["root"]["dag"], None)
    return steps, holds, parent


def _depends(spec: dict[str, Any], up: str, down: str, steps: dict[str, Any],
             holds: dict[str, set[str]]) -> bool:
    """Does the KFP task holding `down` wait for the one holding `up`, in the DAG where their
    paths meet (by dependentTasks or by reading its output)?"""
    components = spec["components"]

    def tasks_of(dag: dict[str, Any]) -> bool:
        names = dag.get("tasks", {})
        unit_up = next((n for n in names if up in holds[n]), None)
        unit_down = next((n for n in names if down in holds[n]), None)
        if unit_up is not None and unit_up == unit_down:
            return tasks_of(components[names[unit_up]["componentRef"]["name"]]["dag"])
        if unit_up is None or unit_down is None:
            return False
        task = names[unit_down]
        deps = set(task.get("dependentTasks", []))
        for binding in task.get("inputs", {}).get("parameters", {}).values():
            producer = binding.get("taskOutputParameter", {}).get("producerTask")
            if producer:
                deps.add(producer)
        return unit_up in deps

    return tasks_of(spec["root"]["dag"])


@pytest.mark.parametrize(("source", "plan"), PLANS, ids=[s for s, _ in PLANS])
def test_every_pipeline_compiles_to_a_spec_the_kfp_sdk_loads_with_its_structure(
        source: str, plan: Plan, tmp_path: Path) -> None:
    if plan.name in INEXPRESSIBLE:
        with pytest.raises(DefinitionError) as caught:
            compile_kfp(plan, image="img:1", source=source)
        assert INEXPRESSIBLE[plan.name] in str(caught.value)
        return
    if not source.startswith("examples/"):
        try:
            compile_kfp(plan, image="img:1", source=source)
        except DefinitionError as exc:
            for p in exc.problems:
                assert p.task in plan.graph.nodes and p.hint, p
                assert any(r in p.message for r in REFUSED), p.message
            return
    fingerprints = {n.id: f"fp-{n.id}" for n in plan.graph if n.options.cache}
    compiled = compile_kfp(plan, image="registry.example/proj:1", source=source,
                           fingerprints=fingerprints)
    spec = _loaded_spec(_write(tmp_path, compiled))
    assert spec["pipelineInfo"]["name"]
    steps, holds, _ = _walk(spec)
    # Every task is exactly one step, and every step a task of the pipeline.
    assert set(steps) == set(plan.graph.nodes)
    for task_id, step in steps.items():
        container = step["container"]
        node = plan.graph.nodes[task_id]
        assert container["image"] == "registry.example/proj:1"
        assert container["command"] == ["cadenza", "task-run"]
        args = container["args"]
        assert args[args.index("--pipeline") + 1] == source
        assert args[args.index("--run-id") + 1] == "{{$.pipeline_job_uuid}}"
        # The data it reads come as inputs named after the upstream tasks.
        for up in node.data_upstream:
            assert f"{up}={{{{$.inputs.parameters['ref--{up}']}}}}" in args
        if node.is_mapped:
            assert "--map-index" in args
            assert step["owner"] == f"for-{step['name']}"
        # Options: caching with the fingerprint, retries, resources, timeout.
        caching = step["task"].get("cachingOptions", {})
        assert bool(caching.get("enableCache")) is node.options.cache
        if node.options.cache:
            assert args[args.index("--fingerprint") + 1] == f"fp-{task_id}"
        if node.options.retries:
            assert step["task"]["retryPolicy"]["maxRetryCount"] == node.options.retries
        else:
            assert "retryPolicy" not in step["task"]
        r = node.options.resources
        res = container.get("resources", {})
        assert (float(res["cpuLimit"]) if "cpuLimit" in res else 0.0) == r.cpu
        if r.gpu:
            assert res["accelerator"]["resourceCount"] == str(r.gpu)
        if node.options.timeout_s:
            assert args[args.index("--timeout") + 1] == f"{node.options.timeout_s:g}"
    # Every edge of the graph is a dependency.
    for edge in plan.edges:
        assert _depends(spec, edge.upstream, edge.downstream, steps, holds), (
            f"{edge.upstream} -> {edge.downstream} is no dependency in the KFP spec")
    # The ExitHandler's step closes the run whatever happened.
    finalize = spec["root"]["dag"]["tasks"][FINALIZE]
    assert finalize["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_options_map_to_kfp_resources_retry_policy_caching_timeout_and_inputs(
        tmp_path: Path) -> None:
    from tests.pipelines.kfp_shapes import trained_on_gpu

    compiled = compile_kfp(trained_on_gpu.plan, image="img:1",
                           source="tests/pipelines/kfp_shapes.py:trained_on_gpu",
                           fingerprints={"fit": "abc123"})
    path = _write(tmp_path, compiled)
    spec = _loaded_spec(path)
    steps, _, _ = _walk(spec)
    fit = steps["fit"]
    resources = fit["container"]["resources"]
    assert resources["resourceCpuRequest"] == resources["resourceCpuLimit"] == "2"
    assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"] == "4Gi"
    assert resources["accelerator"]["resourceType"] == "nvidia-tesla-a100"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert fit["task"]["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "2s",
                                          "backoffFactor": 2.0, "backoffMaxDuration": "60s"}
    assert fit["task"]["cachingOptions"] == {"enableCache": True}
    assert "abc123" in fit["container"]["args"]
    # all_done: KFP starts the step once its upstream ended; its input may be missing.
    tidy = steps["tidy"]
    assert tidy["task"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert tidy["component"]["inputDefinitions"]["parameters"]["ref--fit"]["isOptional"]
    # Parameters are the pipeline's inputs, typed, with their defaults.
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in params.items()} == {
        "rows": "NUMBER_INTEGER", "rate": "NUMBER_DOUBLE", "name": "STRING",
        "flags": "STRUCT", "sizes": "LIST"}
    assert params["name"]["defaultValue"] == "m" and params["sizes"]["defaultValue"] == [1, 2]
    # The timeout is the pod's deadline too (the platform spec, the file's 2nd document).
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    deadline = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-fit"]
    assert deadline["activeDeadlineSeconds"] >= 600


def test_branch_targets_become_conditions_on_the_branch_output(tmp_path: Path) -> None:
    from examples.quickstart import quickstart

    spec = _loaded_spec(_write(tmp_path, compile_kfp(
        quickstart.plan, image="i", source="examples/quickstart.py:quickstart")))
    steps, _, parent = _walk(spec)
    for target in ("deploy", "alert"):
        group = steps[target]["owner"]
        assert group == f"if-quality-gate-{target}"
        group_task = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"][group]
        assert group_task["triggerPolicy"]["condition"] == (
            f"inputs.parameter_values['branch--quality_gate'] == \"{target}\"")
    # The element-wise map over a mapped output: a -map step, then the loop over its indices.
    body = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert body["for-evaluate"]["parameterIterator"]["items"] == {
        "inputParameter": "idx--evaluate"}
    assert body["for-train"]["parameterIterator"]["items"] == {"raw": "[0, 1, 2, 3]"}
    # dsl.Collected: select_best reads the loop's list of refs.
    binding = steps["select_best"]["task"]["inputs"]["parameters"]["ref--evaluate"]
    assert binding["taskOutputParameter"] == {"producerTask": "for-evaluate",
                                              "outputParameterKey": "ref--evaluate"}
    del parent


def test_a_pipeline_kfp_cannot_express_lists_every_problem_with_task_and_fix() -> None:
    from tests.pipelines.kfp_shapes import not_for_kfp

    with pytest.raises(DefinitionError) as caught:
        compile_kfp(not_for_kfp.plan, image="i", source="x.py:not_for_kfp")
    problems = caught.value.problems
    by_task = {(p.task, p.message.split(" ")[0]) for p in problems}
    assert ("licensed", "resources") in by_task
    sensors = [p for p in problems if "a sensor task waits" in p.message]
    assert len(sensors) == 1 and sensors[0].task in not_for_kfp.plan.graph.nodes
    reads = [p for p in problems if p.task == "join"]
    assert {p.message.split("'")[1] for p in reads} == {"left", "right"}
    assert all(p.hint for p in problems)
    text = str(caught.value)
    assert text.startswith("4 problems in pipeline 'not_for_kfp'")
    assert "Fix: keep cpu, memory, gpu and gpu_type" in text and "dsl.If" in text
