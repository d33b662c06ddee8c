"""The inline executor: each call runs in the caller's thread, to completion, inside submit().

The reference implementation of the Executor protocol, and the one to debug with (a
breakpoint in a task just works). Timeouts interrupt the call (SIGALRM on the main thread).
"""

from __future__ import annotations

from cadenza.executors import worker
from cadenza.executors.base import Sink, TaskCall


class InlineExecutor:
    name = "inline"
    in_process = True
    runs_in_caller = True  # the driver's thread is busy for the task's length

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return 1

    def submit(self, call: TaskCall, sink: Sink) -> None:
        sink(worker.execute(call, enforce_timeout=True, keep_value=True))

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        worker.interrupt(run_id, task_id, map_index)

    def shutdown(self) -> None:
        pass
