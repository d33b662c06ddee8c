"""Spark tasks on a local Spark (pyspark's JVM; Java 17 from .ci/run). Slow: each attempt
starts a JVM (a few seconds on a quiet machine, tens on a loaded one).

What would fail if it broke: the session not handed in or not stopped, a Spark DataFrame not
reaching downstream as a pandas DataFrame, the cache (a hit starts no Spark), a retry not
getting a fresh session after the first attempt's JVM error, resume rerunning the upstream,
a timed-out attempt leaving its JVM running (threads: killed by the task's timer; processes:
killed with the worker's process group).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.store import open_store
from tests.fixtures.waiting import wait_for
from tests.pipelines import spark_pipes

# A JVM starts in seconds on a quiet machine, in tens of seconds on a loaded one.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _spark_available() -> None:
    reason = None
    try:
        import pyspark  # noqa: F401
    except ImportError:
        reason = "pyspark is not installed (pip install 'cadenza[spark]')"
    if reason is None and not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        reason = "no Java runtime (apt-get install openjdk-17-jre-headless; .ci/run does)"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: Spark tests must run)", pytrace=False)
    pytest.skip(reason)


def spark_jvms(app: str) -> list[int]:
    """Live JVMs of Spark sessions named `app` (by default a task's is `cadenza
    <pipeline>.<task>`; a test that may run beside another of its kind names its own)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or ())
        if f"spark.app.name={app} " in cmd and proc.info["status"] != "zombie":
            found.append(proc.pid)
    return found


def test_the_function_gets_a_session_and_downstream_gets_pandas_and_the_cache_holds(
        sqlite_env: Settings) -> None:
    first = spark_pipes.spark_totals.run(executor="processes", n=10)
    assert first.state == "success", first.failed
    assert first.outputs["as_lists"] == {"type": ["pandas"], "k": [0, 1, 2],
                                         "sum(v)": [18, 12, 15]}
    assert spark_jvms("cadenza spark_totals.totals") == []  # stopped with its session

    hit = spark_pipes.spark_totals.run(executor="processes", n=10)
    assert hit.task_states["totals"] is TaskState.CACHED
    assert hit.outputs["as_lists"] == first.outputs["as_lists"]

    miss = spark_pipes.spark_totals.run(executor="processes", n=4)
    assert miss.task_states["totals"] is TaskState.SUCCESS
    assert miss.outputs["as_lists"]["sum(v)"] == [3, 1, 2]


def test_a_spark_error_is_reported_and_the_retry_gets_a_fresh_session(
        sqlite_env: Settings, tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "rows.parquet"
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(path)
    result = spark_pipes.spark_retry.run(executor="threads", path=str(path))
    assert result.state == "success", result.failed
    assert result.outputs["after_read"] == 6
    attempts = [a for a in open_store(sqlite_env.database_url).get_attempts(result.run_id)
                if a.task_id == "flaky_read"]
    first = next(a for a in attempts if a.attempt == 1)
    assert first.error is not None and first.error.type.endswith("SparkJobFailed")
    assert "pipeline 'spark_retry', task 'flaky_read': Spark failed: AnalysisException: " \
        "[PATH_NOT_FOUND]" in first.error.message
    assert "rows.parquet.missing" in first.error.message
    assert "in flaky_read" in first.error.traceback  # the user's frame
    assert len(attempts) == 2
    assert spark_jvms("cadenza spark_retry.flaky_read") == []


def test_resume_reruns_the_failed_spark_task_only(sqlite_env: Settings,
                                                  tmp_path: Path) -> None:
    import pandas as pd

    first = spark_pipes.spark_resume.run(executor="processes", folder=str(tmp_path))
    assert first.state == "failed"
    assert first.task_states["upstream_counter"] is TaskState.SUCCESS
    pd.DataFrame({"amount": [2.5, 4.0]}).to_parquet(tmp_path / "orders.parquet")
    second = first.resume()
    assert second.state == "success", second.failed
    assert second.outputs["read_orders"]["total"].tolist() == [6.5]
    assert (tmp_path / "upstream-ran").read_text() == "x"


@pytest.mark.parametrize(("executor", "timeout_s"), [("threads", 150), ("processes", 45)])
def test_a_timed_out_spark_task_leaves_no_jvm(sqlite_env: Settings, tmp_path: Path,
                                              executor: str, timeout_s: float) -> None:
    marker = tmp_path / "marker"
    app = f"cadenza-test-timeout-{executor}-{os.getpid()}"  # the parametrised cases may overlap
    result = spark_pipes.spark_timeout(timeout_s, app).run(executor=executor,
                                                           marker=str(marker))
    assert result.state == "failed"
    ti = open_store(sqlite_env.database_url).get_task_instances(result.run_id)[0]
    assert ti.error is not None and ti.error.kind == "timeout", ti.error
    if executor == "threads":
        # The deadline came while Python waited in the JVM for the job (the task had its
        # session and had started the job): the timer's kill is what ended that call. 150 s
        # is far more than a JVM takes to start, even on a loaded machine. (On processes the
        # worker's process group is killed whatever the JVM was doing.)
        assert marker.read_text() == "started"
    wait_for(lambda: not spark_jvms(app), timeout_s=60,
             what="the timed-out task's JVM to be gone")


def test_no_java_fails_the_task_saying_what_to_install(sqlite_env: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    result = spark_pipes.spark_without_java.run(executor="threads")
    assert result.state == "failed"
    ti = open_store(sqlite_env.database_url).get_task_instances(result.run_id)[0]
    assert ti.error is not None and ti.error.type.endswith("SparkUnavailable")
    assert ti.error.message.startswith("pipeline 'spark_without_java', task 'needs_java': "
                                       "Spark needs Java")
    assert "apt-get install openjdk-17-jre-headless" in ti.error.message
    assert ti.error.traceback == ""
