"""The runtime of `@task.shell` (SPEC §9): run a command inside the worker.

What belongs here: starting the command, streaming its output into the attempt's log line by
line while it runs, and stopping it and everything it started. What does not: the decorator
(authoring/kinds.py) and the attempt's timeout and cancel (the executor's, as for any task).

How the command is contained. It does not run as a child of the worker directly: a small
supervisor (a `python -I -S` with no imports beyond os/select/signal/time, ~10 ms) starts it in a process
group of its own and holds the read end of a pipe whose write end only the task holds. The
supervisor stops the whole group (SIGTERM, then SIGKILL after `STOP_GRACE_S`) when that pipe
reaches end-of-file: the task closed it (timeout or cancel on the inline and threads
executors, where the interrupt reaches our loop) or the task's process died (the processes
executor kills its worker at the deadline; the driver was killed with -9). Once the command
itself exits, whatever it left running in its group is killed too: a shell task leaves
nothing behind. The supervisor is in a session of its own, so a kill of the worker's group
never takes it down before it has done its job.

Output. stdout and stderr are read on the task's own thread (selectors, no extra threads),
cut into lines and written to `sys.stdout`/`sys.stderr`, which the worker routes into the
attempt log, with the run's secrets masked. The last `STDERR_TAIL` lines of stderr go into
the error of a failed command.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from cadenza.core.context import current_context, task_where
from cadenza.core.errors import CommandFailed
from cadenza.integrations.references import resolve_embedded

STDERR_TAIL = 20
STOP_GRACE_S = 3.0
_LINE_LIMIT = 64 * 1024  # a "line" longer than this is written as it comes

# Runs as `python -I -S -c SUPERVISOR GRACE STATUS_FD ARGV...`; fd 0 is the task's pipe. It
# forks at once and its first process exits: the guardian that stays is nobody's direct child,
# so a runtime that kills the direct children of a worker it stops (Ray does) does not take
# the guardian down before it has stopped the command. The guardian writes the command's exit
# status to STATUS_FD (128+N when signal N ended it; 126/127 when it could not start).
SUPERVISOR = r"""
import os, select, sys, time
import _signal as signal  # the C module: `signal` imports enum (~20 ms of a start here)
grace = float(sys.argv[1]); status_fd = int(sys.argv[2]); argv = sys.argv[3:]
if os.fork():
    os._exit(0)
# SIGCHLD writes a byte to `wake` (set_wakeup_fd, from C, at once): a child that exits before
# we wait is never missed, with no signal mask and no handler racing a blocking read.
wake, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda signum, frame: None)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.close(status_fd)
    null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0); os.close(null)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, ("cannot run %r: %s\n" % (argv[0], exc.strerror)).encode())
        os._exit(126 if isinstance(exc, PermissionError) else 127)
try:
    os.setpgid(pid, pid)
except OSError:
    pass
def kill(sig):
    try:
        os.killpg(pid, sig)
    except OSError:
        pass
def reaped():
    done, status = os.waitpid(pid, os.WNOHANG)
    return status if done else None
status = None
task_open = True
while status is None and task_open:
    ready = select.select([0, wake], [], [])[0]
    if wake in ready:
        os.read(wake, 512)
        status = reaped()
    if 0 in ready and status is None:
        task_open = bool(os.read(0, 4096))
