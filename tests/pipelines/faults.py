"""Pipelines that fail in every way a task can: exceptions, flakiness, hangs, lost workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from cadenza import pipeline, task
from tests.pipelines.common import bump


@task(retries=3, retry_delay=0.01, retry_backoff=2.0)
def flaky(folder: str, fail_times: int) -> str:
    n = bump(folder, "flaky")
    if n <= fail_times:
        raise ConnectionError(f"attempt {n} failed")
    return f"ok after {n}"


@pipeline
def flaky_pipeline(folder: str, fail_times: int = 2):
    flaky(folder, fail_times)


@task(retries=3, retry_delay=0, retry_on=(ConnectionError,))
def wrong_error(folder: str) -> None:
    bump(folder, "wrong_error")
    raise KeyError("not retried: only ConnectionError is")


@pipeline
def retry_on_pipeline(folder: str):
    wrong_error(folder)


@task(timeout=0.5)
def hangs(folder: str) -> str:
    time.sleep(3)
    Path(folder, "hangs-finished").write_text("the task was not stopped")
    return "finished"


@pipeline
def timeout_pipeline(folder: str):
    hangs(folder)


@task(retries=1, retry_delay=0)
def killed_once(folder: str) -> str:
    n = bump(folder, "killed_once")
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"survived on attempt {n}"


@pipeline
def kill_pipeline(folder: str):
    killed_once(folder)


@task
def killed_always(folder: str) -> None:
    bump(folder, "killed_always")
    os.kill(os.getpid(), signal.SIGKILL)


@pipeline
def kill_no_retry(folder: str):
    killed_always(folder)


@task  # retries=0: a lost worker's attempt is tried again without spending a retry
def killed_once_no_retries(folder: str) -> str:
    n = bump(folder, "killed_once_no_retries")
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return f"survived on attempt {n}"


@pipeline
def oom_killed_once(folder: str):
    killed_once_no_retries(folder)


@task
def returns_lock() -> object:
    return threading.Lock()


@pipeline
def unpicklable_output():
    returns_lock()


@task(pool="one_slot")
def pooled(folder: str, i: int) -> list[float]:
    start = time.time()
    time.sleep(0.15)
    return [start, time.time()]


@pipeline
def pooled_pipeline(folder: str):
    pooled.partial(folder=folder).expand(i=[0, 1, 2])


@task(resources={"gpu": 1})
def gpu_task(i: int) -> list:
    start = time.time()
    time.sleep(0.2)
    return [os.environ.get("CUDA_VISIBLE_DEVICES"), start, time.time()]


@pipeline
def gpu_pipeline():
    gpu_task.expand(i=[0, 1, 2, 3])


@task(resources={"cpu": 512})
def too_big() -> None:
    return None


@pipeline
def too_big_pipeline():
    too_big()


def _record(event: str, folder: str):
    def callback(ctx) -> None:
        Path(folder, f"{event}-{ctx.task_id}-{ctx.attempt}").write_text(str(ctx.state))

    return callback


def make_callback_pipeline(folder: str):
    @task(retries=1, retry_delay=0, on_retry=_record("retry", folder),
          on_failure=_record("failure", folder))
    def always_fails() -> None:
        raise ValueError("nope")

    @task(on_success=_record("success", folder))
    def fine() -> int:
        return 1

    @pipeline
    def callbacks():
        fine()
        always_fails()

    return callbacks


def make_closure_pipeline(factor: int):
    @task
    def scale(x: int) -> int:
        return x * factor  # closes over `factor`

    @pipeline
    def closure(x: int = 2):
        scale(x)

    return closure
