"""Spark tasks: `@task.spark` / `spark_task(fn)` hand the function a SparkSession (SPEC §9).

What belongs here: the definition side (a TaskDef whose function starts a session, calls the
user's function with it as `spark=`, and stops it) and that function's work in the worker:
checking pyspark and Java, starting the session (`local[*]` by default, `master=` for a
cluster), turning Spark DataFrames returned into pandas DataFrames (stored as Parquet in the
artifact store), and stopping the session and its JVM after every attempt. What does not:
retries, timeouts, caching, resume (the engine's, as for any task).

Outputs. A Spark DataFrame lives in the JVM of its session, which ends with the task: one
returned (alone, or in a list, tuple or dict) is collected through Arrow (`toArrow`) into a
pandas DataFrame before the session stops, and that is what is stored (Parquet) and what
downstream tasks receive (`spark.createDataFrame(df)` turns it back in a Spark task). It goes
through the driver's memory: return aggregates, or write large tables to storage from the
task and return their path.

The JVM. pyspark starts one JVM per process and keeps it; here each attempt stops its session
*and* its JVM (so a worker process holds no JVM between tasks, and a timed-out attempt leaves
none running), and the next attempt starts a fresh one (a few seconds). On `processes` (and in
a per-task environment) a timeout kills the worker's process group, JVM included. On
`threads`/`inline` the function may be blocked in a JVM call that Python cannot interrupt: a
timer kills the JVM at the task's deadline, which ends that call, and the attempt fails as
timed out. A cancel on those executors waits for the running Spark call. Spark tasks in one
process take turns (one SparkContext per process); `processes` runs them side by side.

Example:
    @task.spark(master="local[2]", config={"spark.sql.shuffle.partitions": "4"}, timeout=600)
    def totals(spark, day: str):
        orders = spark.read.parquet(f"/data/orders/{day}")
        return orders.groupBy("customer_id").sum("amount")  # a pandas DataFrame downstream
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from typing import Any

from cadenza.authoring.task import TaskDef
from cadenza.core.context import get_context
from cadenza.core.errors import DefinitionError, Problem, TaskTimeout, UsageError
from cadenza.integrations.errors import (
    IntegrationMissing,
    SparkJobFailed,
    SparkUnavailable,
    task_location,
)

log = logging.getLogger(__name__)

SPARK_OPTIONS = frozenset({"master", "config", "app_name"})
SESSION_PARAMETER = "spark"
# Spark's defaults suit a cluster; for local mode these keep a small job small: no web UI
# (each session would take a port from 4040 up), loopback only, a few shuffle partitions
# instead of 200.
LOCAL_DEFAULTS: Mapping[str, str] = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.showConsoleProgress": "false",
}

# One SparkContext per process: Spark tasks running in one process take turns.
_session_lock = threading.Lock()


# --- definition ---------------------------------------------------------------------------


def _check(fn: Callable[..., Any], master: Any, config: Any, app_name: Any,
           task: str) -> list[Problem]:
    problems = []
    params = inspect.signature(fn).parameters
    if SESSION_PARAMETER not in params:
        problems.append(Problem(
            message=f"a Spark task's function takes the SparkSession as a parameter named "
            f"'{SESSION_PARAMETER}'; {task}() has none", task=task,
            hint=f"def {task}(spark, ...): the session is passed as spark=..."))
    if not isinstance(master, str) or not master:
        problems.append(Problem(message=f"master must be a Spark master URL, got {master!r}",
                                task=task, hint='master="local[*]" or "spark://host:7077"'))
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        problems.append(Problem(message=f"config must be a dict of Spark settings, got "
                                f"{config!r}", task=task,
                                hint='config={"spark.executor.memory": "2g"}'))
    if app_name is not None and not isinstance(app_name, str):
        problems.append(Problem(message=f"app_name must be a string, got {app_name!r}",
                                task=task, hint='app_name="nightly-totals"'))
    return problems


def _runner(fn: Callable[..., Any], settings: dict[str, Any]) -> Callable[..., Any]:
    """The task's function: the user's, minus its `spark` parameter, run in a session."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return run_spark(fn, settings, args, kwargs)

    sig = inspect.signature(fn)
    run.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for n, p in sig.parameters.items() if n != SESSION_PARAMETER])
    run.__name__ = str(getattr(fn, "__name__", "spark_task"))
    run.__qualname__ = f"{getattr(fn, '__qualname__', run.__name__)}.<spark>"
    run.__module__ = str(getattr(fn, "__module__", None) or __name__)
    run.__doc__ = fn.__doc__
    return run


