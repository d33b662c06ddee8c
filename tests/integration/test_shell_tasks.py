"""`@task.shell` (SPEC §9) on every executor, against real processes: output, env and cwd,
lines streamed into the attempt log while the command runs (secrets masked), a failing
command's error, retries, the command's whole process group killed at a timeout, a cancel and
the driver's death, caching and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from cadenza import RunState, TaskState, pipeline, task
from cadenza.store import open_store
from tests.fixtures.waiting import wait_for


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pids(folder: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(folder.glob("*.pid")) if p.read_text().strip()]


def _log_text(settings: Any, run_id: str, task_id: str, attempt: int = 1) -> str:
    path = Path(settings.logs_dir) / run_id / f"{task_id}.{attempt}.log"
    return path.read_text() if path.exists() else ""


def test_a_command_runs_with_env_and_cwd_and_returns_its_last_line(sqlite_env: Any,
                                                                    executor: str,
                                                                    tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text("a\nb\nc\n")

    @task.shell(env={"GREETING": "hello"}, cwd=work)
    def count(who: str) -> str:
        return f'echo "$GREETING {who}"; echo "a warning" >&2; wc -l < input.txt'

    @task.shell(output="stdout")
    def listing() -> list[str]:
        return ["printf", "%s\\n", "one", "two"]

    @task.shell(output="none")
    def quiet() -> str:
        return "echo ignored"

    @task
    def double(n: str) -> int:
        return 2 * int(n)

    @pipeline
    def shell_ok(who: str = "bob"):
        double(count(who))
        listing()
        quiet()

    result = shell_ok.run(executor=executor)
    assert result.state is RunState.SUCCESS, result.failed
    assert result.outputs["count"] == "3"
    assert result.outputs["double"] == 6
    assert result.outputs["listing"] == "one\ntwo\n"
    assert result.outputs["quiet"] is None
    log = _log_text(sqlite_env, result.run_id, "count")
    assert "hello bob" in log and "a warning" in log  # stdout and stderr, in the task's log


def test_a_shell_task_maps_over_a_list_like_any_task(sqlite_env: Any, tmp_path: Path) -> None:
    @task.shell(output="stdout")
    def shout(prefix: str, n: int) -> list[str]:
        return ["seq", "-f", f"{prefix}%g", "1", str(n)]

    @task
    def lines(outputs: list[str]) -> list[int]:
        return [len(o.splitlines()) for o in outputs]

    @pipeline
    def mapped_shell():
        lines(shout.partial(prefix="x").expand(n=[1, 2, 3]))

    result = mapped_shell.run(executor="processes")
    assert result.outputs["lines"] == [1, 2, 3]
    assert result.outputs["shout"] == ["x1\n", "x1\nx2\n", "x1\nx2\nx3\n"]


def test_many_quick_commands_never_hang(tmp_path: Path) -> None:
    """A command that exits before the supervisor waits for it must still be seen (a
    SIGCHLD handler racing a blocking read hung about one call in fifty once)."""
    script = tmp_path / "quick.py"
    script.write_text(textwrap.dedent("""
        from cadenza.integrations.shell import run_shell
        config = {"env": {}, "cwd": None, "output": "last_line", "shell": None}
        for i in range(300):
            assert run_shell(["true"], config) is None
            assert run_shell(["echo", str(i)], config) == str(i)
        print("done")
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, check=False)  # a hang fails the test here
    assert proc.returncode == 0 and proc.stdout.strip().endswith("done"), proc.stderr


def test_env_and_cwd_known_only_at_run_time(sqlite_env: Any, tmp_path: Path) -> None:
    (tmp_path / "2026-01-02").mkdir()

    @task.shell(env={"MODE": "full", "KEEP": "yes"}, cwd="/")
    def dated(day: str) -> dict[str, Any]:
        return {"command": 'echo "$MODE $KEEP $DAY $(basename "$PWD")"',
                "env": {"MODE": "quick", "DAY": day}, "cwd": tmp_path / day}

    @task.shell
    def odd() -> dict[str, Any]:
        return {"cmd": "true"}

    @pipeline
    def at_run_time(day: str = "2026-01-02"):
        dated(day)
        odd()

    result = at_run_time.run(executor="processes")
    assert result.outputs["dated"] == "quick yes 2026-01-02 2026-01-02"
    assert "which is not a command" in result.failed["odd"].message


def test_output_is_streamed_into_the_log_while_the_command_runs(sqlite_env: Any,
                                                                tmp_path: Path) -> None:
    gate = tmp_path / "go"

    @task.shell
    def waits() -> str:
        return f'echo started; while [ ! -f "{gate}" ]; do sleep 0.05; done; echo finished'

    @pipeline
    def streaming():
        waits()

    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.update(r=streaming.run(executor="processes")))
    runner.start()
    try:
        def started() -> bool:
            logs = list(Path(sqlite_env.logs_dir).glob("*/waits.1.log"))
            return bool(logs) and "started" in logs[0].read_text()

        wait_for(started, what="the first line in the attempt log")
        assert "finished" not in next(Path(sqlite_env.logs_dir).glob("*/waits.1.log")).read_text()
    finally:
        gate.write_text("")
        runner.join(timeout=120)
    assert box["r"].state is RunState.SUCCESS
    assert box["r"].outputs["waits"] == "finished"


