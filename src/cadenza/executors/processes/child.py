"""The worker process's main: boot, then load functions and run calls until told to stop.

What belongs here: `worker_main` (the target of every worker process) and what it sets up
before its loop (process group, cwd, environment, `__main__` stand-in, and what takes the task
down with it when the driver goes away: the forkserver's parent-death signal and the guard of
`lifeline.py`, and a watchdog thread as the last resort). Running one call is
`executors/worker.py`, shared by every executor.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from cadenza.core.results import ErrorInfo, ErrorKind
from cadenza.executors.base import TaskOutcome
from cadenza.executors.environ import apply_environment, environment_change
from cadenza.executors.processes.main_module import adopt_main_names, stand_in_for_main
from cadenza.executors.processes.wire import (
    HOSTNAME,
    PROTOCOL,
    READY,
    START_FRAME,
    encode_outcome,
    error_info,
    fail_message,
    packed_label,
    unpack_call,
)


def _watch_parent(sentinel: int) -> None:
    """Worker watchdog: block until the driver is gone, then take the task down with us.
    The last resort: `lifeline.py`'s guard does it without this process's GIL."""
    wait([sentinel])
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)  # the worker and whatever its task started
    finally:
        os._exit(1)


def worker_main(conn: Connection, boot: tuple[Any, ...]) -> None:
    """Entry point of a worker process: load functions, run calls, send outcomes back."""
    from cadenza.executors.processes.lifeline import die_with_forkserver, start_guard

    sys_path, cwd, env, target, main_identity = boot
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # stays in the driver's group: kills then reach only this process
    sys.path[:] = sys_path
    # forkserver children inherit the server's environment as of its start, not the driver's
    # current one: the worker sees what the driver sees now
    apply_environment(*environment_change(dict(os.environ), env), cwd)
    stand_in_for_main(*main_identity)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_forkserver(parent.pid)

    module_name, _, attr = target.partition(":")
    execute: Callable[..., TaskOutcome] = getattr(importlib.import_module(module_name), attr)
    ident = f"pid:{os.getpid()}@{HOSTNAME}"
    try:
        conn.send_bytes(pickle.dumps(READY, protocol=PROTOCOL))
    except OSError:
        return  # the driver stopped (or closed us) while we started: nothing to say
    # After READY (the driver goes on meanwhile), before any thread and any task.
    start_guard(parent.sentinel if parent is not None else None)
    if parent is not None:
        threading.Thread(
            target=_watch_parent, args=(parent.sentinel,), name="cadenza-watchdog", daemon=True
        ).start()

    raw_fns: dict[str, bytes] = {}
    fns: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the driver closed the pipe or went away
        try:
            msg = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
            conn.send_bytes(
                fail_message(
                    error_info(
                        exc,
                        ErrorKind.SERIALIZATION,
                        "the inputs of the task could not be unpickled in the worker "
                        f"process: {exc}. Fix: pass only values whose classes are importable "
                        "from the worker (defined at module level of an importable module)",
                    )
                )
            )
            continue
        tag = msg[0]
        if tag == "F":
            _, key, blob, evict, new_path = msg
            if new_path is not None:
                sys.path[:] = new_path
            raw_fns[key] = blob
            if evict is not None:
                fns.pop(evict, None)
                raw_fns.pop(evict, None)
            continue
        if tag == "E":  # what the driver's environment changed by at a later run's start
            apply_environment(*msg[1:])
            continue
        if tag == "S":
            return
        _, key, values = msg
        label = packed_label(values)
        fn = fns.get(key)
        if fn is None:
            blob = raw_fns.pop(key, None)
            if blob is None:  # the driver believed we had it; it resends next time
                conn.send_bytes(
                    fail_message(
                        ErrorInfo(
                            kind=ErrorKind.SERIALIZATION,
                            type="cadenza.core.errors.CadenzaError",
                            message=f"the function of task '{label}' was not loaded in this "
                            "worker (a Cadenza bug); it will be sent again on the next attempt",
                        ),
                        drop_fn=True,
                    )
                )
                continue
            try:
                fn = pickle.loads(blob)
            except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
                conn.send_bytes(
                    fail_message(
                        error_info(
                            exc,
                            ErrorKind.SERIALIZATION,
                            f"the function of task '{label}' could not be loaded in the "
                            f"worker process: {type(exc).__name__}: {exc}. Fix: make the "
                            "module that defines it importable from the driver's sys.path and "
                            "working directory, or define the task in the script you run",
                        ),
                        drop_fn=True,
                    )
                )
                continue
            if getattr(fn, "__module__", None) == "__main__":
                adopt_main_names(fn)
            fns[key] = fn
        call = unpack_call(fn, values)
        if call.timeout_s:
            # The timeout counts from here: this worker's boot and the import of the task's
            # module (loading `fn` above) come before it and are not the task's time.
            conn.send_bytes(START_FRAME)
        try:
            outcome = execute(call, enforce_timeout=False, worker=ident)
        except BaseException as exc:  # noqa: BLE001 - e.g. sys.exit() in the task
            conn.send_bytes(
                fail_message(
                    error_info(
                        exc,
                        ErrorKind.EXCEPTION,
                        f"task '{label}' ended the worker's call with {type(exc).__name__}: {exc}",
                    )
                )
            )
            continue
        try:
            reply = pickle.dumps(("ok", encode_outcome(outcome)), protocol=PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
            reply = fail_message(
                error_info(
                    exc,
                    ErrorKind.SERIALIZATION,
                    f"the outcome of task '{label}' could not be pickled to send it back to the "
                    f"driver: {exc} (a Cadenza bug: outcomes hold plain records only)",
                )
            )
        try:
            conn.send_bytes(reply)
        except OSError:
            return  # the driver went away while the task ran (killed): nobody to tell
