"""The live progress display, in a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.test_cli_support import CADENZA, Project, project, strip_ansi

__all__ = ["project"]


def run_in_pty(p: Project, *args: str, env: dict[str, str] | None = None,
               timeout_s: float = 120,
               poke: Callable[[subprocess.Popen[bytes]], None] | None = None) -> tuple[int, str]:
    """Run cadenza with its stdin/stdout/stderr on a 120x40 pseudo-terminal; return the exit
    code and everything it wrote. `poke(proc)` is called between reads."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    environ = dict(env or p.env, TERM="xterm-256color")
    environ.pop("COLUMNS", None)
    proc = subprocess.Popen([*CADENZA, *args], cwd=p.root, env=environ, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if poke is not None:
                poke(proc)
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def test_live_progress_renders_in_a_terminal_and_ends_with_the_summary(project: Project) -> None:
    code, raw = run_in_pty(project, "run", "basic", "-e", "threads", "-p", "n=6")
    text = strip_ansi(raw)
    assert code == 0, text
    assert "Traceback" not in text and "Error" not in text
    assert "\x1b[" in raw  # styled, cursor-controlled output: the live display
    assert "\x1b[?25l" in raw and "\x1b[?25h" in raw  # cursor hidden while live, then restored
    assert "━" in text  # the progress bar
    assert "9/9" in text  # numbers, 6 squares, total and describe: all done
    run_id = project.last_run_id()
    tail = text[text.rindex(f"Run {run_id}"):]
    assert f"Run {run_id} of pipeline basic succeeded" in tail
    assert f"cadenza runs show {run_id}" in tail


def test_live_progress_of_a_failed_run_shows_the_error(project: Project) -> None:
    code, raw = run_in_pty(project, "run", "failing", "-e", "threads")
    text = strip_ansi(raw)
    assert code == 1, text
    assert "Traceback" not in text
    assert "ValueError: bad row 6" in text
    assert text.rstrip().endswith(f"cadenza resume {project.last_run_id()}")


def test_no_color_gives_plain_lines_even_in_a_terminal(project: Project) -> None:
    env = dict(project.env, NO_COLOR="1")
    code, raw = run_in_pty(project, "run", "basic", "-e", "threads", env=env)
    assert code == 0, raw
    assert "\x1b[?25l" not in raw and "\x1b[1A" not in raw  # no live redraws
    assert "\x1b[3" not in raw  # no colours
    text = strip_ansi(raw)
    assert any("success" in line and "square[2]" in line for line in text.splitlines())
    assert "of pipeline basic succeeded" in text


def test_ctrl_c_in_a_terminal_stops_the_live_display_and_says_how_to_resume(
        project: Project, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    sent: list[bool] = []

    def interrupt_when_started(proc: subprocess.Popen[bytes]) -> None:
        if not sent and (ctl / "started").exists():
            proc.send_signal(signal.SIGINT)
            sent.append(True)

    code, raw = run_in_pty(project, "run", "slow", "-e", "threads", "-p", f"folder={ctl}",
                           poke=interrupt_when_started)
    text = strip_ansi(raw)
    assert sent and code == 130, text
    assert "Traceback" not in text
    assert "\x1b[?25h" in raw  # the cursor is given back
    assert "Cancelling: stopping running tasks" in text
    run_id = project.last_run_id()
    assert text.rstrip().endswith(f"Interrupted. Resume with: cadenza resume {run_id}")
    states = {t["label"]: t["state"] for t in project.json("runs", "show", run_id)["task_instances"]}
    assert states == {"prepare": "success", "wait_for_release": "cancelled", "report": "cancelled"}
