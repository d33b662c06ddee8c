"""The definition side of the task kinds (authoring/kinds.py): what goes into the cache key,
options per use, and settings checked at definition. Pure: nothing runs."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from cadenza import DefinitionError, pipeline, sql_task, task
from cadenza.authoring.kinds import KindTaskDef
from cadenza.core.errors import DatabaseUnavailable, HttpUnavailable
from cadenza.graph.fingerprint import task_fingerprint


def _node(pipe: Any, task_id: str) -> Any:
    return pipe.graph.nodes[task_id]


def _sql_pipeline(query: str, url: str = "sqlite://") -> Any:
    @pipeline
    def p():
        sql_task("q", url, query)

    return p


def test_the_sql_query_is_an_input_and_the_url_is_in_the_fingerprint() -> None:
    a = _node(_sql_pipeline("SELECT 1"), "q")
    assert a.args["query"] == "SELECT 1"  # hashed with the inputs: the cache key has it
    same = task_fingerprint(_node(_sql_pipeline("SELECT 2"), "q").fn)
    assert task_fingerprint(a.fn).values == same.values  # the query is not a setting
    other_db = task_fingerprint(_node(_sql_pipeline("SELECT 1", "sqlite:///x.db"), "q").fn)
    assert other_db.values != task_fingerprint(a.fn).values


def _build_v1(mode: str) -> Any:
    @task.shell(env={"MODE": mode})
    def build(n: int) -> str:
        return f"echo {n}"

    return build


def _build_v2(mode: str) -> Any:
    @task.shell(env={"MODE": mode})
    def build(n: int) -> str:
        return f"echo {n} twice"

    return build


def test_shell_settings_and_the_users_function_are_in_the_fingerprint() -> None:
    base = task_fingerprint(_build_v1("fast").fn)
    assert task_fingerprint(_build_v1("fast").fn) == base
    assert task_fingerprint(_build_v1("slow").fn).values != base.values  # env
    assert task_fingerprint(_build_v2("fast").fn).code != base.code  # the user's code
    assert sorted(base.values) == ["closure config", "closure kind"]
    built = _build_v1("fast")
    assert any(name.endswith("build") for name in base.functions), base.functions
    assert built.fn.__qualname__.endswith("build.<shell>") and built.name == "build"


def test_a_kind_keeps_the_users_signature_and_name() -> None:
    @task.shell(output="stdout", retries=2)
    def export(day: str, *, full: bool = False) -> str:
        """Export one day."""
        return f"./export.sh {day}"

    assert isinstance(export, KindTaskDef) and export.kind == "shell"
    assert list(inspect.signature(export.fn).parameters) == ["day", "full"]
    assert export.options.retries == 2 and export.__doc__ == "Export one day."
    assert export.fn_key.endswith(":test_a_kind_keeps_the_users_signature_and_name.<locals>"
                                  ".export.<shell>")


def test_with_options_changes_kind_settings_and_task_options() -> None:
    @task.shell(env={"A": "1"})
    def job() -> str:
        return "true"

    other = job.with_options(name="job_b", env={"A": "2"}, timeout=5)
    assert isinstance(other, KindTaskDef) and other.kind_options == {"env": {"A": "2"}}
    assert other.options.timeout_s == 5 and other.name == "job_b" and other.explicit_name
    assert task_fingerprint(other.fn).values != task_fingerprint(job.fn).values


def test_sql_and_http_retry_only_an_unavailable_service_unless_told() -> None:
    @task.sql(url="sqlite://", retries=3)
    def q() -> str:
        return "SELECT 1"

    @task.http(retries=3)
    def h() -> str:
        return "http://x"

    @task.sql(url="sqlite://", retries=3, retry_on=(ValueError,))
    def own() -> str:
        return "SELECT 1"

    assert q.options.retry_on == (DatabaseUnavailable,)
    assert h.options.retry_on == (HttpUnavailable,)
    assert own.options.retry_on == (ValueError,)


def test_every_bad_setting_is_reported_with_the_task_and_the_fix() -> None:
    @task.shell(output="all", cwd=3, shell="")
    def s() -> str:
        return "true"

    @task.http(method="FETCH", headers={"X": 1}, output="xml", request_timeout=-1)
    def h() -> str:
        return "http://x"

    with pytest.raises(DefinitionError) as info:
        @pipeline
        def wrong():
            s()
            h()
            sql_task("q", "", "SELECT 1")
            sql_task("e", "sqlite://", None)

    lines = [p.render() for p in info.value.problems]
    text = "\n".join(lines)
    for expected in ("task 's': output must be one of", "task 's': cwd must be a folder path",
                     "task 's': shell must be the path of a shell",
                     "task 'h': method must be one of", "task 'h': headers must be a dict",
                     "task 'h': output must be one of json, text, none",
                     "task 'h': request_timeout must be", "task 'q': a SQL task needs url=",
                     "task 'e': sql_task needs a query"):
        assert expected in text, text
    assert all("Fix:" in line or "\n" in line for line in lines)


def test_a_kind_with_bad_settings_refuses_to_run_outside_a_pipeline() -> None:
    @task.shell(output="all")
    def s() -> str:
        return "true"

    with pytest.raises(DefinitionError, match="output must be one of"):
        s()
