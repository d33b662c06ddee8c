"""`@task.sql` and `sql_task` (SPEC §9) against the real PostgreSQL and MariaDB: a SELECT's
rows as a DataFrame (Parquet in the artifact store), rows changed by DML, failures that name
the query and are not retried, an unreachable database that is, URLs from secrets and
environment variables (never shown unmasked), the query text and params in the cache key,
and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cadenza import DefinitionError, RunState, TaskState, pipeline, sql_task, task
from cadenza.store import open_store


def _scalar(url: str, query: str) -> Any:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(query)).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("executor_name", ["inline", "processes"])
def test_select_becomes_a_dataframe_and_dml_returns_rows_changed(sqlite_env: Any,
                                                                 sql_target: str,
                                                                 executor_name: str) -> None:
    @task.sql(url=sql_target)
    def setup() -> list[str]:
        return ["CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), qty INT)",
                "INSERT INTO items VALUES (1, 'apple', 5), (2, 'pear', 0), (3, 'fig', 7)"]

    @task
    def total(df: Any) -> int:
        return int(df["qty"].sum())

    @pipeline
    def warehouse(threshold: int = 1):
        made = setup()
        bumped = sql_task("bump", sql_target,
                          "UPDATE items SET qty = qty + 1 WHERE qty >= :t",
                          params={"t": threshold})
        rows = sql_task("read", sql_target, "SELECT id, name, qty FROM items ORDER BY id")
        made >> bumped >> rows
        total(rows)

    result = warehouse.run(executor=executor_name)
    assert result.state is RunState.SUCCESS, result.failed
    assert result.outputs["setup"] == 3  # rows inserted (the DDL changes none)
    assert result.outputs["bump"] == 2
    df = result.outputs["read"]
    assert list(df.columns) == ["id", "name", "qty"]
    assert df.to_dict("records") == [{"id": 1, "name": "apple", "qty": 6},
                                     {"id": 2, "name": "pear", "qty": 0},
                                     {"id": 3, "name": "fig", "qty": 8}]
    assert result.outputs["total"] == 14
    read = next(t for t in result.instances if t.task_id == "read")
    assert read.output is not None and read.output.kind == "artifact"
    assert read.output.serializer == "parquet-pandas"


def test_a_bad_query_fails_readably_once_without_retry(sqlite_env: Any, sql_target: str) -> None:
    @pipeline
    def bad_query():
        sql_task("broken", sql_target, "SELECT nope FROM missing_table", retries=3)

    result = bad_query.run(executor="inline")
    err = result.failed["broken"]
    assert err.type == "cadenza.core.errors.QueryFailed" and err.traceback == ""
    first = err.first_line()
    assert "pipeline 'bad_query', task 'broken': the query failed on" in first
    assert "missing_table" in err.message and "query: SELECT nope FROM missing_table" in err.message
    assert "Fix: fix the query" in err.message
    attempts = open_store(sqlite_env.database_url).get_attempts(result.run_id, "broken", -1)
    assert len(attempts) == 1  # a wrong query is not retried


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/test",
                                 "mysql+pymysql://root@127.0.0.1:1/test"])
def test_an_unreachable_database_is_retried_by_the_tasks_retries(sqlite_env: Any,
                                                                 url: str) -> None:
    @pipeline
    def unreachable():
        sql_task("ping", url, "SELECT 1", retries=2)

    result = unreachable.run(executor="inline")
    err = result.failed["ping"]
    assert err.type == "cadenza.core.errors.DatabaseUnavailable"
    assert "127.0.0.1" in err.message and "retries=N" in err.message
    attempts = open_store(sqlite_env.database_url).get_attempts(result.run_id, "ping", -1)
    assert [a.state for a in attempts] == [TaskState.UP_FOR_RETRY] * 2 + [TaskState.FAILED]


def test_a_url_from_a_secret_is_used_and_never_shown(sqlite_env: Any, sql_target: str) -> None:
    from sqlalchemy.engine import make_url

    from cadenza.core.security import secret_key
    from cadenza.store.security import security_store

    u = make_url(sql_target)
    password = "pw-7f6e5d4c3b2a"
    if u.drivername.startswith("postgresql"):  # trust auth: the password is sent, not needed
        u = u.set(password=password)
    secret_url = u.render_as_string(hide_password=False)
    key = secret_key(sqlite_env.home, create=True)
    security_store(open_store(sqlite_env.database_url)).set_secret("WAREHOUSE_URL", secret_url,
                                                                  key=key)

    @task.sql(url="secret://WAREHOUSE_URL")
    def answer(n: int) -> tuple[str, dict[str, int]]:
        return "SELECT :n + 1 AS answer", {"n": n}

    @pipeline
    def from_secret(n: int = 41):
        answer(n)
        sql_task("fails", "secret://WAREHOUSE_URL", "SELECT * FROM not_there")

    result = from_secret.run(executor="processes")
    assert result.outputs["answer"]["answer"].tolist() == [42]
    err = result.failed["fails"]
    logs = "".join(Path(p).read_text() for p in Path(sqlite_env.logs_dir).rglob("*.log"))
    for text in (err.message, logs):
        assert password not in text and secret_url not in text
    assert "not_there" in err.message


def test_a_missing_secret_or_variable_fails_naming_it(sqlite_env: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CADENZA_T_NO_SUCH_URL", raising=False)

    @pipeline
    def unnamed():
        sql_task("a", "secret://NO_SUCH_SECRET", "SELECT 1")
        sql_task("b", "env://CADENZA_T_NO_SUCH_URL", "SELECT 1")

    result = unnamed.run(executor="inline")
    a, b = result.failed["a"], result.failed["b"]
    assert "names the secret 'NO_SUCH_SECRET'" in a.message
    assert "cadenza secrets set NO_SUCH_SECRET" in a.message
    assert "CADENZA_T_NO_SUCH_URL, which is not set" in b.message


def test_a_url_from_an_environment_variable(sqlite_env: Any, pg_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_T_WAREHOUSE", pg_url)

    @pipeline
    def from_env():
        sql_task("one", "env://CADENZA_T_WAREHOUSE", "SELECT 1 AS one")

    result = from_env.run(executor="inline")
    assert result.outputs["one"]["one"].tolist() == [1]


def test_the_query_text_and_params_are_in_the_cache_key(sqlite_env: Any, pg_url: str) -> None:
    def make(query: str) -> Any:
        @pipeline
        def cached_sql(n: int = 1):
            sql_task("q", pg_url, query, params={"n": n}, cache=True)

        return cached_sql

    first = make("SELECT :n AS v").run(executor="inline")
    assert first.task_states["q"] is TaskState.SUCCESS
    hit = make("SELECT :n AS v").run(executor="inline")
    assert hit.task_states["q"] is TaskState.CACHED
    assert hit.outputs["q"]["v"].tolist() == [1]
    other_query = make("SELECT :n * 10 AS v").run(executor="inline")
    assert other_query.task_states["q"] is TaskState.SUCCESS
    assert other_query.outputs["q"]["v"].tolist() == [10]
    other_params = make("SELECT :n AS v").run(n=2, executor="inline")
    assert other_params.task_states["q"] is TaskState.SUCCESS
    assert other_params.outputs["q"]["v"].tolist() == [2]


def test_resume_does_not_run_a_finished_statement_again(sqlite_env: Any, sql_target: str,
                                                        tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    _create = "CREATE TABLE events (id INT)"
    sql_task("setup", sql_target, _create)  # outside a pipeline: runs now

    @task
    def check(n: int) -> int:
        if not flag.exists():
            raise RuntimeError("not yet")
        return n

    @pipeline
    def resumable_sql():
        check(sql_task("insert", sql_target, "INSERT INTO events VALUES (1)"))

    result = resumable_sql.run(executor="inline")
    assert result.state is RunState.FAILED
    flag.write_text("")
    again = result.resume()
    assert again.state is RunState.SUCCESS and again.outputs["check"] == 1
    assert _scalar(sql_target, "SELECT COUNT(*) FROM events") == 1


def test_sql_settings_are_checked_at_definition() -> None:
    @task.sql
    def no_url() -> str:
        return "SELECT 1"

    with pytest.raises(DefinitionError) as info:
        @pipeline
        def missing_url():
            no_url()
            sql_task("empty", "sqlite://", "  ")

    text = str(info.value)
    assert "task 'no_url': a SQL task needs url=" in text
    assert "task 'empty': sql_task needs a query" in text


def test_any_dialect_whose_driver_is_installed_works_sqlite(sqlite_env: Any,
                                                           tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"

    @pipeline
    def lite():
        made = sql_task("make", url, ["CREATE TABLE t (x INT)", "INSERT INTO t VALUES (1), (2)"])
        made >> sql_task("read", url, "SELECT SUM(x) AS s FROM t")

    result = lite.run(executor="processes")
    assert result.outputs["make"] == 2
    assert result.outputs["read"]["s"].tolist() == [3]
