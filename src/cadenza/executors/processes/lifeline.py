"""What ties a worker process, and everything its task started, to the driver's life.

What belongs here: the two mechanisms a worker sets up at start so that nothing it runs
outlives the driver or itself, without needing the worker's GIL (a CPU-bound task holds it
for up to the 5 ms switch interval, more on a loaded machine):

  1. `die_with_forkserver`: PR_SET_PDEATHSIG(SIGKILL) when the worker's OS parent is the
     forkserver. The forkserver is single-threaded, sits in the driver's process group and
     exits when the driver does (end of file on its "alive" pipe), so the kernel kills the
     worker as part of the forkserver's exit: a kill -9 of the driver's group takes the
     worker down in the same instant, even a worker that is stopped (SIGSTOP) or busy.
     Not set under `fork` or `spawn`: there the OS parent is the thread of the driver that
     started the worker, and Linux sends the signal when that *thread* ends (a replacement
     worker is started by the collector thread, which ends at shutdown, not with the driver).
  2. `start_guard`: a small process forked from the worker before its first task (so it
     holds none of the task's pipes), in the worker's process group. It blocks, in one
     `select`, on the driver's sentinel (end of file when the driver is gone) and on its
     own parent-death signal (sent by the kernel when the worker dies, however it dies: the
     forkserver's death, the OOM killer, a kill -9 from outside). Either way it sends
     SIGKILL to the worker's group, which takes the task's own children with it, and
     itself. A signal sent to the whole group (the pool's SIGTERM on timeout or cancel)
     ends the guard too: the pool's SIGKILL of the group follows after its grace.

Imported by the worker only (ctypes costs the driver ~5-20 ms it does not need); the
forkserver preloads it, so forked workers start with it.

The worker keeps its watchdog thread (`child.py`) as the last resort when neither is
available (not Linux, or fork failed). Environments' workers (`executors/envs.py`) start a
guard on their life pipe: their OS parent is a driver thread, so only (2) applies.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import cast

PR_SET_PDEATHSIG = 1
# The guard's parent-death signal: caught (it only wakes the guard's select), never sent
# by Cadenza otherwise; a stray one is told apart by checking the parent really changed.
GUARD_SIGNAL = signal.SIGUSR2


def _prctl_fn() -> Callable[..., int] | None:
    """libc's prctl, from the symbols already loaded (no `ldconfig -p` subprocess, which
    ctypes.util.find_library would run: 100+ ms per worker on a loaded machine)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return cast("Callable[..., int]", ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


def die_with_forkserver(driver_pid: int) -> bool:
    """Ask the kernel to SIGKILL this process when its OS parent, a forkserver, exits.

    `driver_pid` is the process that asked for this worker: when it is also the OS parent
    (fork, spawn), nothing is set (see the module docstring). True if set."""
    parent = os.getppid()
    prctl = _prctl_fn()
    if prctl is None or parent in (driver_pid, 1):
        return False
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return False
    if os.getppid() != parent:  # the forkserver ended before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def start_guard(watch_fd: int | None) -> int | None:
    """Fork the guard of this process's group (see the module docstring); its pid, or None
    when it cannot be had (not Linux, not a group leader, fork failed).

    `watch_fd`: readable (end of file) once the driver is gone; None to watch only this
    process. Call it from the main thread before starting any other thread."""
    prctl = _prctl_fn()
    me = os.getpid()
    if prctl is None or os.getpgid(0) != me:
        return None  # in someone else's group: a group kill would reach them
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    try:  # the guard: nothing in here may raise past os._exit
        _guard(prctl, me, watch_fd)
    finally:
        os._exit(0)


def _guard(prctl: Callable[..., int], worker: int, watch_fd: int | None) -> None:
    gc.disable()  # no finalizer of the worker's garbage may close an fd we reuse below
    # Nothing of the worker's is ours to hold open (its pipes, stdio: a reader of the
    # driver's output waits for their end); only the driver's sentinel.
    keep = set() if watch_fd is None else {watch_fd}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # the C handler writes here at once; no GIL to wait for
    signal.signal(GUARD_SIGNAL, lambda signum, frame: None)
    prctl(PR_SET_PDEATHSIG, GUARD_SIGNAL)
    watched = [wake_r] if watch_fd is None else [wake_r, watch_fd]
    while os.getppid() == worker:
        try:
            ready, _, _ = select.select(watched, [], [])
        except InterruptedError:
            continue
        if watch_fd is not None and watch_fd in ready:
            break  # the driver is gone
        if wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(wake_r, 512)
    with contextlib.suppress(OSError):
        os.killpg(worker, signal.SIGKILL)  # the worker, its task's children, and us
