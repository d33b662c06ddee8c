"""Pipelines with Spark tasks (tests/integration/test_spark.py): local Spark, small data."""

from __future__ import annotations

from typing import Any

from cadenza import PipelineDef, get_context, pipeline, task


@task.spark(master="local[2]", cache=True)
def totals(spark: Any, n: int) -> Any:
    frame = spark.range(n).selectExpr("id % 3 AS k", "id AS v")
    return frame.groupBy("k").sum("v").orderBy("k")  # a Spark DataFrame


@task
def as_lists(frame: Any) -> dict[str, list[Any]]:
    return {"type": [type(frame).__module__.split(".")[0]],
            **{str(c): frame[c].tolist() for c in frame.columns}}


@pipeline
def spark_totals(n: int = 10) -> None:
    as_lists(totals(n))


@task.spark(retries=1, retry_delay=0)
def flaky_read(spark: Any, path: str) -> int:
    """Fails on its first attempt (in the JVM: a missing path), then reads the file."""
    if get_context().attempt == 1:
        spark.read.parquet(path + ".missing").count()
    return int(spark.read.parquet(path).count())


@task
def after_read(rows: int) -> int:
    return rows * 2


@pipeline
def spark_retry(path: str = "") -> None:
    after_read(flaky_read(path))


@task
def upstream_counter(folder: str) -> str:
    from pathlib import Path

    marker = Path(folder) / "upstream-ran"
    marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
    return folder


@task.spark
def read_orders(spark: Any, folder: str) -> Any:
    return spark.read.parquet(f"{folder}/orders.parquet").selectExpr("sum(amount) AS total")


@pipeline
def spark_resume(folder: str = "") -> None:
    read_orders(upstream_counter(folder))


@task.spark
def endless(spark: Any, marker: str) -> int:
    from pathlib import Path

    Path(marker).write_text("started")
    # A job in the JVM that does not end in the test's life: Python waits in a Py4J call
    # while the job's task sleeps in the JVM (Thread.sleep through SQL's reflect), so the
    # wait takes no CPU from the rest of the suite (a computing job took every core of the
    # machine until the deadline: 150 + 45 s of the suite's two cores).
    rows = spark.range(1).selectExpr(
        "reflect('java.lang.Thread', 'sleep', CAST(1000000000 AS BIGINT)) AS slept").collect()
    return len(rows)


def spark_timeout(timeout_s: float, app_name: str) -> PipelineDef:
    @pipeline(name="spark_timeout")
    def spark_timeout(marker: str = "") -> None:
        endless.with_options(timeout=timeout_s, app_name=app_name)(marker)

    return spark_timeout