def test_secrets_in_env_reach_the_command_and_are_masked_in_log_and_error(
        sqlite_env: Any, executor: str) -> None:
    from cadenza.core.security import secret_key
    from cadenza.store.security import security_store

    token = "tok-5a4b3c2d1e0f"
    key = secret_key(sqlite_env.home, create=True)
    security_store(open_store(sqlite_env.database_url)).set_secret("API_TOKEN", token, key=key)

    @task.shell(env={"TOKEN": "secret://API_TOKEN"})
    def uses_token() -> str:
        return 'echo "using $TOKEN"; echo "denied for $TOKEN" >&2; exit 4'

    @pipeline
    def secretive():
        uses_token()

    result = secretive.run(executor=executor)
    err = result.failed["uses_token"]
    assert "denied for ***" in err.message and token not in err.message
    log = _log_text(sqlite_env, result.run_id, "uses_token")
    assert "using ***" in log and token not in log


def test_a_failing_command_fails_with_its_code_and_last_stderr_lines_and_no_traceback(
        sqlite_env: Any, executor: str) -> None:
    @task.shell
    def broken() -> str:
        return "echo some output; for i in 1 2 3; do echo problem $i >&2; done; exit 3"

    @pipeline
    def fails():
        broken()

    result = fails.run(executor=executor)
    assert result.state is RunState.FAILED
    err = result.failed["broken"]
    assert err.type == "cadenza.core.errors.CommandFailed"
    assert err.traceback == ""  # a user error: the message says it all
    first = err.first_line()
    assert "pipeline 'fails', task 'broken'" in first and "exited with code 3: problem 3" in first
    assert "problem 1\n" in err.message and "problem 2\n" in err.message
    assert f"cadenza logs {result.run_id} broken" in err.message  # the fix: where to look
    log = _log_text(sqlite_env, result.run_id, "broken")
    assert "some output" in log and "exited with code 3" in log and "Traceback" not in log


def test_a_command_that_cannot_start_or_a_bad_return_value_fail_readably(sqlite_env: Any,
                                                                        tmp_path: Path) -> None:
    @task.shell
    def missing() -> list[str]:
        return ["no-such-program-xyz", "--flag"]

    @task.shell
    def not_a_command() -> int:
        return 42  # type: ignore[return-value]

    @task.shell(cwd=tmp_path / "nope")
    def bad_cwd() -> str:
        return "true"

    @pipeline
    def cannot():
        missing()
        not_a_command()
        bad_cwd()

    result = cannot.run(executor="inline")
    assert "exited with code 127: cannot run 'no-such-program-xyz'" in result.failed["missing"].message
    assert "returned int 42, not a command" in result.failed["not_a_command"].message
    assert "could not start" in result.failed["bad_cwd"].message
    assert all(e.traceback == "" for e in result.failed.values())


def test_bad_shell_options_are_definition_problems_naming_the_task() -> None:
    from cadenza import DefinitionError

    @task.shell(output="everything", env={"A": 1})
    def odd() -> str:
        return "true"

    with pytest.raises(DefinitionError) as info:
        @pipeline
        def wrong():
            odd()

    text = str(info.value)
    assert "pipeline 'wrong'" in text and "task 'odd'" in text
    assert "output must be one of last_line, stdout, none" in text and "env must be a dict" in text


