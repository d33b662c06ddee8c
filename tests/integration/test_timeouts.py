"""Timeouts are honest on every executor (issue 11, item 5).

`processes` kills a task at its deadline. A thread cannot be killed: on `threads` an attempt
stuck in a blocking call fails at its deadline and is abandoned (its late result dropped), and
the run says at start, once, that the timeout cannot stop a blocking call there. On `inline`
driven outside the main thread, the attempt says how late it could be stopped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from cadenza import RunState, TaskState
from cadenza.executors.base import get_executor
from cadenza.store import open_store
from tests.fixtures.waiting import wait_for
from tests.pipelines import timeouts

ADVISORY = "cannot stop a blocking call"


def _run_in_thread(fn: Any) -> tuple[dict[str, Any], threading.Thread]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return box, thread


def test_threads_fail_a_blocked_attempt_at_its_deadline_and_drop_its_late_result(
    sqlite_env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    timeouts.RELEASE.clear()
    timeouts.RETURNED.clear()
    box, thread = _run_in_thread(lambda: timeouts.blocked_pipeline.run(executor="threads"))
    try:
        # The run ends while the task is still inside its blocking call.
        wait_for(lambda: box, timeout_s=60)
        assert not timeouts.RETURNED.is_set()
        assert "error" not in box, box
        result = box["result"]
        assert result.state is RunState.FAILED
        err = result.failed["blocked"]
        assert err.kind == "timeout"
        assert "timed out after 0.3 s" in err.message
        assert "abandoned" in err.message and "executor='processes'" in err.message
        (attempt,) = open_store(sqlite_env.database_url).get_attempts(result.run_id, "blocked", -1)
        assert attempt.state is TaskState.FAILED and "abandoned" in attempt.error.message
        ex = get_executor("threads")
        assert ex.free_slots() == ex.max_workers  # the stuck thread was replaced
    finally:
        timeouts.RELEASE.set()
        thread.join(timeout=60)
    wait_for(timeouts.RETURNED.is_set, timeout_s=60)
    wait_for(lambda: "its result was dropped" in caplog.text, timeout_s=60)
    store = open_store(sqlite_env.database_url)
    assert store.get_run(result.run_id).state is RunState.FAILED
    (ti,) = [t for t in store.get_task_instances(result.run_id) if t.task_id == "blocked"]
    assert ti.state is TaskState.FAILED and ti.output is None
    assert len(store.get_attempts(result.run_id, "blocked", -1)) == 1
    # Said once, at the start of the run, naming the task and the fix.
    warnings = [r.getMessage() for r in caplog.records if ADVISORY in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "pipeline 'blocked_pipeline'" in warnings[0]
    assert "'blocked' (0.3 s)" in warnings[0] and "--executor processes" in warnings[0]


def test_inline_off_the_main_thread_says_how_late_a_timeout_stopped_the_task(
    sqlite_env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    box, thread = _run_in_thread(lambda: timeouts.sleeps_pipeline.run(seconds=1.5,
                                                                      executor="inline"))
    thread.join(timeout=60)
    result = box["result"]
    err = result.failed["sleeps"]
    assert err.kind == "timeout"
    assert "timed out after 0.2 s, but could be stopped only after" in err.message
    assert "executor='processes'" in err.message
    warnings = [r.getMessage() for r in caplog.records if ADVISORY in r.getMessage()]
    assert len(warnings) == 1 and "on the inline executor" in warnings[0], warnings


def test_processes_and_inline_on_the_main_thread_stop_the_task_without_a_warning(
    sqlite_env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for executor in ("processes", "inline"):  # inline: this is the main thread (SIGALRM)
        result = timeouts.sleeps_pipeline.run(seconds=60, executor=executor)
        err = result.failed["sleeps"]
        assert err.message == "timed out after 0.2 s", (executor, err.message)
    assert ADVISORY not in caplog.text


SCRIPT = textwrap.dedent("""
    from cadenza import pipeline, task

    @task(timeout=30)
    def quick() -> int:
        return 1

    @task
    def untimed() -> int:
        return 2

    @pipeline
    def advisory():
        quick()
        untimed()

    if __name__ == "__main__":  # `cadenza run` imports this file too
        print("STATE", advisory.run().state)
""")


def _env(tmp_path: Path, executor: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env["CADENZA_HOME"] = str(tmp_path / "home")
    env["CADENZA_EXECUTOR"] = executor
    return env


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_script_and_the_cli_say_once_at_start_that_a_timeout_is_advisory(
    tmp_path: Path, executor: str
) -> None:
    script = tmp_path / "advisory.py"
    script.write_text(SCRIPT)
    env = _env(tmp_path, executor)
    cadenza = Path(sys.executable).parent / "cadenza"

    by_script = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=180, check=False)
    by_cli = subprocess.run([str(cadenza), "run", f"{script}:advisory", "-e", executor],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
                            check=False, stdin=subprocess.DEVNULL)

    assert by_script.returncode == 0, by_script.stderr
    assert "STATE success" in by_script.stdout
    assert by_cli.returncode == 0, by_cli.stdout + by_cli.stderr
    for proc in (by_script, by_cli):
        text = " ".join((proc.stdout + proc.stderr).split())  # the CLI wraps long lines
        if executor == "processes":
            assert ADVISORY not in text
            continue
        assert text.count(ADVISORY) == 1, text
        assert "the timeout of task 'quick' (30 s)" in text
        assert "--executor processes" in text
        assert "Traceback" not in proc.stderr