class SparkTaskDef(TaskDef[Any, Any]):
    """What `@task.spark` makes: a TaskDef whose function runs in a SparkSession."""

    def __init__(self, fn: Callable[..., Any], spark_options: Mapping[str, Any], *,
                 name: str | None = None, explicit: bool = False, **options: Any) -> None:
        if not callable(fn):
            raise DefinitionError.single(f"@task.spark needs a function, got "
                                         f"{type(fn).__name__}", hint="put @task.spark on a def")
        self.user_fn = fn
        self.spark_options = dict(spark_options)
        master = self.spark_options.get("master", "local[*]")
        config = self.spark_options.get("config") or {}
        app_name = self.spark_options.get("app_name")
        task_name = name or str(getattr(fn, "__name__", "spark"))
        problems = _check(fn, master, config, app_name, task_name)
        settings = {"master": master, "app_name": app_name,
                    "config": ({str(k): str(v) for k, v in config.items()}
                               if isinstance(config, Mapping) else {})}
        super().__init__(_runner(fn, settings), name=task_name, explicit=explicit, **options)
        self.problems.extend(problems)

    def __repr__(self) -> str:
        return f"<spark task '{self.name}'>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cadenza.authoring.builder import current_builder

        if current_builder() is None and self.problems:
            raise DefinitionError(None, list(self.problems))
        return super().__call__(*args, **kwargs)

    def with_options(self, *, name: str | None = None, **changes: Any) -> SparkTaskDef:
        """A copy with some options changed: @task's own and `master`, `config`, `app_name`."""
        spark_changes = {k: v for k, v in changes.items() if k in SPARK_OPTIONS}
        task_changes = {k: v for k, v in changes.items() if k not in SPARK_OPTIONS}
        return SparkTaskDef(self.user_fn, {**self.spark_options, **spark_changes},
                            name=name if name is not None else self.name,
                            explicit=True if name is not None else self.explicit_name,
                            **{**self.raw_options, **task_changes})


def spark_task(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """`@task.spark`, also usable as `spark_task(fn, master=...)`: the function gets a
    SparkSession as `spark=`; `master` (default "local[*]"), `config` (Spark settings) and
    `app_name` set it up; every other keyword is an @task option (retries, timeout, cache...).

    Example:
        @task.spark(timeout=600, retries=1)
        def daily_totals(spark, orders):     # orders: a pandas DataFrame from upstream
            df = spark.createDataFrame(orders)
            return df.groupBy("customer_id").sum("amount")
    """
    spark_options = {k: options.pop(k) for k in list(options) if k in SPARK_OPTIONS}

    def wrap(f: Callable[..., Any]) -> SparkTaskDef:
        return SparkTaskDef(f, spark_options, name=name, **options)

    return wrap(fn) if fn is not None else wrap


# --- in the worker ------------------------------------------------------------------------


def _require_spark() -> Any:
    pipeline, task = task_location()
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise IntegrationMissing(
            f"pyspark is not installed where this task runs ({exc})", pipeline=pipeline,
            task=task, hint="pip install 'cadenza[spark]'") from exc
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise SparkUnavailable(
            "Spark needs Java, and no `java` is on PATH (nor JAVA_HOME set)",
            pipeline=pipeline, task=task,
            hint="install a Java 17+ runtime (Debian/Ubuntu: apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME")
    return SparkSession


def _start(session_cls: Any, settings: Mapping[str, Any]) -> Any:
    pipeline, task = task_location()
    master = str(settings["master"])
    builder = session_cls.builder.master(master).appName(
        settings.get("app_name") or f"cadenza {pipeline}.{task}")
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    if master.startswith("local"):
        conf.update(LOCAL_DEFAULTS)
        # The JVM picks its address from the hostname before reading any setting.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf.update(settings.get("config") or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparkUnavailable(
            f"could not start a SparkSession on master {master!r}: {first}",
            pipeline=pipeline, task=task,
            hint="check master= (local[*], or a spark://host:7077 the driver can reach) and "
            "config=; the task log has Spark's output") from exc


