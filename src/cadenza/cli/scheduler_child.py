"""`cadenza server --scheduler`'s scheduler: a `cadenza scheduler` child process the server
starts, watches and stops with itself.

Why a child and not a thread: run drivers are Python threads busy with every task
transition; in the server's process they took the GIL from the live event feeds, and a
2,000-task live run showed a change on screen 750-1,560 ms after its commit (bench/ui.py),
against ~290 ms with the driver in another process. The child is the same service as
`cadenza scheduler` (same exactly-once rules: several servers may share one PostgreSQL
store), so nothing about scheduling changes.

What belongs here: starting the child with the server's targets and options, restarting
it when it dies while the server runs, stopping it with the server, and bringing its
Prometheus metrics into the server's `/metrics` (it serves them on a loopback port the
server chose; `ChildMetrics` scrapes that port when the server is scraped). What does not:
what the scheduler does (`cli/scheduler.py`, `triggers/`).

Stopping, by case:
  1. the server stops (SIGINT, SIGTERM) -> one SIGTERM to the child: its loop returns and
     runs being driven are left to their leases, as `cadenza scheduler` does on SIGTERM;
     the server waits up to STOP_WAIT_S, then kills it.
  2. the child dies while the server runs -> logged with its exit code, started again
     after RESTART_S (doubling up to 30 s while it keeps dying within a minute).
  3. the server is killed (SIGKILL) -> the kernel sends the child SIGHUP
     (PR_SET_PDEATHSIG on Linux), which it takes as case 1 of `cadenza scheduler`: no
     orphaned scheduler keeps driving runs. Not SIGTERM: the kernel sends the signal as
     each of the server's threads that was the child's parent exits (the child is handed
     to a sibling thread first), so two came for one death, and a second SIGTERM means
     "stop at once" to a scheduler.
The child has its own process group: a Ctrl-C in the terminal reaches the server only,
which stops the child once (a second signal would make the child exit at once).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

RESTART_S = 1.0
STOP_WAIT_S = 30.0
# Metric families of prometheus_client's default collectors: the server's own process
# reports these; the child's are left out of the server's /metrics (one family per name).
_OWN_PREFIXES = ("process_", "python_")
# The environment variable worker processes (--workers N) read the child's metrics URL from.
METRICS_URL_ENV = "CADENZA_SCHEDULER_METRICS_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Any:
    """A preexec_fn that asks Linux to send the child SIGHUP when the server dies (None
    elsewhere). prctl is looked up here, before any fork: the function the child runs
    after fork only makes the system call."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGHUP)

    return preexec


class SchedulerChild:
    """The supervised `cadenza scheduler` process of one server.

    Example:
        >>> child = SchedulerChild(["pipelines/"], executor=None, max_runs=16)
        >>> child.start()           # returns at once; a thread starts and watches it
        >>> ...                     # the server serves
        >>> child.stop(); child.join()
    """

    def __init__(self, targets: Sequence[str], *, executor: str | None, max_runs: int) -> None:
        self.metrics_port = _free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.argv = [sys.executable, "-m", "cadenza", "scheduler", *targets,
                     "--max-runs", str(max_runs), "--metrics-port", str(self.metrics_port)]
        if executor:
            self.argv += ["--executor", executor]
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="cadenza-scheduler-child",
                                        daemon=True)
        self._preexec = _die_with_parent()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            # PR_SET_PDEATHSIG fires when the thread that forked exits: this supervising
            # thread lives as long as the server.
            self._proc = subprocess.Popen(self.argv, process_group=0,
                                          preexec_fn=self._preexec)  # noqa: PLW1509
            self.starts += 1
            return self._proc

    def _supervise(self) -> None:
        delay = RESTART_S
        while True:
            proc = self._spawn()
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            delay = RESTART_S if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            log.warning("the scheduler process (pid %d) exited with code %s; starting it "
                        "again in %g s", proc.pid, code, delay)
            if self._stopping.wait(delay):
                return

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM, once); no new child is started after this."""
        with self._lock:
            first = not self._stopping.is_set()
            self._stopping.set()
            proc = self._proc
        if first and proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def join(self, timeout_s: float = STOP_WAIT_S) -> int | None:
        """Wait for the child to exit (killed after `timeout_s`); its exit code."""
        self.stop()
        proc = self._proc
        if proc is None:
            return None
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("the scheduler process (pid %d) did not stop in %g s: killed",
                        proc.pid, timeout_s)
            proc.kill()
            code = proc.wait()
        self._thread.join(timeout=5)
        return code


class ChildMetrics:
    """A prometheus_client collector: the scheduler child's metrics, scraped from its
    loopback port when the server's /metrics is (nothing while the child is down), without
    the process and Python families (the server reports its own)."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def describe(self) -> list[Any]:
        return []  # the families depend on the child; registering must not scrape it

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as answer:
                text = answer.read().decode("utf-8")
        except OSError as exc:
            log.debug("scheduler metrics unavailable at %s: %s", self.url, exc)
            return
        for family in text_string_to_metric_families(text):
            if not family.name.startswith(_OWN_PREFIXES):
                yield family


def child_metrics_from_env() -> list[ChildMetrics]:
    """In a `--workers N` worker: the child's metrics collector, if the server has one."""
    url = os.environ.get(METRICS_URL_ENV)
    return [ChildMetrics(url)] if url else []


__all__ = ["METRICS_URL_ENV", "ChildMetrics", "SchedulerChild", "child_metrics_from_env"]
