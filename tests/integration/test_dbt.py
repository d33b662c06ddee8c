"""dbt tasks against the real PostgreSQL (127.0.0.1:5432, db `test`, a schema per test).

dbt-core and dbt-postgres run in the task's own uv environment (their pins clash with
Cadenza's), built once per pytest run from PyPI (`kind_envs`), so these are slow. What
would fail if it broke: dbt not invoked or its results misread (the tables and the node
statuses are checked in the database and the output), a failing dbt test not failing the
task or not named in the error, resume rerunning what succeeded, the retry policy for an
unreachable warehouse, cache keys not following the project's files, expand_models' graph.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.store import open_store
from tests.fixtures.kinds import ShopProject, write_profile
from tests.pipelines import dbt_pipes

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def error_of(settings: Settings, run_id: str, task_id: str):  # type: ignore[no-untyped-def]
    ti = next(t for t in open_store(settings.database_url).get_task_instances(run_id)
              if t.task_id == task_id)
    assert ti.error is not None, ti
    return ti.error


def attempts_of(settings: Settings, run_id: str, task_id: str) -> int:
    return sum(a.task_id == task_id
               for a in open_store(settings.database_url).get_attempts(run_id))


def test_build_creates_the_models_and_reports_every_node(
        sqlite_env: Settings, shop_project: ShopProject) -> None:
    result = dbt_pipes.build(shop_project.project, shop_project.profiles).run(
        executor="processes")
    assert result.state == "success", result.failed
    nodes = result.outputs["dbt"]["nodes"]
    assert nodes["model.shop.stg_orders"] == "success"
    assert nodes["model.shop.customer_totals"] == "success"
    assert sorted(v for k, v in nodes.items() if k.startswith("test.")) == ["pass"] * 4
    assert result.outputs["totals_seen"] == ["model.shop.customer_totals",
                                             "model.shop.stg_orders"]
    rows = shop_project.warehouse.execute(
        "SELECT customer_id, orders, total FROM {schema}.customer_totals ORDER BY 1")
    assert [(c, n, float(t)) for c, n, t in rows] == [(1, 2, 15.5), (2, 1, 7.0)]


def test_a_failing_dbt_test_fails_the_task_naming_it_and_resume_reruns_only_dbt(
        sqlite_env: Settings, shop_project: ShopProject) -> None:
    shop_project.warehouse.execute(
        "INSERT INTO {schema}.raw_orders VALUES (5, 4, -80, 'refund')")
    pipe = dbt_pipes.build(shop_project.project, shop_project.profiles)
    first = pipe.run(executor="processes")
    assert first.state == "failed"
    assert first.task_states["totals_seen"] is TaskState.UPSTREAM_FAILED
    error = error_of(sqlite_env, first.run_id, "dbt")
    assert error.type.endswith("DbtFailed")
    assert "pipeline 'dbt_shop', task 'dbt'" in error.message
    assert "test no_negative_totals failed (1 failing row)" in error.message
    assert "Fix: see the failing rows with `dbt build --select no_negative_totals" in error.message
    assert error.traceback == ""  # a user's data problem: the message says it all

    shop_project.warehouse.execute("DELETE FROM {schema}.raw_orders WHERE amount < 0")
    second = first.resume()
    assert second.state == "success", second.failed
    assert second.outputs["totals_seen"] == ["model.shop.customer_totals",
                                             "model.shop.stg_orders"]
    assert attempts_of(sqlite_env, first.run_id, "dbt") == 2


def test_an_unreachable_warehouse_is_retried_and_a_broken_model_is_not(
        sqlite_env: Settings, shop_project: ShopProject, tmp_path: Path) -> None:
    wh = shop_project.warehouse
    role = f"cz_{secrets.token_hex(4)}"
    wh.execute(f'CREATE ROLE "{role}" NOLOGIN')
    wh.execute(f'GRANT ALL ON SCHEMA {{schema}} TO "{role}"')
    wh.execute(f'GRANT SELECT ON {{schema}}.raw_orders TO "{role}"')
    profiles = write_profile(tmp_path / "role-profiles", wh.schema, user=role)

    def let_in(ctx: object) -> None:  # the warehouse "comes back" once the retry is recorded
        wh.execute(f'ALTER ROLE "{role}" LOGIN')

    try:
        result = dbt_pipes.build(shop_project.project, profiles, retries=3, retry_delay=1,
                                 on_retry=let_in).run(executor="threads")
        assert result.state == "success", result.failed
        attempts = [a for a in open_store(sqlite_env.database_url).get_attempts(result.run_id)
                    if a.task_id == "dbt"]
        assert [a.attempt for a in attempts] == [1, 2]
        first = next(a for a in attempts if a.attempt == 1)
        assert first.error is not None and first.error.type.endswith("DbtUnavailable")
        assert "dbt could not connect to the warehouse" in first.error.message
    finally:
        wh.execute(f'DROP SCHEMA IF EXISTS {{schema}} CASCADE; DROP ROLE IF EXISTS "{role}"')

    # A model that does not compile fails at once: DbtFailed is not retried by default.
    (shop_project.project / "models" / "broken.sql").write_text(
        "select * from {{ ref('no_such_model') }}\n")
    broken = dbt_pipes.build(shop_project.project, shop_project.profiles, retries=3,
                             retry_delay=1).run(executor="threads")
    assert broken.state == "failed"
    assert attempts_of(sqlite_env, broken.run_id, "dbt") == 1
    error = error_of(sqlite_env, broken.run_id, "dbt")
    assert "dbt build could not run" in error.message and "no_such_model" in error.message


def test_cache_hits_until_a_model_file_changes(
        sqlite_env: Settings, shop_project: ShopProject) -> None:
    first = dbt_pipes.build(shop_project.project, shop_project.profiles, cache=True).run(
        executor="processes")
    assert first.task_states["dbt"] is TaskState.SUCCESS, first.failed
    again = dbt_pipes.build(shop_project.project, shop_project.profiles, cache=True).run(
        executor="processes")
    assert again.task_states["dbt"] is TaskState.CACHED
    assert again.outputs["dbt"] == first.outputs["dbt"]

    model = shop_project.project / "models" / "marts" / "customer_totals.sql"
    model.write_text(model.read_text().replace("sum(amount) as total",
                                               "sum(amount) as total, max(amount) as biggest"))
    edited = dbt_pipes.build(shop_project.project, shop_project.profiles, cache=True).run(
        executor="processes")
    assert edited.task_states["dbt"] is TaskState.SUCCESS, edited.failed
    columns = shop_project.warehouse.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'customer_totals' ORDER BY column_name", (shop_project.warehouse.schema,))
    assert [c for (c,) in columns] == ["biggest", "customer_id", "orders", "total"]


def test_expand_models_runs_one_task_per_model_in_dependency_order(
        sqlite_env: Settings, shop_project: ShopProject) -> None:
    parsed = dbt_pipes.parse(shop_project.project, shop_project.profiles).run(
        executor="threads")
    assert parsed.state == "success", parsed.failed
    assert (shop_project.project / "target" / "manifest.json").is_file()

    pipe = dbt_pipes.expanded(shop_project.project, shop_project.profiles)
    graph = pipe.plan.graph
    assert set(graph.nodes) == {"dbt_stg_orders", "dbt_customer_totals", "report"}
    assert "dbt_stg_orders" in graph.nodes["dbt_customer_totals"].upstream

    shop_project.warehouse.execute(
        "INSERT INTO {schema}.raw_orders VALUES (5, 4, -80, 'refund')")
    failed = pipe.run(executor="processes")
    assert failed.task_states["dbt_stg_orders"] is TaskState.SUCCESS
    assert failed.task_states["dbt_customer_totals"] is TaskState.FAILED
    assert "test no_negative_totals failed" in error_of(
        sqlite_env, failed.run_id, "dbt_customer_totals").message
    # stg_orders' own tests ran with it, and only its: the mart's test ran in the mart's task.
    assert sorted(failed.outputs["dbt_stg_orders"]["nodes"]) == [
        "model.shop.stg_orders", *sorted(k for k in failed.outputs["dbt_stg_orders"]["nodes"]
                                         if k.startswith("test.shop.") and "stg_orders" in k)]

    shop_project.warehouse.execute("DELETE FROM {schema}.raw_orders WHERE amount < 0")
    resumed = failed.resume()
    assert resumed.state == "success", resumed.failed
    assert resumed.outputs["report"] == 2
    assert attempts_of(sqlite_env, failed.run_id, "dbt_stg_orders") == 1
