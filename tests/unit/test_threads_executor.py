"""The threads executor reports every call exactly once, whatever escapes the worker's
boundary, and its pool threads survive it.

`worker.execute` turns any Exception of the task into a failed outcome, but leaves
BaseExceptions alone: `sys.exit()` or an explicit KeyboardInterrupt in a task, or a cancel
that lands just outside the call. On `threads` such an exception used to end the pool thread
without an outcome, and the driver waited for it forever (processes' child already fails the
attempt with it)."""

from __future__ import annotations

import queue
import sys
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.records import ErrorKind
from cadenza.executors.base import TaskCall, TaskOutcome
from cadenza.executors.threads import ThreadExecutor

OUTCOME_WAIT_S = 30.0  # an upper bound on a wait for a condition, not a timing


def _exit() -> None:
    sys.exit(3)


def _keyboard() -> None:
    raise KeyboardInterrupt


def _add_one(x: int) -> int:
    return x + 1


def _call(fn: Any, tmp_path: Path, attempt: int = 1, **inputs: Any) -> TaskCall:
    return TaskCall(run_id="r", pipeline="p", task_id=fn.__name__, map_index=-1,
                    attempt=attempt, fn=fn, fn_key=f"tests:{fn.__name__}",
                    inputs=inputs, call_kinds={k: "POSITIONAL_OR_KEYWORD" for k in inputs},
                    artifact_root=str(tmp_path))


@pytest.fixture
def one_thread() -> Any:
    ex = ThreadExecutor(max_workers=1)
    ex.start()
    yield ex
    ex.shutdown()


@pytest.mark.parametrize(("fn", "exc_type"), [(_exit, "builtins.SystemExit"),
                                               (_keyboard, "builtins.KeyboardInterrupt")])
def test_a_base_exception_from_the_task_fails_its_attempt_and_keeps_the_thread(
        one_thread: ThreadExecutor, tmp_path: Path, fn: Any, exc_type: str) -> None:
    outcomes: queue.SimpleQueue[TaskOutcome] = queue.SimpleQueue()
    one_thread.submit(_call(fn, tmp_path), outcomes.put)
    out = outcomes.get(timeout=OUTCOME_WAIT_S)
    assert not out.ok and out.task_id == fn.__name__ and out.attempt == 1
    assert out.error is not None and out.error.kind is ErrorKind.EXCEPTION
    assert out.error.type == exc_type
    assert f"task '{fn.__name__}' ended its call with" in out.error.message
    assert "Fix:" in out.error.message
    assert out.started_at is not None and out.ended_at is not None
    assert one_thread.free_slots() == 1
    # The pool's only thread survived: the next call runs on it.
    one_thread.submit(_call(_add_one, tmp_path, x=41), outcomes.put)
    nxt = outcomes.get(timeout=OUTCOME_WAIT_S)
    assert nxt.ok and nxt.value == 42
    assert outcomes.empty()  # exactly one outcome per call


def test_a_sink_that_raises_does_not_take_the_thread_down(
        one_thread: ThreadExecutor, tmp_path: Path) -> None:
    def broken(out: TaskOutcome) -> None:
        raise RuntimeError("sink broke")

    one_thread.submit(_call(_add_one, tmp_path, x=1), broken)
    outcomes: queue.SimpleQueue[TaskOutcome] = queue.SimpleQueue()
    one_thread.submit(_call(_add_one, tmp_path, x=2), outcomes.put)
    assert outcomes.get(timeout=OUTCOME_WAIT_S).value == 3


def test_calls_beyond_the_threads_wait_and_each_reports_exactly_once(tmp_path: Path) -> None:
    ex = ThreadExecutor(max_workers=2)
    ex.start()
    try:
        outcomes: queue.SimpleQueue[TaskOutcome] = queue.SimpleQueue()
        for i in range(30):  # more than the threads: the rest wait in the backlog
            ex.submit(_call(_add_one, tmp_path, attempt=i + 1, x=i), outcomes.put)
        got = [outcomes.get(timeout=OUTCOME_WAIT_S) for _ in range(30)]
        assert sorted((o.attempt, o.value) for o in got) == [(i + 1, i + 1) for i in range(30)]
        assert all(o.ok for o in got)
        assert len({o.worker for o in got}) <= 2
        assert outcomes.empty()
        assert ex.free_slots() == 2
    finally:
        ex.shutdown()


def test_shutdown_ends_every_pool_thread_and_a_restart_serves_again(tmp_path: Path) -> None:
    import threading

    ex = ThreadExecutor(max_workers=3)
    ex.start()
    threads = list(ex._threads)
    assert threads
    ex.shutdown()
    # By identity: other executors of this process (earlier tests) name their threads alike.
    alive = set(threading.enumerate())
    assert not any(t in alive or t.is_alive() for t in threads)
    ex.start()
    try:
        outcomes: queue.SimpleQueue[TaskOutcome] = queue.SimpleQueue()
        ex.submit(_call(_add_one, tmp_path, x=1), outcomes.put)
        assert outcomes.get(timeout=OUTCOME_WAIT_S).value == 2
    finally:
        ex.shutdown()
