"""Several `cadenza scheduler` processes against one PostgreSQL store (SPEC §4): every
event and every interval yields exactly one run; a scheduler killed with kill -9 has its
runs finished by another after its lease, with no finished task run again.

The schedulers are real `cadenza scheduler` processes talking to the real PostgreSQL and
Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from cadenza.store.scheduling import scheduling_store
from tests.e2e.test_cli_support import CADENZA
from tests.fixtures.waiting import wait_for
from tests.integration.test_events import REDIS, _redis_client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def stream() -> Iterator[tuple[str, object]]:
    client = _redis_client()
    name = f"cadenza.ha.{uuid.uuid4().hex[:10]}"
    yield name, client
    client.delete(name)
    client.close()


class Schedulers:
    """Scheduler processes sharing one store; stopped (or killed) at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *targets: str, lease_s: float = 2.0) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"scheduler-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*CADENZA, "scheduler", "--executor", "threads", "--lease", str(lease_s),
             "--claim-idle", "1", *targets],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.tmp_path.glob("scheduler-*.log")))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def schedulers(tmp_path: Path, pg_url: str, stream) -> Iterator[Schedulers]:
    name, _ = stream
    env = {**os.environ,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "CADENZA_HOME": str(tmp_path / "home"),
           "CADENZA_DATABASE_URL": pg_url,
           "CADENZA_TEST_REDIS_URL": f"redis://{REDIS}/0?stream={name}",
           "CADENZA_TEST_MARKS": str(tmp_path / "marks")}
    (tmp_path / "marks").mkdir()
    group = Schedulers(tmp_path, env)
    try:
        yield group
    finally:
        group.stop()


def _groups_ready(client, stream: str, group: str, consumers: int) -> bool:
    try:
        info = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
    except Exception:  # noqa: BLE001 - the stream does not exist yet
        return False
    return bool(info)


def test_three_schedulers_make_exactly_one_run_per_event_and_per_interval(
        schedulers: Schedulers, pg_url: str, stream):
    name, client = stream
    targets = ("tests.pipelines.sched_ha:redis_events", "tests.pipelines.sched_ha:hourly_catchup")
    for _ in range(3):
        schedulers.start(*targets)
    wait_for(lambda: _groups_ready(client, name, "cadenza.redis_events", 3), timeout_s=60)
    pipe = client.pipeline()
    for n in range(500):
        pipe.xadd(name, {"data": json.dumps({"n": n, "label": "ha"})})
    pipe.execute()

    store = open_store(pg_url)
    sched = scheduling_store(store)

    def all_done() -> bool:
        runs = store.list_runs(pipeline="redis_events", limit=2000)
        return len(runs) >= 500 and all(r.state.is_final for r in runs)

    try:
        wait_for(all_done, timeout_s=240, every_s=0.5)
    except AssertionError:
        runs = store.list_runs(pipeline="redis_events", limit=2000)
        print(Counter((r.state, bool(r.driver_id)) for r in runs), schedulers.logs()[-5000:])
        raise
    runs = store.list_runs(pipeline="redis_events", limit=2000)
    assert len(runs) == 500, schedulers.logs()[-3000:]
    assert sorted(r.params["n"] for r in runs) == list(range(500))
    assert all(r.state is RunState.SUCCESS for r in runs)
    assert sched.count_events("redis_events") == 500
    assert {r.executor for r in runs} == {"threads"}

    now = datetime.now(UTC)
    hourly = store.list_runs(pipeline="hourly_catchup", limit=2000)
    first = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = int((now.replace(minute=0, second=0, microsecond=0) - first) // timedelta(hours=1))
    logical = [r.logical_date for r in hourly]
    assert len(logical) == len(set(logical)), "an interval ran twice"
    assert expected - 1 <= len(logical) <= expected  # an hour may turn during the test
    assert client.xpending(name, "cadenza.redis_events")["pending"] == 0
    assert all(p.poll() is None for p in schedulers.procs), schedulers.logs()[-3000:]


def test_a_killed_scheduler_s_runs_are_finished_elsewhere_without_rerunning_finished_tasks(
        schedulers: Schedulers, pg_url: str, stream, tmp_path: Path):
    name, client = stream
    schedulers.env["CADENZA_TEST_SLOW_S"] = "3"
    target = "tests.pipelines.sched_ha:redis_events"
    victim = schedulers.start(target)
    wait_for(lambda: _groups_ready(client, name, "cadenza.redis_events", 1), timeout_s=60)
    for n in range(4):
        client.xadd(name, {"data": json.dumps({"n": n})})
    store = open_store(pg_url)

    def victim_mid_run() -> list[str]:
        mid = []
        for r in store.list_runs(pipeline="redis_events"):
            if r.driver_id and f":{victim.pid}:" in r.driver_id:
                ti = store.get_task_instance(r.run_id, "slow_step")
                first = store.get_task_instance(r.run_id, "first_step")
                if ti and ti.state is TaskState.RUNNING and first.state is TaskState.SUCCESS:
                    mid.append(r.run_id)
        return mid

    mid = wait_for(victim_mid_run, timeout_s=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # What the store says had finished when the victim died. A first_step whose outcome
    # the victim had not committed yet may run again (its work was never recorded).
    committed = {store.get_run(r.run_id).params["n"] for r in store.list_runs(
        pipeline="redis_events") if (ti := store.get_task_instance(r.run_id, "first_step"))
        and ti.state is TaskState.SUCCESS}
    schedulers.start(target)

    def finished() -> bool:
        runs = store.list_runs(pipeline="redis_events")
        return len(runs) == 4 and all(r.state.is_final for r in runs)

    wait_for(finished, timeout_s=120, every_s=0.25)
    runs = store.list_runs(pipeline="redis_events")
    assert all(r.state is RunState.SUCCESS for r in runs), schedulers.logs()[-3000:]
    for run_id in mid:
        attempts = store.get_attempts(run_id, "slow_step")
        assert [a.error.kind for a in attempts if a.error] == ["interrupted"]
        assert len(store.get_attempts(run_id, "first_step")) == 1
    # No finished task ran again: each first_step committed before the kill ran once.
    marks = sorted(p.name for p in (tmp_path / "marks").iterdir())
    assert marks == [f"first_step.{n}" for n in range(4)]
    assert committed >= {store.get_run(r).params["n"] for r in mid}
    for n in committed:
        assert len((tmp_path / "marks" / f"first_step.{n}").read_text().splitlines()) == 1