if status is None:  # the task closed the pipe or died: stop the command's whole group
    kill(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while status is None and time.monotonic() < deadline:
        if select.select([wake], [], [], max(0.0, deadline - time.monotonic()))[0]:
            os.read(wake, 512)
        status = reaped()
    kill(signal.SIGKILL)
    os._exit(128 + signal.SIGTERM)
code = os.waitstatus_to_exitcode(status)
os.write(status_fd, b"%d\n" % (code if code >= 0 else 128 - code))
kill(signal.SIGKILL)  # what the command left running in its group
os._exit(0)
"""


def _resolve_env(env: Mapping[str, str]) -> dict[str, str]:
    """`secret://NAME` and `env://NAME` values resolved (integrations/references.py)."""
    return {k: resolve_embedded(v, f"env {k}", CommandFailed) for k, v in env.items()}


_RUN_KEYS = ("command", "env", "cwd")


def _settings_at_run_time(request: Mapping[str, Any], env: dict[str, str],
                          cwd: str | None) -> tuple[Any, dict[str, str], str | None]:
    """A function may return `{"command": ..., "env": {...}, "cwd": ...}` to set what it
    knows only at run time: its env goes over the decorator's, its cwd replaces it."""
    unknown = sorted(set(request) - set(_RUN_KEYS))
    extra = request.get("env") or {}
    if unknown or "command" not in request or not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, os.PathLike)) for k, v in extra.items()):
        raise CommandFailed(
            f"the function returned {_short(repr(request), 200)}, which is not a command",
            **task_where(), hint='return {"command": "...", "env": {"NAME": "value"}, '
            '"cwd": "folder"} (env values strings), or just the command')
    env = {**env, **{k: os.fspath(v) for k, v in extra.items()}}
    if request.get("cwd") is not None:
        cwd = os.fspath(request["cwd"])
    return request["command"], env, cwd


def _argv(command: Any, shell: str | None) -> tuple[list[str], str]:
    """The argv to run and how to show the command."""
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("an empty command")
        sh = shell or shutil.which("bash") or "/bin/sh"
        return [sh, "-c", command], command
    if isinstance(command, (list, tuple)) and command and all(
            isinstance(a, (str, os.PathLike, int, float)) and not isinstance(a, bool)
            for a in command):
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in command]
        import shlex

        return argv, shlex.join(argv)
    raise ValueError(f"{type(command).__name__} {command!r}"[:200])


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Lines:
    """Cuts one stream's bytes into lines and writes each to `sink` as it completes."""

    def __init__(self, sink: IO[str], keep: collections.deque[str] | list[str] | None) -> None:
        self.sink = sink
        self.keep = keep
        self.partial = b""

    def feed(self, data: bytes) -> None:
        self.partial += data
        if b"\n" not in self.partial and len(self.partial) < _LINE_LIMIT:
            return
        *lines, self.partial = self.partial.split(b"\n")
        if len(self.partial) >= _LINE_LIMIT:
            lines.append(self.partial)
            self.partial = b""
        self._emit([raw.decode("utf-8", "replace").rstrip("\r") for raw in lines])

    def close(self) -> None:
        if self.partial:
            self._emit([self.partial.decode("utf-8", "replace").rstrip("\r")])
            self.partial = b""

    def _emit(self, lines: list[str]) -> None:
        # The whole lines of one read in one write: the attempt log masks and flushes per
        # write (200k lines: 2.8 s one write per line, see the commit).
        self.sink.write("".join(line + "\n" for line in lines))
        if self.keep is not None:
            self.keep.extend(lines)


