"""Spark tasks on a local Spark (pyspark's JVM; Java 17 from .ci/run). Slow: each attempt
starts a JVM (a few seconds on a quiet machine, tens on a loaded one).

What would fail if it broke: the session not handed in or not stopped, a Spark DataFrame not
reaching downstream as a pandas DataFrame, the cache (a hit starts no Spark; other inputs
miss), a retry not getting a fresh session after the first attempt's JVM error, no Java not
said with what to install, resume rerunning the upstream, a timed-out attempt leaving its JVM
running (threads: killed by the task's timer; processes: killed with the worker's process
group).

CI runs these on 2 cores beside the rest of the suite, so each JVM start counts (six here,
and only where the behaviour needs one: a retry needs two). The JVMs get a C1-only JIT
and the serial GC (`JAVA_OPTIONS`): tiny jobs, and ~45% less CPU per start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from cadenza.core.settings import Settings
from cadenza.core.states import TaskState
from cadenza.engine.preview import CACHED, WILL_RUN, plan_pipeline
from cadenza.store import open_store
from tests.fixtures.waiting import wait_for
from tests.pipelines import spark_pipes

# A JVM starts in seconds on a quiet machine, in tens of seconds on a loaded one.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


# The tests' JVMs run jobs of a few rows: the C1 compiler alone and the serial GC start one
# (spark-submit's launcher JVM and the driver's) with 17.4 CPU s instead of 30.8 for a
# session, one small job and its stop (measured with getrusage at load 24). What the tests
# check does not depend on the JIT. Every JVM here reads JAVA_TOOL_OPTIONS.
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:CICompilerCount=1"


@pytest.fixture(autouse=True)
def _small_jvms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", JAVA_OPTIONS)


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

    # Other inputs miss: asked of the planner, which computes the key as the run does
    # (engine/cache.py's cache_key_parts), instead of a third JVM start.
    plans = {n: {e.label: (e.decision, e.reason)
                 for e in plan_pipeline(spark_pipes.spark_totals, {"n": n})} for n in (10, 4)}
    assert plans[10]["totals"][0] == CACHED
    assert plans[4]["totals"] == (WILL_RUN, "input changed (n)")


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


def test_no_java_fails_the_task_saying_what_to_install_and_resume_reruns_it_only(
        sqlite_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    # The first run fails before a JVM starts (no Java), which is a failed Spark task as
    # good as any for resume, and the one thing the no-Java path must show: the fix. On
    # threads, which read PATH when the task runs (a processes pool keeps the environment
    # it started with, and would keep PATH=/nonexistent for the resume).
    with monkeypatch.context() as no_java:
        no_java.delenv("JAVA_HOME", raising=False)
        no_java.setenv("PATH", "/nonexistent")
        first = spark_pipes.spark_resume.run(executor="threads", folder=str(tmp_path))
    assert first.state == "failed"
    assert first.task_states["upstream_counter"] is TaskState.SUCCESS
    ti = next(t for t in open_store(sqlite_env.database_url).get_task_instances(first.run_id)
              if t.task_id == "read_orders")
    assert ti.error is not None and ti.error.type.endswith("SparkUnavailable")
    assert ti.error.message.startswith("pipeline 'spark_resume', task 'read_orders': "
                                       "Spark needs Java")
    assert "apt-get install openjdk-17-jre-headless" in ti.error.message
    assert ti.error.traceback == ""

    pd.DataFrame({"amount": [2.5, 4.0]}).to_parquet(tmp_path / "orders.parquet")
    second = first.resume(executor="processes")
    assert second.state == "success", second.failed
    assert second.outputs["read_orders"]["total"].tolist() == [6.5]
    assert (tmp_path / "upstream-ran").read_text() == "x"


# The deadlines the threads case tries, shortest first: it must come while Python waits in
# the JVM for the job, i.e. after the JVM has started, which takes seconds on a quiet machine
# and took more than 150 s at load 25 (the session-9 baseline failed there with one fixed
# 150 s deadline). A deadline that came while the JVM was still starting is the other way
# out (the timer kills the starting JVM): checked too, then the next, longer one is tried.
THREADS_DEADLINES_S = (45, 150, 450)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_timed_out_spark_task_leaves_no_jvm(sqlite_env: Settings, tmp_path: Path,
                                              executor: str) -> None:
    app = f"cadenza-test-timeout-{executor}-{os.getpid()}"  # the parametrised cases may overlap
    # On processes the worker's process group is killed whatever the JVM was doing: one
    # deadline does.
    deadlines = THREADS_DEADLINES_S if executor == "threads" else (45,)
    for i, timeout_s in enumerate(deadlines):
        marker = tmp_path / f"marker-{i}"
        result = spark_pipes.spark_timeout(timeout_s, app).run(executor=executor,
                                                               marker=str(marker))
        assert result.state == "failed"
        ti = open_store(sqlite_env.database_url).get_task_instances(result.run_id)[0]
        assert ti.error is not None and ti.error.kind == "timeout", ti.error
        wait_for(lambda: not spark_jvms(app), timeout_s=60,
                 what="the timed-out task's JVM to be gone")
        if marker.exists():
            break
    if executor == "threads":
        # The deadline came while Python waited in the JVM for the job (the task had its
        # session and had started the job): the timer's kill is what ended that call.
        assert marker.read_text() == "started", f"no JVM started within {deadlines} s"
