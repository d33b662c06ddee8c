"""What the pool tracks per call (`Job`) and per worker process (`Worker`), and the outcome
of a call that did not return: stopped (timeout, cancel, shutdown), lost with its worker, or
refused because no worker could start.
"""

from __future__ import annotations

import os
import signal
from collections import OrderedDict
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import TaskCancelled, TaskTimeout, WorkerLost
from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.executors.base import Sink, TaskCall, TaskOutcome, describe_exception
from cadenza.executors.processes.wire import HOSTNAME

# A worker that dies before it is ready is a boot failure; after this many in a row the pool
# stops respawning (instead of spinning) until work arrives again.
MAX_BOOT_FAILURES = 3
# ...and for this long after giving up, calls fail at once instead of forking more workers.
BOOT_RETRY_AFTER_S = 5.0
# A call's timeout counts from its function's start (the worker's start frame, wire.py); a
# call whose worker never gets there (a boot or an import of the task's module that hangs) is
# stopped this much later than its timeout, counted from its assignment to the worker.
BOOT_GRACE_S = 60.0

class Job:
    __slots__ = (
        "call",
        "deadline",
        "done",
        "fn_blob",
        "led",
        "payload",
        "sink",
        "started_at",
        "stop_reason",
        "unsent",
        "wire_key",
        "worker",
    )

    def __init__(
        self, call: TaskCall, sink: Sink, payload: bytes, wire_key: str, fn_blob: bytes
    ) -> None:
        self.call = call
        self.sink = sink
        self.payload = payload
        self.wire_key = wire_key
        self.fn_blob = fn_blob
        self.worker: Worker | None = None
        self.started_at: Any = None
        self.deadline: float | None = None
        self.stop_reason: str | None = None  # "timeout" | "cancelled" once we kill for it
        self.done = False
        self.unsent = False  # the worker died before we could even write the call
        self.led = False  # its sink is a driver's Outcomes, whose waits read the pipes


class Worker:
    __slots__ = (
        "conn",
        "dead",
        "environment",
        "environment_msg",
        "eof",
        "fn_keys",
        "job",
        "pid",
        "process",
        "ready",
        "sentinel",
        "spawned_at",
        "sys_path",
    )

    def __init__(
        self, process: Any, conn: Connection, spawned_at: float, sys_path: list[str]
    ) -> None:
        self.process = process
        self.sys_path = sys_path
        self.conn = conn
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel
        self.fn_keys: OrderedDict[str, None] = OrderedDict()
        self.job: Job | None = None
        self.ready = False
        self.spawned_at = spawned_at
        self.dead = False
        self.eof = False  # its pipe is closed: wait on the sentinel only
        # The (variables, cwd) it was last given, and the message giving it newer ones, sent
        # before its next call (pool.py, `preflight`).
        self.environment: tuple[dict[str, str], str | None] | None = None
        self.environment_msg: bytes | None = None


def signal_group(worker: Worker, sig: int) -> None:
    """Send `sig` to the worker's process group (its task's children too)."""
    try:
        os.killpg(worker.pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not yet its own group leader (still booting), or already gone.
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass


def describe_exit(exitcode: int | None) -> tuple[str, str]:
    """(what happened, how to fix it) for a worker's exit code."""
    if exitcode is None:
        return "vanished", "check the machine's logs (dmesg) for why the process ended"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return (
                f"was killed by {name}",
                (
                    "SIGKILL usually means the machine ran out of memory (the kernel's OOM "
                    "killer) or someone ran kill -9; declare resources={'memory': ...} or "
                    "make the task use less memory"
                ),
            )
        if -exitcode in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL):
            return (
                f"crashed with {name}",
                (
                    "a native extension crashed; run the task with executor='inline' under "
                    "a debugger, or check the versions of its compiled libraries"
                ),
            )
        return f"was killed by {name}", "find out what sent the signal"
    return (
        f"exited with code {exitcode}",
        (
            "the task (or a library it calls) ended the process, e.g. with os._exit(); "
            "raise an exception instead"
        ),
    )


BOOT_HINT = (
    "check that `python -c 'import cadenza.executors.worker'` works in this environment, "
    "and read the worker's error on the driver's stderr"
)


def with_worker(outcome: TaskOutcome, worker: Worker) -> TaskOutcome:
    return replace(outcome, worker=f"pid:{worker.pid}@{HOSTNAME}")


def failed_outcome(call: TaskCall, error: ErrorInfo, *, started_at: Any) -> TaskOutcome:
    return TaskOutcome(
        run_id=call.run_id,
        task_id=call.task_id,
        map_index=call.map_index,
        attempt=call.attempt,
        ok=False,
        error=error,
        started_at=started_at,
        ended_at=clock.now(),
    )

def stopped_outcome(job: Job, reason: str) -> TaskOutcome:
    call = job.call
    where = f" (worker pid {job.worker.pid})" if job.worker is not None else ""
    exc: BaseException
    if reason == "timeout":
        exc = TaskTimeout(f"timed out after {call.timeout_s:g} s")
        error = describe_exception(exc, kind=ErrorKind.TIMEOUT)
    else:
        text = (
            "cancelled while running" + where
            if job.worker is not None
            else "cancelled before it started"
        )
        if reason == "shutdown":
            text += ": the processes executor shut down"
        error = describe_exception(TaskCancelled(text), kind=ErrorKind.CANCELLED)
    outcome = failed_outcome(call, error, started_at=job.started_at)
    if job.worker is None:
        return outcome
    return with_worker(outcome, job.worker)

def lost_outcome(
    job: Job, worker: Worker, exitcode: int | None, *, boot: bool
) -> TaskOutcome:
    call = job.call
    what, fix = describe_exit(exitcode)
    if boot:
        message = (
            f"worker process {worker.pid} {what} while starting, before it could run the "
            "task; its error is on the driver's stderr"
        )
        fix = BOOT_HINT
    else:
        message = f"worker process {worker.pid} {what} while running the task"
    exc = WorkerLost(message, pipeline=call.pipeline, task=call.label, hint=fix)
    outcome = failed_outcome(
        call,
        describe_exception(exc, kind=ErrorKind.WORKER_LOST),
        started_at=job.started_at if job.worker is not None else None,
    )
    return with_worker(outcome, worker) if job.worker is not None else outcome

def broken_outcome(call: TaskCall, reason: str | None) -> TaskOutcome:
    exc = WorkerLost(
        f"no worker process to run the task: {reason}; the executor tries "
        f"again {BOOT_RETRY_AFTER_S:g} s after giving up (their error is on stderr)",
        pipeline=call.pipeline,
        task=call.label,
        hint=BOOT_HINT,
    )
    return failed_outcome(call, describe_exception(exc, kind=ErrorKind.WORKER_LOST),
                          started_at=None)
