"""Authoring (SPEC §1): tracing a @pipeline body into a graph, ids, >>, partial/expand,
@task.branch, task options and their units, pipeline parameters.

Pure: pipelines are defined, never run.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza import DefinitionError, ParameterError, PipelineDef, TaskDef, pipeline, task
from cadenza.graph.model import ParamValue, Resources, TaskOutput, TriggerRule

GiB = 1024**3


# -- tasks used by the pipelines below --------------------------------------------------------
@task
def load(n: int = 3) -> list[int]:
    return list(range(n))


@task
def consume(data: Any = None, extra: Any = None) -> Any:
    return data


@task
def square(x: int) -> int:
    return x * x


@task
def add(x: int, y: int = 0) -> int:
    return x + y


@task
def train(df: Any, config: dict) -> dict:
    return {"config": config}


@task
def select_best(results: list[dict]) -> dict:
    return results[0]


@task.branch
def gate(best: dict, threshold: float) -> str:
    return "deploy" if best["auc"] >= threshold else "alert"


@task
def deploy(best: dict) -> str:
    return "deployed"


@task
def alert(best: dict) -> str:
    return "alerted"


@task(trigger_rule="all_done")
def cleanup() -> str:
    return "cleaned"


def nodes(p: PipelineDef[Any, Any]) -> list[str]:
    return list(p.graph.nodes)


# -- calling a task ---------------------------------------------------------------------------
def test_task_called_outside_a_pipeline_just_calls_the_function() -> None:
    assert square(4) == 16
    assert add(2, y=3) == 5
    assert isinstance(square, TaskDef)


def test_task_keeps_the_wrapped_function_name_and_doc() -> None:
    @task
    def documented(x: int) -> int:
        """Doubles x."""
        return 2 * x

    assert documented.name == "documented"
    assert documented.__doc__ == "Doubles x."
    assert documented.__wrapped__(3) == 6


def test_task_called_inside_a_pipeline_adds_a_node_and_returns_a_ref_without_running() -> None:
    calls: list[int] = []

    @task
    def record(x: int) -> int:
        calls.append(x)
        return x

    seen: dict[str, Any] = {}

    @pipeline
    def p() -> None:
        seen["ref"] = record(1)

    assert calls == []
    ref = seen["ref"]
    assert ref.task_id == "record"
    assert not ref.is_mapped
    assert nodes(p) == ["record"]
    node = p.graph.nodes["record"]
    assert node.args == {"x": 1}
    assert node.task_name == "record"
    assert node.fn is record.fn


def test_passing_a_ref_makes_a_data_dependency() -> None:
    @pipeline
    def p() -> None:
        consume(load())

    node = p.graph.nodes["consume"]
    assert node.data_upstream == ("load",)
    assert node.order_upstream == ()
    assert node.args == {"data": TaskOutput("load")}
    assert node.upstream == ("load",)


def test_refs_nested_in_lists_and_dicts_make_data_dependencies() -> None:
    @pipeline
    def p() -> None:
        a = load()
        b = square(2)
        consume({"rows": [a, 1], "meta": {"sq": b}}, extra=[b])

    node = p.graph.nodes["consume"]
    assert set(node.data_upstream) == {"load", "square"}
    assert node.args["data"] == {"rows": [TaskOutput("load"), 1], "meta": {"sq": TaskOutput("square")}}
    assert node.args["extra"] == [TaskOutput("square")]


def test_pipeline_parameter_passed_to_a_task_becomes_a_param_marker() -> None:
    @pipeline
    def p(n: int = 5) -> None:
        load(n)

    assert p.graph.nodes["load"].args == {"n": ParamValue("n")}
    assert p.graph.nodes["load"].data_upstream == ()


# -- ids --------------------------------------------------------------------------------------
def test_repeated_calls_get_ids_name_name__1_name__2() -> None:
    @pipeline
    def p() -> None:
        square(1)
        square(2)
        square(3)

    assert nodes(p) == ["square", "square__1", "square__2"]
    assert [p.graph.nodes[i].args["x"] for i in nodes(p)] == [1, 2, 3]


def test_with_options_name_overrides_the_id_for_that_use() -> None:
    @pipeline
    def p() -> None:
        square(1)
        square.with_options(name="square_big")(2)
        square(3)

    assert nodes(p) == ["square", "square_big", "square__1"]
    assert p.graph.nodes["square_big"].explicit_name is True
    assert p.graph.nodes["square__1"].explicit_name is False


def test_with_options_overrides_per_use_and_leaves_the_original_unchanged() -> None:
    @task(retries=1, timeout=10)
    def fit(x: int) -> int:
        return x

    big = fit.with_options(name="fit_big", retries=5)

    assert big is not fit
    assert big.name == "fit_big"
    assert big.options.retries == 5
    assert big.options.timeout_s == 10.0  # untouched options carry over
    assert fit.name == "fit"
    assert fit.options.retries == 1
    assert fit.raw_options == {"retries": 1, "timeout": 10}

    @pipeline
    def p() -> None:
        fit(1)
        big(2)
        fit.with_options(retries=7)(3)

    g = p.graph.nodes
    assert nodes(p) == ["fit", "fit_big", "fit__1"]
    assert g["fit"].options.retries == 1
    assert g["fit_big"].options.retries == 5
    assert g["fit__1"].options.retries == 7


def test_with_options_keeps_branch_flag() -> None:
    g2 = gate.with_options(retries=2)
    assert g2.options.is_branch
    assert g2.options.retries == 2


def test_task_named_in_decorator_gets_suffixed_ids_when_called_twice() -> None:
    @task(name="fetch")
    def fetch_rows() -> int:
        return 1

    @pipeline
    def p() -> None:
        fetch_rows()
        fetch_rows()

    assert nodes(p) == ["fetch", "fetch__1"]


# -- >> ---------------------------------------------------------------------------------------
def test_rshift_between_refs_makes_an_order_only_dependency() -> None:
    @pipeline
    def p() -> None:
        a = square(1)
        b = square(2)
        a >> b

    node = p.graph.nodes["square__1"]
    assert node.order_upstream == ("square",)
    assert node.data_upstream == ()
    assert node.args == {"x": 2}


def test_rshift_chains_left_to_right() -> None:
    @pipeline
    def p() -> None:
        a, b, c = square(1), square(2), square(3)
        a >> b >> c

    assert p.graph.nodes["square__1"].order_upstream == ("square",)
    assert p.graph.nodes["square__2"].order_upstream == ("square__1",)


def test_rshift_to_a_list_fans_out() -> None:
    @pipeline
    def p() -> None:
        a = load()
        a >> [square(1), square(2)]

    assert p.graph.nodes["square"].order_upstream == ("load",)
    assert p.graph.nodes["square__1"].order_upstream == ("load",)
    assert p.graph.downstream()["load"] == ["square", "square__1"]


def test_list_rshift_ref_fans_in() -> None:
    @pipeline
    def p() -> None:
        a, b = square(1), square(2)
        [a, b] >> load()

    assert p.graph.nodes["load"].order_upstream == ("square", "square__1")


def test_lshift_is_the_mirror_of_rshift() -> None:
    @pipeline
    def p() -> None:
        a, b = square(1), square(2)
        b << a

    assert p.graph.nodes["square__1"].order_upstream == ("square",)


def test_taskdef_in_rshift_list_stands_for_its_single_use() -> None:
    @pipeline
    def p(threshold: float = 0.5) -> None:
        best = select_best([{"auc": 1.0}])
        g = gate(best, threshold)
        g >> [deploy(best), alert(best)]
        [deploy, alert] >> cleanup()

    g = p.graph.nodes
    assert g["cleanup"].order_upstream == ("deploy", "alert")
    assert g["deploy"].order_upstream == ("gate",)
    assert g["alert"].order_upstream == ("gate",)
    assert g["deploy"].data_upstream == ("select_best",)


def test_taskdef_in_rshift_is_ambiguous_when_called_twice() -> None:
    with pytest.raises(DefinitionError) as info:

        @pipeline
        def ambiguous() -> None:
            square(1)
            square(2)
            square >> load()

    text = str(info.value)
    assert "ambiguous" in text
    assert "'square'" in text and "2 times" in text
    assert "ref = task(...)" in text


def test_taskdef_in_rshift_that_was_never_called_is_an_error() -> None:
    with pytest.raises(DefinitionError) as info:

        @pipeline
        def uncalled() -> None:
            square >> load()

    assert "task 'square' is not called in this pipeline body" in str(info.value)


def test_rshift_outside_a_pipeline_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="only meaningful inside a @pipeline"):
        square >> load


# -- partial / expand -------------------------------------------------------------------------
def test_partial_expand_over_a_literal_list() -> None:
    seen: dict[str, Any] = {}

    @pipeline
    def p() -> None:
        df = load()
        seen["ref"] = train.partial(df=df).expand(config=[{"depth": d} for d in (3, 5, 7)])

    node = p.graph.nodes["train"]
    assert node.mapped == ("config",)
    assert node.is_mapped
    assert node.args == {"df": TaskOutput("load"), "config": [{"depth": 3}, {"depth": 5}, {"depth": 7}]}
    assert node.data_upstream == ("load",)
    assert seen["ref"].is_mapped


def test_expand_over_a_tuple_is_stored_as_a_list() -> None:
    @pipeline
    def p() -> None:
        square.expand(x=(1, 2, 3))

    assert p.graph.nodes["square"].args == {"x": [1, 2, 3]}


def test_expand_over_an_upstream_ref() -> None:
    @pipeline
    def p() -> None:
        square.expand(x=load())

    node = p.graph.nodes["square"]
    assert node.mapped == ("x",)
    assert node.args == {"x": TaskOutput("load")}
    assert node.data_upstream == ("load",)


def test_expand_over_a_pipeline_parameter() -> None:
    @pipeline
    def p(xs: list[int] = [1, 2]) -> None:  # noqa: B006
        square.expand(x=xs)

    node = p.graph.nodes["square"]
    assert node.mapped == ("x",)
    assert node.args == {"x": ParamValue("xs")}


def test_partial_with_a_parameter_and_expand() -> None:
    @pipeline
    def p(y: int = 1) -> None:
        add.partial(y=y).expand(x=[1, 2])

    node = p.graph.nodes["add"]
    assert node.mapped == ("x",)
    assert node.args == {"x": [1, 2], "y": ParamValue("y")}


def test_two_expands_chain_element_wise() -> None:
    seen: dict[str, Any] = {}

    @pipeline
    def p() -> None:
        first = square.expand(x=[1, 2, 3])
        seen["second"] = add.expand(x=first)

    first, second = p.graph.nodes["square"], p.graph.nodes["add"]
    assert first.mapped == ("x",)
    assert second.mapped == ("x",)
    assert second.args == {"x": TaskOutput("square")}
    assert second.data_upstream == ("square",)
    assert seen["second"].is_mapped


def test_mapped_output_passed_to_a_plain_task_is_a_plain_data_dependency() -> None:
    @pipeline
    def p() -> None:
        results = square.expand(x=[1, 2, 3])
        select_best(results)

    node = p.graph.nodes["select_best"]
    assert node.mapped == ()
    assert node.args == {"results": TaskOutput("square")}
    assert node.data_upstream == ("square",)


def test_expand_with_several_lists_maps_over_each() -> None:
    @pipeline
    def p() -> None:
        add.expand(x=[1, 2], y=[10, 20, 30])

    node = p.graph.nodes["add"]
    assert set(node.mapped) == {"x", "y"}
    assert node.args == {"x": [1, 2], "y": [10, 20, 30]}


def test_chained_partial_merges_and_later_values_win() -> None:
    @pipeline
    def p() -> None:
        add.partial(y=1).partial(y=2).expand(x=[1, 2])

    assert p.graph.nodes["add"].args == {"x": [1, 2], "y": 2}


def test_argument_in_both_partial_and_expand_is_reported() -> None:
    with pytest.raises(DefinitionError) as info:

        @pipeline
        def both() -> None:
            add.partial(x=1).expand(x=[1, 2])

    err = info.value
    assert err.pipeline == "both"
    assert "argument 'x' is given to both partial() and expand()" in str(err)


def test_expand_over_a_scalar_is_reported() -> None:
    with pytest.raises(DefinitionError) as info:

        @pipeline
        def scalar() -> None:
            square.expand(x=3)

    text = str(info.value)
    assert "task 'square'" in text
    assert "expand(x=...) needs a list" in text
    assert ".expand(x=[...])" in text


def test_expand_with_no_lists_is_reported() -> None:
    with pytest.raises(DefinitionError, match=r"expand\(\) needs at least one list"):

        @pipeline
        def empty() -> None:
            square.expand()


def test_expand_over_a_name_only_kwargs_would_take_is_a_definition_error() -> None:
    @task
    def fs(**kwargs: Any) -> Any:
        return kwargs

    with pytest.raises(DefinitionError) as info:

        @pipeline
        def loose() -> None:
            fs.expand(x=[1, 2])

    text = str(info.value)
    assert "task 'fs': expand() maps over named parameters; 'fs' takes **kwargs" in text
    assert "give it a named parameter x" in text
    assert len(info.value.problems) == 1


def test_expand_over_a_name_only_args_would_take_names_the_fix() -> None:
    @task
    def many(*args: Any) -> Any:
        return args

    with pytest.raises(DefinitionError) as info:

        @pipeline
        def loose() -> None:
            many.partial().expand(x=[1, 2])

    text = str(info.value)
    assert "'many' takes *args and has no parameter 'x'" in text
    assert "give it a named parameter x" in text
    assert len(info.value.problems) == 1


def test_expand_over_a_named_parameter_beside_kwargs_still_maps() -> None:
    @task
    def fs(x: int, **kwargs: Any) -> Any:
        return x

    @pipeline
    def fine() -> None:
        fs.expand(x=[1, 2])

    node = fine.graph.nodes["fs"]
    assert node.mapped == ("x",)
    assert node.args == {"x": [1, 2]}


def test_file_sensor_step_cannot_expand_and_says_so_at_definition() -> None:
    from cadenza.triggers.sensors import FileSensor

    fs = FileSensor("data/*.csv", name="fs")
    with pytest.raises(DefinitionError) as info:

        @pipeline
        def wait_each() -> None:
            fs.as_task().expand(pattern=["a/*.csv", "b/*.csv"])

    text = str(info.value)
    assert "task 'fs': expand() maps over named parameters" in text
    assert "'fs' takes *args and **kwargs and has no parameter 'pattern'" in text
    assert "@sensor function with a named parameter pattern" in text


def test_custom_sensor_step_with_a_named_parameter_maps() -> None:
    from cadenza.triggers.sensors import sensor

    @sensor(poke_interval=1)
    def table_ready(table: str) -> bool:
        return True

    @pipeline
    def wait_each() -> None:
        table_ready.as_task().expand(table=["a", "b"])

    node = wait_each.graph.nodes["table_ready"]
    assert node.mapped == ("table",)
    assert node.args == {"table": ["a", "b"]}


def test_expand_outside_a_pipeline_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="only meaningful inside a @pipeline"):
        square.expand(x=[1, 2])


# -- @task.branch -----------------------------------------------------------------------------
def test_task_branch_sets_is_branch_and_reads_targets_from_returns() -> None:
    assert gate.options.is_branch
    assert gate.branch_targets == ("deploy", "alert")
    assert not square.options.is_branch
    assert square.branch_targets == ()


def test_task_branch_reads_targets_from_every_return_list_and_conditional() -> None:
    @task.branch
    def choose(x: int) -> list[str] | str:
        if x > 1:
            return ["a", "b"]
        if x < 0:
            return ("c", "d")
        return "e" if x else "f"

    assert set(choose.branch_targets) == {"a", "b", "c", "d", "e", "f"}
    assert len(choose.branch_targets) == 6


def test_task_branch_with_options() -> None:
    @task.branch(retries=2)
    def pick() -> str:
        return "x"

    assert pick.options.is_branch
    assert pick.options.retries == 2
    assert pick.branch_targets == ("x",)


def test_branch_node_carries_its_targets() -> None:
    @pipeline
    def p(threshold: float = 0.5) -> None:
        g = gate({"auc": 1.0}, threshold)
        g >> [deploy({}), alert({})]

    node = p.graph.nodes["gate"]
    assert node.options.is_branch
    assert node.branch_targets == ("deploy", "alert")
    assert p.graph.downstream()["gate"] == ["deploy", "alert"]


# -- task options -----------------------------------------------------------------------------
class _Asset:
    def __init__(self, name: str) -> None:
        self.name = name


def _on_failure(*_: Any) -> None: ...


def _on_retry(*_: Any) -> None: ...


def _on_success(*_: Any) -> None: ...


def test_every_task_option_lands_in_task_options_with_its_unit() -> None:
    @task(
        retries=3,
        retry_delay=2.0,
        retry_backoff=2.0,
        max_retry_delay=60,
        retry_jitter=0.25,
        retry_on=(ConnectionError, TimeoutError),
        timeout=600,
        cache=True,
        cache_expiration=timedelta(hours=1),
        version=1,
        resources={"cpu": 2, "memory": "4GiB", "gpu": 1, "tpu": 2},
        pool="gpu",
        outlets=[_Asset("features/user"), "raw/events"],
        trigger_rule="all_done",
        requirements=["scikit-learn==1.5.2"],
        on_failure=_on_failure,
        on_retry=[_on_retry, _on_failure],
        on_success=_on_success,
    )
    def build() -> None: ...

    o = build.options
    assert o.retries == 3
    assert o.retry_delay_s == 2.0
    assert o.retry_backoff == 2.0
    assert o.max_retry_delay_s == 60.0
    assert o.retry_jitter == 0.25
    assert o.retry_on == (ConnectionError, TimeoutError)
    assert o.retry_on_names == {"builtins.ConnectionError", "builtins.TimeoutError"}
    assert o.timeout_s == 600.0
    assert o.cache is True
    assert o.cache_expiration_s == 3600.0
    assert o.version == "1"
    assert o.resources == Resources(cpu=2.0, memory_bytes=4 * GiB, gpu=1, custom={"tpu": 2.0})
    assert o.pool == "gpu"
    assert o.outlets == ("features/user", "raw/events")
    assert o.trigger_rule is TriggerRule.ALL_DONE
    assert o.requirements == ("scikit-learn==1.5.2",)
    assert o.on_failure == (_on_failure,)
    assert o.on_retry == (_on_retry, _on_failure)
    assert o.on_success == (_on_success,)
    assert build.problems == []


def test_task_option_defaults() -> None:
    o = square.options
    assert o.retries == 0
    assert o.retry_delay_s == 0.0
    assert o.retry_backoff == 1.0
    assert o.max_retry_delay_s is None
    assert o.retry_jitter == 0.0
    assert o.retry_on == ()
    assert o.timeout_s is None
    assert o.cache is False
    assert o.version is None
    assert o.resources.is_empty
    assert o.pool == "default"
    assert o.outlets == ()
    assert o.trigger_rule is TriggerRule.ALL_SUCCESS
    assert o.requirements == ()
    assert o.on_failure == o.on_retry == o.on_success == ()


def test_timedelta_options_become_seconds() -> None:
    @task(timeout=timedelta(minutes=10), retry_delay=timedelta(seconds=90),
          max_retry_delay=timedelta(hours=1))
    def slow() -> None: ...

    assert slow.options.timeout_s == 600.0
    assert slow.options.retry_delay_s == 90.0
    assert slow.options.max_retry_delay_s == 3600.0


def test_single_retry_on_class_is_wrapped_in_a_tuple() -> None:
    @task(retry_on=ConnectionError)
    def flaky() -> None: ...

    assert flaky.options.retry_on == (ConnectionError,)


def test_retry_jitter_true_means_ten_percent() -> None:
    @task(retry_jitter=True)
    def jittery() -> None: ...

    assert jittery.options.retry_jitter == 0.1


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("4GiB", 4 * GiB), ("512MB", 512 * 1000**2), ("1.5G", 1_500_000_000), (1024, 1024)],
)
def test_resources_memory_is_parsed_to_bytes(memory: Any, expected: int) -> None:
    @task(resources={"memory": memory})
    def heavy() -> None: ...

    assert heavy.options.resources.memory_bytes == expected


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries must be a whole number >= 0"),
        ({"retry_delay": -1}, "retry_delay must be >= 0 seconds"),
        ({"retry_backoff": 0.5}, "retry_backoff must be >= 1"),
        ({"retry_jitter": -0.1}, "retry_jitter must be >= 0"),
        ({"retry_on": (1,)}, "retry_on must list exception classes"),
        ({"timeout": 0}, "timeout must be > 0 seconds"),
        ({"resources": {"memory": "4XB"}}, "resources are not valid"),
        ({"resources": ["cpu"]}, "resources must be a dict"),
        ({"pool": 3}, "pool must be a pool name"),
        ({"trigger_rule": "all_dnoe"}, "unknown trigger_rule 'all_dnoe'"),
    ],
)
def test_bad_task_options_are_reported_by_the_pipeline_that_uses_the_task(
    options: dict[str, Any], fragment: str
) -> None:
    bad = task(**options)(lambda: None)  # decorating alone does not raise
    assert bad.problems

    with pytest.raises(DefinitionError) as info:

        @pipeline
        def uses_bad() -> None:
            bad()

    err = info.value
    assert err.pipeline == "uses_bad"
    assert len(err.problems) == 1
    assert err.problems[0].task == "<lambda>"
    assert fragment in str(err)
    assert "Fix: @task(" in str(err)


def test_unknown_task_option_is_reported_with_did_you_mean() -> None:
    with pytest.raises(DefinitionError) as info:

        @task(retires=3)
        def typo() -> None: ...

        @pipeline
        def uses_typo() -> None:
            typo()

    assert "retires" in str(info.value)
    assert "Did you mean 'retries'?" in str(info.value)


def test_non_numeric_retry_delay_is_a_definition_problem() -> None:
    with pytest.raises(DefinitionError) as info:

        @task(retry_delay="2s")
        def wrong_unit() -> None: ...

        @pipeline
        def uses_wrong_unit() -> None:
            wrong_unit()

    assert "retry_delay" in str(info.value)


def test_asset_is_importable_from_cadenza() -> None:
    from cadenza import Asset  # type: ignore[attr-defined]

    features = Asset("features/user")

    @task(outlets=[features])
    def build() -> None: ...

    assert build.options.outlets == ("features/user",)


# -- pipeline parameters ----------------------------------------------------------------------
@pipeline
def fraud_training(n: int = 1000, threshold: float = 0.88, tags: list[str] | None = None) -> None:
    df = load(n)
    results = train.partial(df=df).expand(config=[{"depth": d} for d in (3, 5, 7)])
    best = select_best(results)
    g = gate(best, threshold)
    g >> [deploy(best), alert(best)]
    [deploy, alert] >> cleanup()


@pipeline
def needs_seed(seed: int, rate: float = 0.1) -> None:
    load(seed)


def test_the_spec_example_pipeline_traces_to_the_expected_graph() -> None:
    g = fraud_training.graph
    assert list(g.nodes) == ["load", "train", "select_best", "gate", "deploy", "alert", "cleanup"]
    assert g.nodes["train"].mapped == ("config",)
    assert g.nodes["select_best"].data_upstream == ("train",)
    assert g.nodes["gate"].data_upstream == ("select_best",)
    assert set(g.nodes["cleanup"].upstream) == {"deploy", "alert"}
    assert g.nodes["cleanup"].options.trigger_rule is TriggerRule.ALL_DONE


def test_pipeline_parameters_come_from_the_signature() -> None:
    params = {p.name: p for p in fraud_training.params}
    assert list(params) == ["n", "threshold", "tags"]
    assert params["n"].annotation is int and params["n"].has_default and params["n"].default == 1000
    assert params["threshold"].annotation is float and params["threshold"].default == 0.88
    required = {p.name: p for p in needs_seed.params}["seed"]
    assert required.has_default is False


def test_pipeline_name_and_options() -> None:
    @pipeline(name="nightly", schedule="0 2 * * *", timezone="Europe/Paris", catchup=True,
              max_active_runs=2, sla=timedelta(hours=4), tags=["training"], start_date="2026-01-01")
    def p() -> None:
        """Nightly training."""
        load()

    assert p.name == "nightly"
    assert p.graph.name == "nightly"
    assert p.schedule == "0 2 * * *"
    assert p.timezone == "Europe/Paris"
    assert p.catchup is True
    assert p.max_active_runs == 2
    assert p.sla == timedelta(hours=4)
    assert p.tags == ("training",)
    assert p.start_date is not None and p.start_date.year == 2026
    assert p.description == "Nightly training."


def test_validate_params_fills_defaults() -> None:
    values, stored = fraud_training.validate_params({})
    assert values == {"n": 1000, "threshold": 0.88, "tags": None}
    assert stored == values


def test_validate_params_coerces_string_to_int() -> None:
    values, stored = fraud_training.validate_params({"n": "5", "threshold": "0.5"})
    assert values["n"] == 5 and type(values["n"]) is int
    assert values["threshold"] == 0.5
    assert stored["n"] == 5


def test_validate_params_wrong_type_names_pipeline_parameter_and_expected_type() -> None:
    with pytest.raises(ParameterError) as info:
        fraud_training.validate_params({"n": "many"})

    err = info.value
    text = str(err)
    assert err.pipeline == "fraud_training"
    assert "pipeline 'fraud_training'" in text
    assert "'n'" in text
    assert "'many'" in text
    assert err.hint == "'n' must be int"


def test_validate_params_missing_required_parameter() -> None:
    with pytest.raises(ParameterError) as info:
        needs_seed.validate_params({"rate": 0.2})

    assert "'seed'" in str(info.value)
    assert info.value.pipeline == "needs_seed"


def test_validate_params_unknown_parameter_suggests_the_near_miss() -> None:
    with pytest.raises(ParameterError) as info:
        fraud_training.validate_params({"threshhold": 0.9})

    err = info.value
    assert err.pipeline == "fraud_training"
    assert "unknown parameter 'threshhold'" in str(err)
    assert "Did you mean 'threshold'?" in str(err)
    assert "n, tags, threshold" in (err.hint or "")


def test_validate_params_returns_json_form_to_store() -> None:
    @pipeline
    def p(when: timedelta = timedelta(seconds=5)) -> None:
        load()

    values, stored = p.validate_params({})
    assert values["when"] == timedelta(seconds=5)
    assert isinstance(stored["when"], str)  # JSON form


def test_pipeline_called_with_positional_arguments_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="by name"):
        fraud_training(5)  # type: ignore[call-arg]


@pytest.mark.parametrize("given", [
    {}, {"n": 7}, {"n": True}, {"n": 7.0}, {"n": "7"}, {"ratio": 2}, {"ratio": 0.5},
    {"ratio": float("inf")}, {"ratio": float("nan")}, {"ratio": -0.0}, {"name": ""}, {"name": 5}, {"flag": 1}, {"flag": False},
    {"anything": None}, {"anything": [1, 2]}, {"anything": 3.5},
])
def test_plain_parameters_skip_pydantic_with_the_same_result(given: dict[str, Any]) -> None:
    """The fast path for str/int/float/bool parameters must agree with pydantic exactly."""
    @pipeline
    def p(n: int = 1, ratio: float = 0.25, name: str = "x", flag: bool = True,
          anything=None) -> None:  # type: ignore[no-untyped-def]
        load()

    from pydantic import ValidationError

    try:
        model = p.param_model.model_validate(dict(given))
    except ValidationError:
        with pytest.raises(ParameterError):
            p.validate_params(given)
        return
    values, stored = p.validate_params(given)
    expected = dict(model)
    assert values == expected
    assert [type(v) for v in values.values()] == [type(v) for v in expected.values()]
    assert stored == model.model_dump(mode="json")


def test_a_pipeline_of_plain_parameters_runs_without_importing_pydantic(tmp_path: Path) -> None:
    """pydantic costs ~0.1 s of a fresh process's start; plain parameters never need it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from cadenza import pipeline, task

        @task
        def hello(name: str, times: int) -> str:
            return name * times

        @pipeline
        def quick(name: str = "hi", times: int = 2, ratio: float = 0.5):
            hello(name, times)

        assert quick.validate_params({"times": 3})[1] == {"name": "hi", "times": 3, "ratio": 0.5}
        print("pydantic" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False"
