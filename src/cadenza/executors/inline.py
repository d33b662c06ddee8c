"""The inline executor: each call runs in the caller's thread, to completion, inside submit().

The reference implementation of the Executor protocol, and the one to debug with (a
breakpoint in a task just works). Timeouts interrupt the call: on the main thread with
SIGALRM, which also interrupts sleeps and blocking I/O; elsewhere at the next bytecode, so a
blocking call finishes first (the run says so at start, `timeout_note`).
"""

from __future__ import annotations

import sys
import threading

from cadenza.executors import worker
from cadenza.executors.base import Sink, TaskCall


class InlineExecutor:
    name = "inline"
    in_process = True
    runs_in_caller = True  # the driver's thread is busy for the task's length
    places_resources = False  # resources are this machine's: the engine admits them

    def start(self) -> None:
        pass

    def timeout_note(self) -> str | None:
        """How `timeout=` is enforced when the run is driven from this thread. On the main
        thread SIGALRM interrupts sleeps and I/O at the deadline; elsewhere only an
        exception at the next bytecode is possible, after a blocking call returns."""
        if threading.current_thread() is threading.main_thread():
            return None
        return (
            "driven outside the main thread, a timed-out task stops at its next Python "
            "bytecode, only once a blocking call (sleep, I/O, C code) has returned; its attempt "
            "says how late"
        )

    def preflight(self, artifact_root: str, *, pipeline: str) -> None:
        """Workers share the driver's machine, and so its artifact store: nothing to check."""

    def env_lock(self, requirements: tuple[str, ...], python: str | None, *, build: bool,
                 run_id: str | None = None) -> str | None:
        """Calls run on this machine: its env cache (executors/envs.py)."""
        from cadenza.executors.envs import env_lock

        return env_lock(requirements, python, build=build, run_id=run_id)

    def free_slots(self) -> int:
        return 1

    def submit(self, call: TaskCall, sink: Sink) -> None:
        if call.isolated:  # its own interpreter: a child process, still in this thread
            from cadenza.executors.envs import run_isolated

            sink(run_isolated(call))
            return
        sink(worker.execute(call, enforce_timeout=True, keep_value=True))

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        worker.interrupt(run_id, task_id, map_index)
        if "cadenza.executors.envs" in sys.modules:
            sys.modules["cadenza.executors.envs"].cancel(run_id, task_id, map_index)

    def shutdown(self) -> None:
        pass