def run_shell(command: Any, config: Mapping[str, Any]) -> Any:
    """Run what a `@task.shell` function returned; see the module docstring.

    Outcomes, by case:
      1. exit code 0 -> the output the task asked for (`last_line`, `stdout` or None);
      2. exit code != 0 (or the command cannot start) -> CommandFailed with the code and the
         last lines of stderr; retried by the task's `retries` like any failure;
      3. the attempt is interrupted (timeout, cancel) -> the command's group is stopped
         before the interrupt goes on;
      4. the function returned no usable command -> CommandFailed naming what it returned.

    The function returns a command (a string for the shell, or a list of arguments), or a
    dict `{"command": ..., "env": {...}, "cwd": ...}` for what is known only at run time.
    """
    where = task_where()
    run_env = dict(config.get("env") or {})
    cwd = config.get("cwd")
    if isinstance(command, Mapping):  # {"command": ..., "env": {...}, "cwd": ...}
        command, run_env, cwd = _settings_at_run_time(command, run_env, cwd)
    try:
        argv, shown = _argv(command, config.get("shell"))
    except ValueError as exc:
        raise CommandFailed(f"the function returned {exc}, not a command", **where,
                            hint='return a string ("ls -l data/") or a list of arguments '
                            '(["ls", "-l", "data/"])') from None
    env = {**os.environ, **_resolve_env(run_env)}
    output = config.get("output", "last_line")
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SUPERVISOR, str(STOP_GRACE_S), str(status_w),
             *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=cwd, start_new_session=True, close_fds=True, pass_fds=(status_w,),
        )
    except OSError as exc:  # the cwd does not exist or is not a folder
        os.close(status_r)
        raise CommandFailed(f"`{_short(shown)}` could not start: {exc}", **where,
                            hint="check the task's cwd= (it is relative to the worker's "
                            "current folder, the project's)") from None
    finally:
        os.close(status_w)
    stdout: list[str] = []
    last: collections.deque[str] = collections.deque(maxlen=1)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    try:
        _pump(proc, _Lines(sys.stdout, stdout if output == "stdout" else last),
              _Lines(sys.stderr, tail))
        proc.wait()  # the supervisor's first process, gone at once (see SUPERVISOR)
        code = _exit_status(status_r)
    except BaseException:
        # Timeout, cancel, Ctrl-C: closing the pipe tells the supervisor to stop the group.
        _stop(proc, status_r)
        raise
    finally:
        os.close(status_r)
    if code is None:
        raise CommandFailed(f"`{_short(shown)}` ended without an exit status: its supervisor "
                            "was killed", **where,
                            hint="something killed the task's processes from outside; run "
                            "the task again")
    if code != 0:
        detail = ""
        if code > 128 and code - 128 in signal.Signals._value2member_map_:
            detail = f" ({signal.Signals(code - 128).name} ended it)"
        lines = [ln for ln in tail if ln.strip()]
        message = f"`{_short(shown)}` exited with code {code}{detail}"
        if not lines:
            message += " and wrote nothing to stderr"
        else:  # the last line first: it is the one a one-line summary shows
            message += f": {_short(lines[-1], 200)}"
            if len(lines) > 1:
                message += "\n  last lines of stderr:\n" + "\n".join(f"    {ln}" for ln in lines)
        ctx = current_context()
        hint = (f"see the whole output with `cadenza logs {ctx.run_id} {ctx.task_id}`"
                if ctx is not None else "see the command's output above")
        raise CommandFailed(message, **where, hint=hint)
    if output == "stdout":
        return "\n".join(stdout) + ("\n" if stdout else "")
    if output == "last_line":
        lines_out = [ln for ln in last if ln.strip()]
        return lines_out[-1] if lines_out else None
    return None


def _pump(proc: subprocess.Popen[bytes], out: _Lines, err: _Lines) -> None:
    """Copy both streams line by line until both end. Off the main thread the wait wakes
    every 0.2 s, so an interrupt raised into this thread (timeout, cancel) lands promptly;
    on the main thread SIGALRM interrupts the wait itself."""
    import selectors

    assert proc.stdout is not None and proc.stderr is not None
    wake = None if threading.current_thread() is threading.main_thread() else 0.2
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while streams:
            for key, _ in sel.select(wake):
                fd = int(key.fd)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    streams[fd].feed(data)
                else:
                    streams.pop(fd).close()
                    sel.unregister(fd)
    proc.stdout.close()
    proc.stderr.close()


def _exit_status(status_r: int, timeout_s: float | None = None) -> int | None:
    """The command's exit status from the supervisor's status pipe, read until the guardian
    closes it (it exits); None if it closed without one or `timeout_s` passed first."""
    import select

    data = b""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([status_r], [], [], left)[0]:
                return None
        chunk = os.read(status_r, 64)
        if not chunk:
            break
        data += chunk
    text = data.decode().strip()
    return int(text) if text.isdigit() else None


def _stop(proc: subprocess.Popen[bytes], status_r: int) -> None:
    """Make the supervisor stop the command's group, and wait until it has."""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    proc.wait()  # the first process; the guardian closes the status pipe when it is done
    if _exit_status(status_r, STOP_GRACE_S + 5) is None:
        try:  # the guardian itself is stuck: end it (it keeps the first process's group)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
