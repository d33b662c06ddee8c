"""The threads executor: a persistent pool of threads in the driver's process.

Good for I/O-bound tasks and for tasks that release the GIL (NumPy, pandas, scikit-learn).
Timeouts and cancellation interrupt a call at its next Python bytecode (a blocking C call
finishes first); use `processes` when a task must be stopped hard.
"""

from __future__ import annotations

import os
import queue
import threading

from cadenza.executors import worker
from cadenza.executors.base import Sink, TaskCall


class ThreadExecutor:
    name = "threads"
    in_process = True

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) * 4)
        self._queue: queue.SimpleQueue[tuple[TaskCall, Sink] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._threads:
            return
        for i in range(self.max_workers):
            t = threading.Thread(target=self._loop, name=f"cadenza-thread-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self) -> None:
        name = f"{worker.default_worker_name()}/{threading.current_thread().name}"
        while True:
            item = self._queue.get()
            if item is None:
                return
            call, sink = item
            try:
                outcome = worker.execute(call, enforce_timeout=True, worker=name, keep_value=True)
            finally:
                with self._lock:
                    self._busy -= 1
            sink(outcome)

    def free_slots(self) -> int:
        with self._lock:
            return self.max_workers - self._busy

    def submit(self, call: TaskCall, sink: Sink) -> None:
        with self._lock:
            self._busy += 1
        self._queue.put((call, sink))

    def cancel(self, run_id: str, task_id: str, map_index: int) -> None:
        worker.interrupt(run_id, task_id, map_index)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
