"""Split brain by hand (issue 18): `cadenza resume` takes over a run whose first `cadenza run`
is SIGSTOPped past its lease; when the stale driver wakes, it writes nothing more (its
commits are fenced on the run's driver, `WriteBatch.fence`), stops its worker and exits
with one clean error naming the new driver. Real processes and signals, on SQLite and
PostgreSQL. The fence on every write path through the store API: tests/integration/
test_write_fence.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from tests.chaos.campaign import CADENZA

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
LEASE_S = 1.0
TIMEOUT_S = 120.0

PIPELINE = '''
import os, time
from pathlib import Path
from cadenza import get_context, pipeline, task

LEDGER = Path(os.environ["SPLIT_LEDGER"])
GO = Path(os.environ["SPLIT_GO"])


@task
def slow() -> int:
    ctx = get_context()
    with LEDGER.open("a") as fh:
        fh.write(f"start {ctx.run_id} {ctx.attempt} {os.getpid()}\\n")
    while not GO.exists():  # the test's go-ahead, given once the stale driver has exited
        time.sleep(0.01)
    with LEDGER.open("a") as fh:
        fh.write(f"end {ctx.run_id} {ctx.attempt} {os.getpid()}\\n")
    return 1


@task
def after(x: int) -> int:
    return x + 1


@pipeline
def split():
    after(slow())
'''


def _until(what: str, check: Callable[[], object], *procs: subprocess.Popen[str]) -> object:
    """Wait for `check()` to be truthy (a condition: the processes do the waiting)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"{what}: {p.args} exited {p.returncode}\n{out}\n{err}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _starts(ledger: Path) -> list[list[str]]:
    if not ledger.exists():
        return []
    return [line.split() for line in ledger.read_text().splitlines() if line.startswith("start")]


def test_a_stopped_driver_taken_over_by_resume_writes_nothing_and_says_so(
        db_url: str, tmp_path: Path) -> None:
    (tmp_path / "split.py").write_text(PIPELINE)
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update(CADENZA_HOME=str(tmp_path / "home"), CADENZA_DATABASE_URL=db_url,
               CADENZA_LEASE_S=str(LEASE_S), SPLIT_LEDGER=str(ledger), SPLIT_GO=str(go),
               NO_COLOR="1", COLUMNS="200")
    run_cmd = [*CADENZA, "run", "split.py:split", "--executor", "processes"]
    stale = subprocess.Popen(run_cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    resume: subprocess.Popen[str] | None = None
    try:
        first = _until("the first driver's task to start", lambda: _starts(ledger), stale)
        run_id = first[0][1]  # type: ignore[index]
        store = open_store(db_url)
        stale_driver = store.get_run(run_id).driver_id
        os.killpg(stale.pid, signal.SIGSTOP)  # the driver and its worker

        def lease_expired() -> bool:
            run = store.get_run(run_id)
            assert run.heartbeat_at is not None
            return time.time() - run.heartbeat_at.timestamp() > LEASE_S * 1.5

        _until("the stopped driver's lease to expire", lease_expired)
        resume = subprocess.Popen([*CADENZA, "resume", run_id], cwd=tmp_path, env=env,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        _until("the resumed run's task to start", lambda: len(_starts(ledger)) == 2, resume)
        taken = store.get_run(run_id)
        assert taken.driver_id not in (None, stale_driver)

        os.killpg(stale.pid, signal.SIGCONT)
        out, err = stale.communicate(timeout=TIMEOUT_S)
        assert stale.returncode != 0, out
        assert f"run {run_id} was taken over by driver {taken.driver_id} while this one was " \
               "stopped" in err, err
        assert "Traceback" not in err + out, err
        assert "bug" not in err, err
        # Nothing of the stale driver landed: its end (the run cancelled, its driver let go,
        # the task cancelled) would have been its next commit. (The resumed driver wrote the
        # run's row before its task started, and writes it next at the run's end.)
        now = store.get_run(run_id)
        assert (now.state, now.driver_id) == (RunState.RUNNING, taken.driver_id)
        slow = next(t for t in store.get_task_instances(run_id) if t.task_id == "slow")
        # (Not necessarily `running` yet: the resumed driver may hold that commit back a
        # few ms, group commit; the stale driver's end would have written `cancelled`.)
        assert slow.state not in (TaskState.CANCELLED, TaskState.FAILED), slow
        # ... and it stopped its worker: the first attempt's body never goes on.
        stale_worker = int(first[0][3])  # type: ignore[index]
        _until("the stale driver's worker to be gone", lambda: not _alive(stale_worker))

        go.touch()
        out, err = resume.communicate(timeout=TIMEOUT_S)
        assert resume.returncode == 0, out + err
        assert store.get_run(run_id).state is RunState.SUCCESS
        ends = [line.split() for line in ledger.read_text().splitlines()
                if line.startswith("end")]
        # Only the resumed attempt's body ended, told by its worker's pid: its attempt number
        # is 2, or 1 again when the stale driver was stopped before its start committed.
        resumed_worker = _starts(ledger)[1][3]
        assert resumed_worker != str(stale_worker)
        assert [e[3] for e in ends] == [resumed_worker], ends
    finally:
        for p in (stale, resume):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
