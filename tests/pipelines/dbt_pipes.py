"""Pipelines around the dbt_shop project (tests/integration/test_dbt.py).

Made by functions: each test runs dbt on its own copy of the project and its own schema,
known only when the test starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadenza import PipelineDef, dbt_task, pipeline, task


@task
def totals_seen(result: dict[str, Any]) -> list[str]:
    """Downstream of dbt: the models dbt reported built."""
    return sorted(k for k, v in result["nodes"].items() if k.startswith("model.") and
                  v == "success")


def build(project: Path, profiles: Path, **options: Any) -> PipelineDef:
    @pipeline(name="dbt_shop")
    def dbt_shop() -> None:
        totals_seen(dbt_task(project, profiles_dir=profiles, **options))

    return dbt_shop


def parse(project: Path, profiles: Path) -> PipelineDef:
    @pipeline(name="dbt_shop_parse")
    def dbt_shop_parse() -> None:
        dbt_task(project, profiles_dir=profiles, command="parse")

    return dbt_shop_parse


@task
def report(results: list[dict[str, Any]]) -> int:
    return len(results)


def expanded(project: Path, profiles: Path, **options: Any) -> PipelineDef:
    @pipeline(name="dbt_shop_models")
    def dbt_shop_models() -> None:
        models = dbt_task(project, profiles_dir=profiles, expand_models=True, **options)
        report(models)

    return dbt_shop_models