def test_a_failed_command_is_retried_by_the_tasks_retries(sqlite_env: Any, executor: str,
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "tried"

    @task.shell(retries=2)
    def flaky() -> str:
        # Fails the first time (no marker yet), succeeds the second.
        return f'if [ -f "{marker}" ]; then echo ok; else touch "{marker}"; exit 1; fi'

    @pipeline
    def retrying():
        flaky()

    result = retrying.run(executor=executor)
    assert result.state is RunState.SUCCESS and result.outputs["flaky"] == "ok"
    attempts = open_store(sqlite_env.database_url).get_attempts(result.run_id, "flaky", -1)
    assert [a.state for a in attempts] == [TaskState.UP_FOR_RETRY, TaskState.SUCCESS]
    assert attempts[0].error is not None and "exited with code 1" in attempts[0].error.message


def _spawner(folder: Path, **options: Any) -> Any:
    """A command that starts a grandchild in the background (its pid in a file) and waits."""

    @task.shell(**options)
    def spawns() -> str:
        return (f'sleep 300 & echo $! > "{folder}/grandchild.pid"; '
                f'echo $$ > "{folder}/shell.pid"; wait')

    return spawns


def test_a_timeout_kills_the_command_and_everything_it_started(sqlite_env: Any, executor: str,
                                                               tmp_path: Path) -> None:
    spawns = _spawner(tmp_path, timeout=1.5)

    @pipeline
    def times_out():
        spawns()

    result = times_out.run(executor=executor)
    assert result.state is RunState.FAILED
    assert result.failed["spawns"].kind == "timeout"
    pids = _pids(tmp_path)
    assert len(pids) == 2
    wait_for(lambda: all(_gone(p) for p in pids), timeout_s=30,
             what="the command and its grandchild to be killed")


def test_what_a_command_leaves_running_is_killed_when_it_exits(sqlite_env: Any,
                                                               tmp_path: Path) -> None:
    @task.shell
    def leaves_a_daemon() -> str:
        return f'sleep 300 & echo $! > "{tmp_path}/left.pid"; echo started it'

    @pipeline
    def leaves():
        leaves_a_daemon()

    result = leaves.run(executor="processes")
    assert result.state is RunState.SUCCESS and result.outputs["leaves_a_daemon"] == "started it"
    (pid,) = _pids(tmp_path)
    wait_for(lambda: _gone(pid), timeout_s=30, what="the background process to be killed")


def test_cancel_kills_the_commands_process_group(sqlite_env: Any, tmp_path: Path) -> None:
    from cadenza.engine.cancel import cancel_run

    spawns = _spawner(tmp_path)

    @pipeline
    def cancelled():
        spawns()

    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.update(r=cancelled.run(executor="threads")))
    runner.start()
    try:
        wait_for(lambda: len(_pids(tmp_path)) == 2, what="the command to start its grandchild")
        store = open_store(sqlite_env.database_url)
        (run,) = store.list_runs(pipeline="cancelled", limit=1)
        cancel_run(run.run_id, settings=sqlite_env)
    finally:
        runner.join(timeout=120)
    assert box["r"].state is RunState.CANCELLED
    pids = _pids(tmp_path)
    wait_for(lambda: all(_gone(p) for p in pids), timeout_s=30,
             what="the command and its grandchild to be killed")


@pytest.mark.parametrize("executor_name", ["inline", "processes"])
def test_the_commands_group_dies_with_a_driver_killed_by_sigkill(sqlite_env: Any,
                                                                 executor_name: str,
                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        from cadenza import pipeline, task

        @task.shell
        def spawns() -> str:
            return ('sleep 300 & echo $! > "{folder}/grandchild.pid"; '
                    'echo $$ > "{folder}/shell.pid"; wait')

        @pipeline
        def orphan():
            spawns()

        orphan.run(executor="{executor_name}")
    """))
    env = {**os.environ, "CADENZA_HOME": str(sqlite_env.home)}
    driver = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                              start_new_session=True)
    try:
        wait_for(lambda: len(_pids(folder)) == 2, what="the command to start its grandchild")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    pids = _pids(folder)
    wait_for(lambda: all(_gone(p) for p in pids), timeout_s=30,
             what="the command and its grandchild to die with the driver")


def test_a_shell_task_is_cached_on_its_settings_and_inputs(sqlite_env: Any,
                                                           tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"

    def make(mode: str) -> Any:
        @task.shell(cache=True, env={"MODE": mode})
        def build(n: int) -> str:
            return f'echo run >> "{counter}"; echo "$MODE-{{n}}"'.replace("{n}", str(n))

        @pipeline
        def cached_shell(n: int = 1):
            build(n)

        return cached_shell

    first = make("fast").run(executor="inline")
    second = make("fast").run(executor="inline")
    assert first.outputs["build"] == second.outputs["build"] == "fast-1"
    assert second.task_states["build"] is TaskState.CACHED
    assert make("slow").run(executor="inline").outputs["build"] == "slow-1"  # env: a miss
    assert make("fast").run(n=2, executor="inline").outputs["build"] == "fast-2"  # input: a miss
    assert counter.read_text().count("run") == 3


def test_resume_does_not_run_a_finished_command_again(sqlite_env: Any, tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"
    flag = tmp_path / "fixed"

    @task.shell
    def extract() -> str:
        return f'echo run >> "{counter}"; echo extracted'

    @task.shell
    def load(what: str) -> str:
        return f'[ -f "{flag}" ] && echo "loaded {what}" || {{ echo "not yet" >&2; exit 2; }}'

    @pipeline
    def resumable_shell():
        load(extract())

    result = resumable_shell.run(executor="processes")
    assert result.state is RunState.FAILED and "not yet" in result.failed["load"].message
    flag.write_text("")
    again = result.resume()
    assert again.state is RunState.SUCCESS
    assert again.outputs["load"] == "loaded extracted"
    assert counter.read_text().count("run") == 1
