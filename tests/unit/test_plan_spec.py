"""The Plan (graph/plan.py): what `@pipeline` hands the engine, triggers and surfaces.

Built from real @pipeline definitions: every field, edges with their kinds, mapped markers,
per-task options, the parameter schema and validation. Pure: nothing runs.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from cadenza import Asset, ParameterError, pipeline, task
from cadenza.graph.model import ParamValue, TaskOutput, TriggerRule
from cadenza.graph.plan import EdgeKind, Plan, find_plan, plan_of

GiB = 1024**3


@task
def load(n: int = 3) -> list[int]:
    return list(range(n))


@task(retries=2, retry_delay=5, timeout=30, cache=True, pool="gpu", resources={"cpu": 2, "memory": "1GiB", "gpu": 1},
      trigger_rule="all_done", requirements=["numpy>=2"])
def score(x: int, scale: float = 1.0) -> float:
    return x * scale


@task
def total(values: list[float]) -> float:
    return sum(values)


@task
def notify() -> None:
    return None


def on_ok(ctx: Any) -> None:
    return None


def on_bad(ctx: Any) -> None:
    return None


@pipeline(schedule="0 2 * * *", timezone="Europe/Paris", start_date="2026-01-01",
          end_date="2026-12-31", catchup=True, max_active_runs=2, sla=timedelta(hours=4),
          tags=["training", "nightly"], triggers=[Asset("features/user")],
          on_success=on_ok, on_failure=[on_bad, on_ok], on_sla_miss=on_bad)
def nightly(n: int = 3, scale: float = 0.5, label: str = "x") -> None:
    """Nightly scoring."""
    numbers = load(n)
    scores = score.partial(scale=scale).expand(x=numbers)
    t = total(scores)
    t >> notify()


@pipeline
def needs_seed(seed: int, rates: list[float] | None = None) -> None:
    load(seed)


def test_plan_is_built_once_at_definition_and_is_frozen() -> None:
    plan = nightly.plan
    assert isinstance(plan, Plan)
    assert nightly.plan is plan  # built once, not per access
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.name = "other"  # type: ignore[misc]


def test_plan_carries_every_pipeline_option() -> None:
    plan = nightly.plan
    assert plan.name == "nightly"
    assert plan.description == "Nightly scoring."
    assert plan.tags == ("training", "nightly")
    assert plan.schedule == "0 2 * * *"
    assert plan.timezone == "Europe/Paris"
    assert plan.start_date == datetime(2026, 1, 1)
    assert plan.end_date == datetime(2026, 12, 31)
    assert plan.catchup is True
    assert plan.max_active_runs == 2
    assert plan.sla == timedelta(hours=4)
    assert [getattr(t, "name", None) for t in plan.triggers] == ["features/user"]
    assert plan.tracking is None
    assert plan.callbacks.on_success == (on_ok,)
    assert plan.callbacks.on_failure == (on_bad, on_ok)
    assert plan.callbacks.on_sla_miss == (on_bad,)
    assert plan.callbacks.as_dict() == {"on_success": (on_ok,), "on_failure": (on_bad, on_ok),
                                        "on_sla_miss": (on_bad,)}
    assert plan.source.endswith("test_plan_spec.py:nightly")
    assert plan.source_file is not None and plan.source_file.endswith("test_plan_spec.py")
    assert plan.module == __name__


def test_plan_defaults_for_a_bare_pipeline() -> None:
    plan = needs_seed.plan
    assert (plan.schedule, plan.timezone, plan.start_date, plan.end_date) == (None, "UTC", None, None)
    assert (plan.catchup, plan.max_active_runs, plan.sla, plan.triggers) == (False, None, None, ())
    assert plan.callbacks.as_dict() == {}
    assert plan.description == "" and plan.tags == ()


def test_description_option_wins_over_the_docstring() -> None:
    @pipeline(description="Scores users.")
    def described() -> None:
        """Docstring."""
        load()

    assert described.plan.description == "Scores users."


def test_sla_in_seconds_becomes_a_timedelta() -> None:
    @pipeline(sla=90)
    def timed() -> None:
        load()

    assert timed.plan.sla == timedelta(seconds=90)


def test_plan_graph_nodes_and_order() -> None:
    plan = nightly.plan
    assert list(plan.tasks) == ["load", "score", "total", "notify"]
    assert plan.topological_ids() == ["load", "score", "total", "notify"]
    assert len(plan) == 4 and [n.id for n in plan] == list(plan.tasks)
    assert plan.graph is nightly.graph


def test_plan_edges_name_their_kind_and_the_arguments_they_feed() -> None:
    edges = {(e.upstream, e.downstream): e for e in nightly.plan.edges}
    assert set(edges) == {("load", "score"), ("score", "total"), ("total", "notify")}
    assert edges[("load", "score")].kind is EdgeKind.DATA
    assert edges[("load", "score")].args == ("x",)
    assert edges[("score", "total")].args == ("values",)
    assert edges[("total", "notify")].kind is EdgeKind.ORDER
    assert edges[("total", "notify")].args == ()
    assert [e.upstream for e in nightly.plan.edges_into("total")] == ["score"]


def test_plan_keeps_mapped_markers() -> None:
    node = nightly.plan.task("score")
    assert node.is_mapped and node.mapped == ("x",)
    assert node.args["x"] == TaskOutput("load")
    assert node.args["scale"] == ParamValue("scale")
    assert nightly.plan.task("total").args["values"] == TaskOutput("score")


def test_plan_task_options() -> None:
    o = nightly.plan.task("score").options
    assert (o.retries, o.retry_delay_s, o.timeout_s, o.cache, o.pool) == (2, 5.0, 30.0, True, "gpu")
    assert (o.resources.cpu, o.resources.memory_bytes, o.resources.gpu) == (2.0, GiB, 1)
    assert o.trigger_rule is TriggerRule.ALL_DONE
    assert o.requirements == ("numpy>=2",)


def test_describe_is_json_ready_with_markers_options_and_edges() -> None:
    d = nightly.plan.describe()
    json.dumps(d)  # JSON-ready: what GET /pipelines/{name} returns
    assert d["name"] == "nightly" and d["schedule"] == "0 2 * * *"
    assert d["sla_s"] == 4 * 3600
    assert d["start_date"] == "2026-01-01T00:00:00"
    assert d["parameters"] == [
        {"name": "n", "type": "int", "required": False, "default": 3},
        {"name": "scale", "type": "float", "required": False, "default": 0.5},
        {"name": "label", "type": "str", "required": False, "default": "x"},
    ]
    tasks = {t["id"]: t for t in d["tasks"]}
    assert tasks["score"]["mapped"] == ["x"]
    assert tasks["score"]["args"] == {"x": {"task_output": "load"}, "scale": {"param": "scale"}}
    assert tasks["load"]["args"] == {"n": {"param": "n"}}
    opts = tasks["score"]["options"]
    assert opts["retries"] == 2 and opts["timeout_s"] == 30.0 and opts["cache"] is True
    assert opts["resources"] == {"cpu": 2.0, "memory_bytes": GiB, "gpu": 1, "gpu_type": None,
                                 "custom": {}}
    assert opts["trigger_rule"] == "all_done" and opts["pool"] == "gpu"
    assert opts["requirements"] == ["numpy>=2"]
    assert {"upstream": "total", "downstream": "notify", "kind": "order", "args": []} in d["edges"]
    assert d["callbacks"]["on_failure"] == [f"{__name__}.on_bad", f"{__name__}.on_ok"]


def test_describe_of_a_timedelta_schedule() -> None:
    @pipeline(schedule=timedelta(minutes=30))
    def often() -> None:
        load()

    assert often.plan.describe()["schedule"] == "every 1800 s"
    assert often.plan.schedule == timedelta(minutes=30)


def test_parameter_json_schema() -> None:
    schema = needs_seed.plan.parameters.json_schema()
    assert schema["required"] == ["seed"]
    assert schema["properties"]["seed"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    rates = schema["properties"]["rates"]
    assert {"type": "array", "items": {"type": "number"}} in rates["anyOf"]
    assert nightly.plan.parameters.json_schema()["properties"]["scale"]["default"] == 0.5
    assert needs_seed.plan.parameters.required == ("seed",)
    assert needs_seed.plan.parameters.names == ("seed", "rates")


def test_plan_validates_parameters_as_the_run_does() -> None:
    plan = needs_seed.plan
    assert plan.validate_params({"seed": "4"}) == ({"seed": 4, "rates": None},
                                                   {"seed": 4, "rates": None})
    with pytest.raises(ParameterError, match="seed"):
        plan.validate_params({})
    with pytest.raises(ParameterError, match="Did you mean 'seed'"):
        plan.validate_params({"sed": 1})
    assert needs_seed.validate_params({"seed": 4}) == plan.validate_params({"seed": 4})


def test_plan_of_and_find_plan_accept_a_pipeline_or_its_plan() -> None:
    assert plan_of(nightly) is nightly.plan
    assert plan_of(nightly.plan) is nightly.plan
    assert find_plan(nightly) is nightly.plan
    assert find_plan(nightly.plan) is nightly.plan
    assert find_plan(load) is None
    assert find_plan("nightly") is None


def test_a_cut_down_plan_keeps_everything_but_the_graph() -> None:
    one = dataclasses.replace(nightly.plan, graph=dataclasses.replace(
        nightly.graph, nodes={"load": nightly.graph.nodes["load"]}))
    assert list(one.tasks) == ["load"]
    assert (one.name, one.schedule, one.parameters) == ("nightly", "0 2 * * *",
                                                        nightly.plan.parameters)