def _children() -> set[int]:
    """This process's child processes that run Spark (spark-submit, then the JVM it execs);
    never an executor's worker or env worker started meanwhile by another thread."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    found = set()
    for child in psutil.Process().children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "SparkSubmit" in cmdline or "spark-submit" in cmdline or "spark-class" in cmdline:
            found.add(child.pid)
    return found


def _stop_jvm(started_before: set[int]) -> None:
    """Stop the session's JVM and forget it, so the next session starts a fresh one. A JVM
    still starting (pyspark knows no gateway yet: the deadline came while it started) is
    found among this process's children that were not there before."""
    import psutil  # type: ignore[import-untyped,unused-ignore]
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if gateway is not None:
        try:
            gateway.shutdown()
        except Exception:
            log.debug("the Spark gateway did not shut down cleanly", exc_info=True)
    if proc is not None and proc.stdin is not None:
        proc.stdin.close()  # the gateway exits at its stdin's EOF
    for pid in _children() - started_before:
        try:
            child = psutil.Process(pid)
            child.kill()
            child.wait(timeout=30)
        except psutil.Error:  # gone already
            continue
    if proc is not None:
        proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None
    SparkContext._active_spark_context = None
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None


def _stop(session: Any, started_before: set[int]) -> None:
    if session is not None:
        try:
            session.stop()
        except Exception:
            log.debug("the SparkSession did not stop cleanly", exc_info=True)
    _stop_jvm(started_before)


def collect_frames(value: Any) -> Any:
    """`value` with every Spark DataFrame in it (alone or in a list, tuple or dict) turned
    into a pandas DataFrame, while its session is still up."""
    from pyspark.sql import DataFrame

    if isinstance(value, DataFrame):
        return value.toArrow().to_pandas()
    if type(value) in (list, tuple):
        return type(value)(collect_frames(v) for v in value)
    if type(value) is dict:
        return {k: collect_frames(v) for k, v in value.items()}
    return value


def run_spark(fn: Callable[..., Any], settings: Mapping[str, Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
    """Start a session, call `fn(*args, spark=session, **kwargs)`, collect returned
    DataFrames, stop the session and its JVM (on every way out, a timeout included)."""
    session_cls = _require_spark()
    try:
        timeout_s = get_context().timeout_s
    except UsageError:  # called outside a run (a test calling the task's function)
        timeout_s = None
    with _session_lock:
        before = _children()
        expired = threading.Event()
        timer = None
        if timeout_s:
            def kill() -> None:
                expired.set()
                _kill_jvms(before)

            timer = threading.Timer(timeout_s, kill)
            timer.daemon = True
            timer.start()
        session = None
        try:
            try:
                session = _start(session_cls, settings)
                return collect_frames(fn(*args, spark=session, **kwargs))
            except Exception as exc:
                if expired.is_set():  # the JVM call failed because the deadline killed it
                    raise TaskTimeout() from None
                if _is_spark_error(exc):
                    raise _readable(exc) from None
                raise
        finally:
            if timer is not None:
                timer.cancel()
            _stop(session, before)


def _is_spark_error(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] in ("pyspark", "py4j")


def _readable(exc: BaseException) -> SparkJobFailed:
    """Spark's error with its text read now, while the JVM is up: pyspark's exceptions ask the
    JVM for their message, and the JVM stops before the worker reports the attempt."""
    pipeline, task = task_location()
    try:
        text = str(exc).strip()
    except Exception as str_error:  # noqa: BLE001 - the JVM may already be unusable
        text = f"(the message could not be read: {str_error!r})"
    lines = text.splitlines()
    shown = "\n".join(lines[:20]) + (f"\n... ({len(lines) - 20} more lines)" if len(lines) > 20
                                       else "")
    error = SparkJobFailed(f"Spark failed: {type(exc).__name__}: {shown}", pipeline=pipeline,
                           task=task, hint="fix the Spark code or its input (the task log has "
                           "Spark's output)")
    return error.with_traceback(exc.__traceback__)


def _kill_jvms(started_before: set[int]) -> None:
    """At the deadline, from the timer's thread: kill the JVMs this task started, which ends
    the Spark call the task's thread may be blocked in."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    for pid in _children() - started_before:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            continue
