"""Validation at definition (SPEC §1, STYLE §5): defining a pipeline raises one DefinitionError
that names the pipeline, the task and the fix, and lists every problem at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from cadenza import DefinitionError, pipeline, task
from cadenza.core.errors import CadenzaError
from cadenza.core.suggest import did_you_mean
from cadenza.graph.model import PipelineGraph, TaskNode
from cadenza.graph.validate import find_cycle, topological_order, validate_graph


@task
def extract(n: int = 1) -> int:
    return n


@task
def transform(x: int, y: int = 0) -> int:
    return x + y


@task
def report() -> None: ...


@task.branch
def gate(x: int) -> str:
    return "deplyo" if x else "alert"


@task.branch
def far_gate(x: int) -> str:
    return "zzzz_unrelated"


@task
def deploy() -> None: ...


@task
def alert() -> None: ...


@task(trigger_rule="all_dnoe")
def cleanup() -> None: ...


def define(body: Callable[..., Any], **options: Any) -> DefinitionError:
    """Define a pipeline from `body` and return the DefinitionError it must raise."""
    with pytest.raises(DefinitionError) as info:
        pipeline(**options)(body)
    return info.value


# -- the error itself -------------------------------------------------------------------------
def test_definition_error_is_a_cadenza_error_with_pipeline_task_and_hint() -> None:
    def broken() -> None:
        cleanup()

    err = define(broken)
    assert isinstance(err, CadenzaError)
    assert err.pipeline == "broken"
    assert err.task == "cleanup"
    assert err.hint and "all_done" in err.hint
    assert err.to_dict()["pipeline"] == "broken"
    text = str(err)
    assert text.startswith("1 problem in pipeline 'broken':")
    assert "task 'cleanup':" in text
    assert "Fix:" in text


# -- cycles -----------------------------------------------------------------------------------
def test_cycle_names_the_tasks_on_it_and_the_fix() -> None:
    def loop() -> None:
        a = extract()
        b = transform(a)
        c = report()
        d = deploy()  # not on the cycle
        b >> c
        c >> a
        a >> d

    err = define(loop)
    text = str(err)
    assert "pipeline 'loop'" in text
    assert "the tasks form a cycle: extract -> transform -> report -> extract" in text
    assert "deploy" not in text
    assert "remove one of the >> dependencies on that cycle" in text
    assert err.task == "extract"


def test_two_task_cycle_through_rshift() -> None:
    def ping_pong() -> None:
        a, b = extract(), report()
        a >> b
        b >> a

    text = str(define(ping_pong))
    assert "cycle" in text
    assert "extract -> report -> extract" in text


def test_task_depending_on_itself_is_reported() -> None:
    def selfish() -> None:
        a = extract()
        a >> a

    err = define(selfish)
    assert "task 'extract': depends on itself (a >> a)" in str(err)
    assert "remove that >>" in str(err)


# -- branches ---------------------------------------------------------------------------------
def test_unknown_branch_target_suggests_the_near_miss() -> None:
    def branchy() -> None:
        g = gate(1)
        g >> [deploy(), alert()]

    err = define(branchy)
    text = str(err)
    assert len(err.problems) == 1
    assert "pipeline 'branchy'" in text
    assert "task 'gate'" in text
    assert "branch can return 'deplyo'" in text
    assert "(deploy, alert)" in text
    assert "Did you mean 'deploy'?" in text
    assert "Fix: return the id of a direct downstream task" in text


def test_unknown_branch_target_without_near_miss_has_no_suggestion() -> None:
    def branchy() -> None:
        g = far_gate(1)
        g >> [deploy(), alert()]

    text = str(define(branchy))
    assert "branch can return 'zzzz_unrelated'" in text
    assert "Did you mean" not in text


def test_branch_target_that_is_only_an_indirect_downstream_is_reported() -> None:
    @task.branch
    def pick() -> str:
        return "alert"

    def indirect() -> None:
        g = pick()
        d = deploy()
        g >> d
        d >> alert()

    text = str(define(indirect))
    assert "branch can return 'alert', which is not one of its direct downstream tasks (deploy)" in text


def test_branch_with_no_downstream_is_reported() -> None:
    def lonely() -> None:
        gate(1)

    text = str(define(lonely))
    assert "task 'gate': is a @task.branch with no downstream tasks" in text


def test_branch_whose_targets_are_its_downstreams_is_valid() -> None:
    @task.branch
    def pick(x: int) -> str:
        return "deploy" if x else "alert"

    @pipeline
    def ok() -> None:
        g = pick(1)
        g >> [deploy(), alert()]

    assert ok.graph.nodes["pick"].branch_targets == ("deploy", "alert")


# -- names ------------------------------------------------------------------------------------
def test_duplicate_explicit_names_are_reported() -> None:
    def dupes() -> None:
        extract.with_options(name="step")()
        report.with_options(name="step")()

    err = define(dupes)
    text = str(err)
    assert "task 'step': two tasks are named 'step' in this pipeline" in text
    assert 'task.with_options(name="...")' in text


def test_same_explicit_name_used_twice_is_reported() -> None:
    def twice() -> None:
        big = extract.with_options(name="extract_big")
        big()
        big()

    assert "two tasks are named 'extract_big'" in str(define(twice))


def test_explicit_name_clashing_with_an_auto_id_is_reported() -> None:
    def clash() -> None:
        extract()
        report.with_options(name="extract")()

    assert "two tasks are named 'extract'" in str(define(clash))


# -- parameters -------------------------------------------------------------------------------
def test_lambda_default_cannot_be_stored() -> None:
    def lam(fn: Any = lambda: 1) -> None:
        extract()

    err = define(lam)
    text = str(err)
    assert "pipeline 'lam'" in text
    assert "default for parameter 'fn' is a lambda, which cannot be stored with the run" in text
    assert "use a JSON-serialisable default" in text


def test_function_default_cannot_be_stored() -> None:
    def helper() -> int:
        return 1

    def fn_default(fn: Any = helper) -> None:
        extract()

    assert "default for parameter 'fn' is a function" in str(define(fn_default))


def test_object_default_cannot_be_stored() -> None:
    def obj(thing: Any = object()) -> None:  # noqa: B008
        extract()

    text = str(define(obj))
    assert "default for parameter 'thing'" in text
    assert "cannot be stored with the run" in text
    assert "make the parameter required" in text


def test_json_friendly_defaults_are_accepted() -> None:
    @pipeline
    def fine(n: int = 1, rate: float = 0.5, name: str = "x", cfg: dict = {"a": [1]},  # noqa: B006
             xs: list[int] = [1, 2], flag: bool = True, opt: int | None = None) -> None:  # noqa: B006
        extract(n)

    assert [p.name for p in fine.params] == ["n", "rate", "name", "cfg", "xs", "flag", "opt"]


def test_default_of_the_wrong_type_names_parameter_and_type() -> None:
    def wrong(n: int = "many") -> None:  # type: ignore[assignment]
        extract(n)

    text = str(define(wrong))
    assert "pipeline 'wrong'" in text
    assert "default for parameter 'n' ('many') does not match its type int" in text
    assert "make the default of type int, or fix the annotation" in text


def test_default_of_the_wrong_container_type() -> None:
    def wrong(xs: list[int] = "abc") -> None:  # type: ignore[assignment]
        extract()

    assert "default for parameter 'xs'" in str(define(wrong))


def test_var_args_parameters_are_rejected() -> None:
    def star(*args: Any) -> None:
        extract()

    assert "parameter *args is not supported" in str(define(star))


# -- schedules --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("* * *", "schedule '* * *' has 3 fields; cron needs 5"),
        ("0 2 * * * *", "schedule '0 2 * * * *' has 6 fields; cron needs 5"),
        ("61 * * * *", "schedule '61 * * * *' is not a valid cron expression"),
        ("0 25 * * *", "schedule '0 25 * * *' is not a valid cron expression"),
        ("@hourlyy", "unknown schedule preset '@hourlyy'"),
        (timedelta(0), "schedule interval must be positive"),
        (3600, "schedule must be a cron string, a preset or a timedelta, got int"),
    ],
)
def test_bad_schedule_is_reported_with_the_fix(schedule: Any, fragment: str) -> None:
    def scheduled() -> None:
        extract()

    err = define(scheduled, schedule=schedule)
    text = str(err)
    assert "pipeline 'scheduled'" in text
    assert fragment in text
    assert "Fix:" in text


def test_unknown_preset_lists_the_valid_presets() -> None:
    def scheduled() -> None:
        extract()

    text = str(define(scheduled, schedule="@fortnightly"))
    assert "@hourly" in text and "@daily" in text and "@weekly" in text


@pytest.mark.parametrize(
    "schedule", ["0 2 * * *", "*/5 * * * 1-5", "@daily", "@hourly", "@yearly", timedelta(hours=1), None]
)
def test_valid_schedules_are_accepted(schedule: Any) -> None:
    @pipeline(schedule=schedule)
    def scheduled() -> None:
        extract()

    assert scheduled.schedule == schedule


# -- trigger rules ----------------------------------------------------------------------------
def test_bad_trigger_rule_suggests_the_near_miss() -> None:
    def rules() -> None:
        cleanup()

    err = define(rules)
    text = str(err)
    assert "task 'cleanup': unknown trigger_rule 'all_dnoe'. Did you mean 'all_done'?" in text
    assert 'Fix: @task(trigger_rule="all_done")' in text
    assert "Valid rules: all_success, all_failed, all_done" in text


def test_bad_trigger_rule_through_with_options() -> None:
    def rules() -> None:
        extract.with_options(trigger_rule="one_sucess")()

    text = str(define(rules))
    assert "unknown trigger_rule 'one_sucess'. Did you mean 'one_success'?" in text


# -- timezone and other pipeline options ------------------------------------------------------
def test_bad_timezone_is_reported() -> None:
    def zoned() -> None:
        extract()

    err = define(zoned, timezone="Mars/Olympus")
    text = str(err)
    assert "pipeline 'zoned'" in text
    assert "unknown timezone 'Mars/Olympus'" in text
    assert "IANA name" in text


def test_non_string_timezone_is_a_definition_error() -> None:
    def zoned() -> None:
        extract()

    text = str(define(zoned, timezone=None))
    assert "timezone" in text


def test_unknown_pipeline_option_suggests_the_near_miss() -> None:
    def opts() -> None:
        extract()

    text = str(define(opts, schedual="@daily"))
    assert "unknown option 'schedual'. Did you mean 'schedule'?" in text


def test_bad_start_date_is_reported() -> None:
    def dated() -> None:
        extract()

    assert "start_date 'yesterday' is not a date" in str(define(dated, start_date="yesterday"))


def test_bad_max_active_runs_is_reported() -> None:
    def limited() -> None:
        extract()

    assert "max_active_runs must be >= 1, got 0" in str(define(limited, max_active_runs=0))


# -- several at once --------------------------------------------------------------------------
def test_every_problem_is_reported_at_once() -> None:
    def messy(n: int = "x", fn: Any = lambda: 0) -> None:  # type: ignore[assignment]
        cleanup()
        g = gate(1)
        g >> [deploy(), alert()]
        transform()  # missing x

    err = define(messy, schedule="61 * * * *", timezone="Nowhere/Else")
    text = str(err)
    assert len(err.problems) == 7
    assert text.startswith("7 problems in pipeline 'messy':")
    for fragment in (
        "is not a valid cron expression",
        "unknown timezone 'Nowhere/Else'",
        "default for parameter 'n'",
        "default for parameter 'fn' is a lambda",
        "unknown trigger_rule 'all_dnoe'",
        "branch can return 'deplyo'",
        "task 'transform': cannot be called this way",
    ):
        assert fragment in text, fragment


def test_same_task_problem_is_reported_once_even_if_the_task_is_used_twice() -> None:
    def twice() -> None:
        cleanup()
        cleanup()

    err = define(twice)
    assert len(err.problems) == 1


# -- using values that do not exist yet -------------------------------------------------------
def test_ref_used_as_a_bool_is_a_clear_definition_error() -> None:
    def cond() -> None:
        r = extract()
        if r:
            report()

    err = define(cond)
    text = str(err)
    assert "pipeline 'cond'" in text
    assert "used the output of task 'extract' as a condition inside the pipeline body" in text
    assert "@task.branch" in text


def test_iterating_a_ref_is_a_clear_definition_error() -> None:
    def loop() -> None:
        for x in extract():
            transform(x)

    text = str(define(loop))
    assert "iterated over the output of task 'extract'" in text
    assert "it runs nothing" in text


def test_len_of_a_ref_is_a_clear_definition_error() -> None:
    def size() -> None:
        len(extract())

    assert "took len() of the output of task 'extract'" in str(define(size))


def test_param_used_as_a_bool_is_a_clear_definition_error() -> None:
    def cond(flag: bool = True) -> None:
        if flag:
            extract()

    text = str(define(cond))
    assert "used parameter 'flag' as a condition" in text


def test_iterating_a_param_is_a_clear_definition_error() -> None:
    def loop(xs: list[int] = [1]) -> None:  # noqa: B006
        for x in xs:
            extract(x)

    assert "iterated over parameter 'xs'" in str(define(loop))


@pytest.mark.parametrize(
    "op",
    [
        lambda n: n + 1,
        lambda n: 1 + n,
        lambda n: n * 2,
        lambda n: n - 1,
        lambda n: n / 2,
        lambda n: n // 2,
        lambda n: n % 2,
        lambda n: n**2,
        lambda n: n > 3,
        lambda n: n[0],
    ],
)
def test_computing_with_a_param_is_a_clear_definition_error(op: Callable[[Any], Any]) -> None:
    def arith(n: int = 1) -> None:
        extract(op(n))

    err = define(arith)
    text = str(err)
    assert "pipeline 'arith'" in text
    assert "computed with parameter 'n' inside the pipeline body" in text
    assert "do this inside a @task" in text


def test_comparing_a_param_for_equality_is_a_clear_definition_error() -> None:
    def cond(n: int = 5) -> None:
        if n == 5:
            extract()
        report()

    define(cond)


def test_other_exceptions_in_the_body_become_definition_errors() -> None:
    def boom() -> None:
        extract()
        raise KeyError("nope")

    text = str(define(boom))
    assert "the pipeline body raised KeyError" in text
    assert "compute values inside tasks" in text


def test_body_without_tasks_is_reported() -> None:
    def empty() -> None:
        pass

    assert "the pipeline body calls no task" in str(define(empty))


# -- call signatures --------------------------------------------------------------------------
def test_missing_argument_names_the_task_and_its_parameters() -> None:
    def missing() -> None:
        transform()

    err = define(missing)
    text = str(err)
    assert "task 'transform': cannot be called this way: missing a required argument: 'x'" in text
    assert "its parameters are (x, y)" in text


def test_extra_positional_argument_is_reported() -> None:
    def extra() -> None:
        extract(1, 2)

    assert "task 'extract': cannot be called this way: too many positional arguments" in str(define(extra))


def test_unexpected_keyword_argument_is_reported() -> None:
    def extra() -> None:
        transform(1, z=2)

    assert "got an unexpected keyword argument 'z'" in str(define(extra))


def test_wrong_call_in_a_repeated_task_names_the_use() -> None:
    def repeated() -> None:
        extract()
        extract(1, 2)

    assert "task 'extract__1': cannot be called this way" in str(define(repeated))


def test_passing_a_task_itself_instead_of_its_output_is_reported() -> None:
    def uncalled() -> None:
        transform(extract)

    text = str(define(uncalled))
    assert "passes the task 'extract' itself as an argument" in text
    assert "call it to use its output: extract(...)" in text


def test_ref_from_another_pipeline_is_reported() -> None:
    stash: dict[str, Any] = {}

    @pipeline
    def first() -> None:
        stash["ref"] = extract()

    def second() -> None:
        report()
        transform(stash["ref"])

    text = str(define(second))
    assert "uses the output of 'extract' from another pipeline" in text


# -- graph helpers, directly ------------------------------------------------------------------
def _node(nid: str, *, data: tuple[str, ...] = (), order: tuple[str, ...] = ()) -> TaskNode:
    return TaskNode(id=nid, task_name=nid, fn=lambda: None, fn_key=f"m:{nid}", args={},
                    call_kinds={}, data_upstream=data, order_upstream=order)


def test_validate_graph_reports_an_unknown_upstream_with_did_you_mean() -> None:
    graph = PipelineGraph(name="hand", nodes={"load": _node("load"),
                                              "fit": _node("fit", data=("laod",))})
    with pytest.raises(DefinitionError) as info:
        validate_graph(graph)
    text = str(info.value)
    assert "task 'fit': depends on 'laod', which is not part of this pipeline. Did you mean 'load'?" in text


def test_validate_graph_passes_a_valid_graph_and_adds_extra_problems() -> None:
    graph = PipelineGraph(name="hand", nodes={"a": _node("a"), "b": _node("b", order=("a",))})
    validate_graph(graph)  # no error
    from cadenza.core.errors import Problem

    with pytest.raises(DefinitionError) as info:
        validate_graph(graph, [Problem(message="extra", task="a", hint="fix it")])
    assert info.value.problems == [Problem(message="extra", task="a", hint="fix it")]


def test_find_cycle_returns_none_on_a_dag_and_the_cycle_otherwise() -> None:
    dag = PipelineGraph(name="g", nodes={"a": _node("a"), "b": _node("b", data=("a",)),
                                         "c": _node("c", order=("a", "b"))})
    assert find_cycle(dag) is None
    cyclic = PipelineGraph(name="g", nodes={"a": _node("a", order=("c",)), "b": _node("b", data=("a",)),
                                            "c": _node("c", order=("b",))})
    cycle = find_cycle(cyclic)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_topological_order_respects_dependencies_and_definition_order() -> None:
    graph = PipelineGraph(name="g", nodes={
        "c": _node("c", data=("a",)),
        "a": _node("a"),
        "b": _node("b"),
        "d": _node("d", order=("c", "b")),
    })
    assert topological_order(graph) == ["a", "b", "c", "d"]


def test_did_you_mean() -> None:
    assert did_you_mean("all_dnoe", ["all_done", "all_success"]) == " Did you mean 'all_done'?"
    assert did_you_mean("xyz", ["all_done"]) == ""
    assert did_you_mean("x", []) == ""
    # the closest wins; tuples and other sequences are accepted as choices
    assert did_you_mean("sucess", ("success", "skipped", "failed")) == " Did you mean 'success'?"
