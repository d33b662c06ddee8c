"""The scheduler part of the fault campaign (PostgreSQL): three processes share one store
and one Redis stream of events (two `cadenza scheduler` and one `cadenza server
--scheduler`), each event one run of the chaos pipeline (tests/pipelines/chaos_events.py);
while they drive the runs, a seeded schedule hits whichever process drives a run:

  sched_kill   kill -9 of a `cadenza scheduler` (a new one is started in its place)
  server_kill  kill -9 of the `cadenza server --scheduler` (started again)
  sched_stop   SIGSTOP of a scheduler for 1.5 leases, then SIGCONT: another takes its runs
               over meanwhile, and the stopped one must not finish them a second time

Counted after: runs per event (duplicated, missed), and everything tests/chaos/verify.py
counts; the time from each fault to the end of every run the victim was driving.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.campaign import CADENZA, ROOT, Target
from tests.chaos.verify import Counts, check_runs, read_ledger

SCHED_KINDS = ("sched_kill", "server_kill", "sched_stop")
TARGET = "tests.pipelines.chaos_events:chaos_events"
SERVER_TARGET = str(ROOT / "tests" / "pipelines" / "chaos_events.py")


@dataclass
class Fault:
    kind: str
    pid: int
    runs: list[str]
    at: float
    recover_s: float | None = None


@dataclass
class SchedReport:
    events: int  # published: `events`, more while strikes were left (up to 3x)
    runs: int = 0
    duplicated: int = 0
    missed: int = 0
    faults: list[Fault] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    tracebacks: int = 0
    unfired: int = 0  # faults that found no process driving a run before the end
    logs: str = ""


class Fleet:
    """The three processes: name -> (kind, Popen); a killed one is started again."""

    def __init__(self, target: Target, stream_url: str, work: Path) -> None:
        self.target = target
        self.work = work
        self.env = target.env(CADENZA_TEST_REDIS_URL=stream_url)
        self.procs: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.started = 0

    def start(self, name: str, kind: str) -> None:
        self.started += 1
        log = open(self.work / f"{name}-{self.started}.log", "wb")  # noqa: SIM115
        if kind == "server":
            args = [*CADENZA, "server", "--scheduler", "--port", "0", "--executor",
                    "processes", "--max-runs", "3", SERVER_TARGET]
        else:
            args = [*CADENZA, "scheduler", "--executor", "processes", "--lease",
                    str(self.target.lease_s),
                    "--claim-idle", "1", "--max-runs", "3", TARGET]
        proc = subprocess.Popen(args, cwd=self.work, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs[name] = (kind, proc)

    def drivers(self) -> dict[int, str]:
        """pid -> name of every process that may drive runs: each fleet process, and for
        the server its `cadenza scheduler` child (cli/scheduler_child.py), which drives the
        server's runs under its own pid."""
        import psutil

        out: dict[int, str] = {}
        for name, (_, p) in self.procs.items():
            out[p.pid] = name
            try:
                for child in psutil.Process(p.pid).children(recursive=True):
                    out.setdefault(child.pid, name)
            except psutil.NoSuchProcess:
                continue
        return out

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work.glob("*.log")))

    def stop(self) -> None:
        for _, p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for _, p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _driver_pid(driver_id: str | None) -> int | None:
    parts = (driver_id or "").split(":")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def run_scheduler_campaign(target: Target, *, events: int, faults: int, seed: int,
                           redis: Any, work_s: float = 0.05, timeout_s: float = 900,
                           log: Any = None, most_events: int | None = None) -> SchedReport:
    """Publish `events` events (more while strikes are left), strike `faults` times
    (spread evenly over SCHED_KINDS), wait for every run to end."""
    log = log or (lambda text: None)
    rng = random.Random(seed)
    stream = f"cadenza.chaos.{uuid.uuid4().hex[:10]}"
    work = target.folder / "fleet"
    work.mkdir(parents=True, exist_ok=True)
    target.ledger.touch()
    fleet = Fleet(target, f"redis://127.0.0.1:6379/0?stream={stream}", work)
    store = target.store()
    report = SchedReport(events)
    # As many of each kind (the first ones get one more), in a seeded order. A kind is
    # struck as soon as a process of its sort drives a run, the kind with the most strikes
    # left first; events keep coming (up to 3x `events`) until every strike has landed, so
    # each kind is seen its share of times however the events fall among the processes.
    kinds = [SCHED_KINDS[i % len(SCHED_KINDS)] for i in range(faults)]
    rng.shuffle(kinds)
    most_events = max(events, most_events if most_events is not None else 3 * events)
    try:
        fleet.start("sched-a", "scheduler")
        fleet.start("sched-b", "scheduler")
        fleet.start("server", "server")
        _wait_group(redis, stream, work, consumers=3)
        published = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = store.list_runs(pipeline="chaos_events", limit=10 * most_events + 10)
            _settle(report, runs)
            in_flight = published - sum(1 for r in runs if r.state.is_final)
            wanted = published < events or (bool(kinds) and published < most_events)
            if wanted and in_flight < 4:  # a few at a time: faults find runs
                redis.xadd(stream, {"data": json.dumps({
                    "seed": 1000 + published, "ledger": str(target.ledger), "work_s": work_s,
                    "cache_group": published // 5})})
                published += 1
            drivers = fleet.drivers() if kinds else {}
            for kind in sorted(dict.fromkeys(kinds), key=lambda k: -kinds.count(k)):
                fault = _strike(fleet, drivers, runs, kind, rng)
                if fault is not None:
                    kinds.remove(kind)
                    report.faults.append(fault)
                    log(f"  scheduler fault {fault.kind} pid {fault.pid} runs {fault.runs}")
                    break
            if (not wanted and len(runs) >= published
                    and all(r.state.is_final for r in runs)
                    and all(f.recover_s is not None for f in report.faults)):
                break
            time.sleep(0.05)
        report.unfired = len(kinds)
    finally:
        fleet.stop()
        report.logs = fleet.logs()
        redis.delete(stream)
    report.events = published
    runs = store.list_runs(pipeline="chaos_events", limit=10 * published + 10)
    seeds = [r.params["seed"] for r in runs]
    report.runs = len(runs)
    report.duplicated = len(seeds) - len(set(seeds))
    report.missed = len(set(range(1000, 1000 + published)) - set(seeds))
    params = {r.run_id: {"seed": r.params["seed"], "cache_group": r.params["cache_group"]}
              for r in runs}
    report.counts = check_runs(store, [r.run_id for r in runs], read_ledger(target.ledger),
                               params)
    report.tracebacks = report.logs.count("Traceback (most recent call last)")
    return report


def _wait_group(redis: Any, stream: str, logs: Path, consumers: int) -> None:
    """Wait until `consumers` schedulers run their loops (each logs one line as it opens its
    event consumers; the logs are `logs`' *.log files) and the stream's consumer group
    exists. Not only until the group exists (the first scheduler makes it): the server's
    scheduler child starts last (the server's cold start and pipeline load, then the
    child's), and events published before it joined all went to the two plain schedulers,
    so the short campaign's server drove no run and server_kill never fired (session 9).
    Redis lists a consumer only once it has been given an entry, so the group's consumer
    count cannot tell."""
    from tests.fixtures.waiting import wait_for

    def ready() -> bool:
        started = sum(p.read_text(errors="replace").count(_LOOP_STARTED)
                      for p in logs.glob("*.log"))
        if started < consumers:
            return False
        try:
            return bool(redis.xinfo_groups(stream))
        except Exception:  # noqa: BLE001 - the stream does not exist yet
            return False

    wait_for(ready, timeout_s=180, what=f"{consumers} schedulers to join the event stream")


# What a scheduler logs as its loop starts, right before it opens its event consumers
# (triggers/loop.py run_forever).
_LOOP_STARTED = "cadenza.triggers.loop: scheduler "


def _settle(report: SchedReport, runs: list[Any]) -> None:
    """Record the recovery time of faults whose runs have all ended."""
    state = {r.run_id: r.state for r in runs}
    for f in report.faults:
        if f.recover_s is None and all(state.get(r) is not None and state[r].is_final
                                       for r in f.runs):
            f.recover_s = time.monotonic() - f.at


def _strike(fleet: Fleet, drivers: dict[int, str], runs: list[Any], kind: str,
            rng: random.Random) -> Fault | None:
    """Hit a process of `kind`'s sort that drives a run now; None when none does."""
    want = "server" if kind == "server_kill" else "scheduler"
    driving: dict[str, list[str]] = {}
    for r in runs:
        if r.state.is_final:
            continue
        name = drivers.get(_driver_pid(r.driver_id) or -1)
        if name is not None and fleet.procs[name][0] == want:
            driving.setdefault(name, []).append(r.run_id)
    if not driving:
        return None
    name = rng.choice(sorted(driving))
    proc = fleet.procs[name][1]
    if proc.poll() is not None:
        return None
    if kind == "sched_stop":
        os.kill(proc.pid, signal.SIGSTOP)
        at = time.monotonic()
        time.sleep(fleet.target.lease_s * 1.5)  # the fault: silent for longer than the lease
        os.kill(proc.pid, signal.SIGCONT)
    else:
        os.kill(proc.pid, signal.SIGKILL)
        at = time.monotonic()
        proc.wait()
        fleet.start(name, want)
    return Fault(kind, proc.pid, driving[name], at)


@dataclass
class FloodReport:
    events: int
    runs: int
    distinct: int
    succeeded: int
    seconds: float


def run_event_flood(target: Target, *, events: int, redis: Any, timeout_s: float = 900
                    ) -> FloodReport:
    """Three `cadenza scheduler` processes, `events` Redis events published at once: how
    many runs, how many distinct events among them (exactly `events` of each expected)."""
    from tests.fixtures.waiting import wait_for

    stream = f"cadenza.flood.{uuid.uuid4().hex[:10]}"
    work = target.folder / "flood"
    work.mkdir(parents=True, exist_ok=True)
    env = target.env(CADENZA_TEST_REDIS_URL=f"redis://127.0.0.1:6379/0?stream={stream}")
    procs = []
    for n in range(3):
        log = open(work / f"scheduler-{n}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [*CADENZA, "scheduler", "--executor", "threads", "--lease", str(target.lease_s),
             "--claim-idle", "1", "tests.pipelines.sched_ha:redis_events"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    store = target.store()
    try:
        _wait_group(redis, stream, work, consumers=3)
        started = time.monotonic()
        pipe = redis.pipeline()
        for n in range(events):
            pipe.xadd(stream, {"data": json.dumps({"n": n, "label": "flood"})})
        pipe.execute()

        def done() -> bool:
            runs = store.list_runs(pipeline="redis_events", limit=events * 2 + 10)
            return len(runs) >= events and all(r.state.is_final for r in runs)

        wait_for(done, timeout_s=timeout_s, every_s=0.5, what=f"{events} runs to end")
        seconds = time.monotonic() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        redis.delete(stream)
    runs = store.list_runs(pipeline="redis_events", limit=events * 2 + 10)
    return FloodReport(events, len(runs), len({r.params["n"] for r in runs}),
                       sum(1 for r in runs if str(r.state) == "success"), seconds)
