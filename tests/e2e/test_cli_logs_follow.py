"""`cadenza logs RUN TASK --follow` streams a running attempt's output on every executor.

The task prints with plain `print` (no flush), writes to stderr, logs through a library logger
and through `get_context().logger`, and keeps doing so until the test creates a release file:
the follower must show those lines while the task is still running, not when it ends.
"""

from __future__ import annotations

import queue
import textwrap
import threading
from pathlib import Path

import pytest

from tests.e2e.test_cli_support import Project, make_project
from tests.fixtures.waiting import wait_for

CHATTY = textwrap.dedent("""
    import logging
    import sys
    import time
    from pathlib import Path

    from cadenza import get_context, pipeline, task


    @task
    def chatty(folder: str) -> int:
        n = 0
        deadline = time.monotonic() + 120
        while not Path(folder, "release").exists():
            n += 1
            print(f"tick {n}")
            print(f"to stderr {n}", file=sys.stderr)
            logging.getLogger("chatty.lib").warning("library log %d", n)
            get_context().logger.info("context log %d", n)
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released the task")
            time.sleep(0.5)  # the task's own pace, as in the issue: a line every 0.5 s
        print("released")
        return n


    @pipeline
    def chatty_flow(folder: str):
        chatty(folder)
""")

FIRST_LINES = ("tick 1", "to stderr 1", "library log 1", "context log 1")


def _lines(stream: object) -> queue.Queue[str]:
    """Read a pipe line by line in a thread, so the test can wait on what arrived."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("executor", ["processes", "threads", "inline"])
def test_logs_follow_streams_a_running_attempt(tmp_path: Path, executor: str) -> None:
    project: Project = make_project(tmp_path, executor=executor,
                                    files={"pipelines/chatty.py": CHATTY})
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    run = project.popen("run", "chatty_flow", "-p", f"folder={ctl}")
    follow = None
    try:
        wait_for(lambda: project.cli("runs", "list", "--json").stdout.strip() not in ("", "[]"),
                 what="the run to be recorded")
        run_id = project.last_run_id()
        follow = project.popen("logs", run_id, "chatty", "--follow")
        seen: list[str] = []
        out = _lines(follow.stdout)

        def first_lines_seen() -> bool:
            while not out.empty():
                seen.append(out.get())
            return all(any(want in line for line in seen) for want in FIRST_LINES)

        wait_for(first_lines_seen, what=f"the first lines of the running task; got {seen}")
        # The task cannot end before the release file exists: the lines came while it ran.
        assert follow.poll() is None
        assert run.poll() is None
        (ctl / "release").write_text("go")
        assert follow.wait(timeout=120) == 0, follow.stderr.read() if follow.stderr else ""
        while not out.empty():
            seen.append(out.get())
        text = "".join(seen)
        assert "released" in text
        # Each line once: the end of the attempt prints only what was not streamed yet.
        assert text.count("tick 1\n") == 1
        assert run.wait(timeout=120) == 0
    finally:
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for proc in (run, follow):
            if proc is not None:
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
