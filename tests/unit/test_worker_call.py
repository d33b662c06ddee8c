"""worker.execute around the user's call: the environment a task asks for is set only during
its call, an in-process deadline stops it, and a call that needs neither (the fast path of
a chained inline step) runs with nothing set around it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cadenza.executors import worker
from cadenza.executors.base import TaskCall

VAR = "CADENZA_TEST_WORKER_CALL_VAR"


def _read_var() -> str | None:
    return os.environ.get(VAR)


def _spin(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # pure Python: a deadline stops it at once
        pass
    return "finished"


def _call(fn: Any, tmp_path: Path, **kw: Any) -> TaskCall:
    kw.setdefault("inputs", {})
    kw.setdefault("call_kinds", {})
    return TaskCall(run_id="r", pipeline="p", task_id=fn.__name__, map_index=-1, attempt=1,
                    fn=fn, fn_key=f"tests:{fn.__name__}", artifact_root=str(tmp_path), **kw)


def test_a_call_without_env_or_timeout_runs_and_keeps_its_value(tmp_path: Path) -> None:
    out = worker.execute(_call(_read_var, tmp_path), keep_value=True)
    assert out.ok and out.value is None and out.has_value


def test_env_is_set_during_the_call_only(tmp_path: Path) -> None:
    assert VAR not in os.environ
    out = worker.execute(_call(_read_var, tmp_path, env={VAR: "set"}), keep_value=True)
    assert out.ok and out.value == "set"
    assert VAR not in os.environ


def test_a_deadline_stops_the_call(tmp_path: Path) -> None:
    call = _call(_spin, tmp_path, timeout_s=0.2, inputs={"seconds": 60.0},
                 call_kinds={"seconds": "POSITIONAL_OR_KEYWORD"})
    out = worker.execute(call, enforce_timeout=True)
    assert not out.ok and out.error is not None and out.error.kind == "timeout"


def test_the_worker_name_is_the_pid_of_the_process_a_fork_included() -> None:
    import multiprocessing

    assert worker.default_worker_name().startswith(f"pid:{os.getpid()}@")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child_name, child_pid = pool.apply(_child_name_and_pid)
    assert child_pid != os.getpid()
    assert child_name.startswith(f"pid:{child_pid}@")


def _child_name_and_pid() -> tuple[str, int]:
    return worker.default_worker_name(), os.getpid()
