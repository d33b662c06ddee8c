"""Definition-time behaviour of the dbt, Spark and Feast task kinds: problems found when the
pipeline is defined (all at once, naming the task and the fix), dbt manifest order, the
per-task environments they ask for, and that `import cadenza` imports none of their tools.
No dbt, JVM or Feast runs here (tests/integration/test_dbt.py, test_spark.py, test_feast.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cadenza import DefinitionError, dbt_task, feast_materialize, pipeline, task
from cadenza.integrations.dbt.manifest import ManifestError, read_nodes
from cadenza.integrations.dbt.tasks import DBT_REQUIREMENTS

SHOP = Path(__file__).resolve().parents[1] / "pipelines" / "dbt_shop"


def test_problems_of_every_kind_are_listed_at_once(tmp_path: Path) -> None:
    @task.spark
    def no_session(n: int = 1) -> int:
        return n

    with pytest.raises(DefinitionError) as info:
        @pipeline
        def broken() -> None:
            dbt_task(tmp_path / "nowhere", command="buidl")
            feast_materialize(tmp_path / "no_repo", start="2026-01-01", end="2026-01-02")
            no_session()

    text = str(info.value)
    assert "4 problems" in text and "a parameter named 'spark'" in text
    assert "problems in pipeline 'broken'" in text
    assert f"no dbt project at {tmp_path / 'nowhere'}" in text
    assert "unknown dbt command 'buidl'. Did you mean 'build'?" in text
    assert "no Feast repository at" in text


def test_a_spark_function_without_a_session_parameter_is_a_definition_problem() -> None:
    @task.spark
    def count(n: int) -> int:
        return n

    with pytest.raises(DefinitionError) as info:
        @pipeline
        def uses_it() -> None:
            count(3)

    assert "takes the SparkSession as a parameter named 'spark'" in str(info.value)
    assert "def count(spark, ...)" in str(info.value)


def test_a_spark_task_shows_the_graph_the_function_minus_its_session() -> None:
    @task.spark(master="local[1]", retries=2)
    def totals(spark: Any, day: str, limit: int = 5) -> Any:
        return spark.range(limit)

    @pipeline
    def nightly(day: str = "2026-01-01") -> None:
        totals(day)

    node = nightly.plan.graph.nodes["totals"]
    assert list(node.call_kinds) == ["day", "limit"]
    assert node.options.retries == 2
    assert repr(totals) == "<spark task 'totals'>"
    assert totals.with_options(master="local[2]").spark_options["master"] == "local[2]"


def test_dbt_tasks_run_in_their_own_environment_and_retry_only_an_unreachable_warehouse() -> None:
    @pipeline
    def warehouse() -> None:
        dbt_task(SHOP, select="staging", retries=2)
        dbt_task(SHOP, requirements=[], name="local_dbt")

    nodes = warehouse.plan.graph.nodes
    assert nodes["dbt"].options.requirements == tuple(sorted(DBT_REQUIREMENTS))
    assert [t.__name__ for t in nodes["dbt"].options.retry_on] == ["DbtUnavailable"]
    assert nodes["local_dbt"].options.requirements == ()


def test_expand_models_needs_a_manifest_and_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as info:
        @pipeline
        def models() -> None:
            dbt_task(SHOP, manifest_path=tmp_path / "manifest.json", expand_models=True)

    assert "expand_models=True needs the project's manifest.json" in str(info.value)
    assert "dbt parse --project-dir" in str(info.value)


def _manifest(tmp_path: Path) -> Path:
    def node(kind: str, name: str, ups: list[str], checksum: str) -> dict[str, Any]:
        return {"resource_type": kind, "name": name, "package_name": "shop",
                "unique_id": f"{kind}.shop.{name}", "depends_on": {"nodes": ups},
                "checksum": {"checksum": checksum}}

    nodes = [node("model", "orders", ["seed.shop.raw", "source.shop.x"], "a"),
             node("seed", "raw", [], "b"),
             node("model", "totals", ["model.shop.orders"], "c"),
             node("model", "alpha", [], "d"),
             node("test", "not_null_totals", ["model.shop.totals"], "e")]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"metadata": {"project_name": "shop"},
                                "nodes": {n["unique_id"]: n for n in nodes}}))
    return path


def test_manifest_nodes_come_in_dependency_order_with_tests_in_their_digest(
        tmp_path: Path) -> None:
    nodes = read_nodes(_manifest(tmp_path))
    assert [n.name for n in nodes] == ["alpha", "raw", "orders", "totals"]
    by_name = {n.name: n for n in nodes}
    assert by_name["orders"].upstream == ("seed.shop.raw",)  # sources are not tasks
    path = _manifest(tmp_path)
    data = json.loads(path.read_text())
    data["nodes"]["test.shop.not_null_totals"]["checksum"]["checksum"] = "changed"
    path.write_text(json.dumps(data))
    again = {n.name: n for n in read_nodes(path)}
    assert again["totals"].digest != by_name["totals"].digest  # its test changed
    assert again["orders"].digest == by_name["orders"].digest
    with pytest.raises(ManifestError, match="not a dbt manifest"):
        path.write_text("{}")
        read_nodes(path)


def test_import_cadenza_imports_no_tool_of_these_kinds() -> None:
    code = ("import sys, cadenza\n"
            "print([m for m in ('pyspark', 'dbt', 'feast', 'cadenza.integrations.spark',"
            " 'cadenza.integrations.dbt', 'cadenza.integrations.feast') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_an_exception_whose_str_fails_still_makes_an_outcome() -> None:
    """pyspark's errors ask the JVM for their text; once it is gone str() raises. The attempt
    must still be reported (the threads executor would otherwise wait for it forever)."""
    from cadenza.executors.base import describe_exception

    class AsksAServiceThatIsGone(Exception):
        def __str__(self) -> str:
            raise AssertionError("SparkContext._jvm is None")

    info = describe_exception(AsksAServiceThatIsGone())
    assert info.message.startswith("AsksAServiceThatIsGone (its message could not be read")
    assert info.type.endswith("AsksAServiceThatIsGone")
