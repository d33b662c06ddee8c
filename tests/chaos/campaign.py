"""The fault campaign: runs of the chaos pipeline (tests/pipelines/chaos.py) driven by real
`cadenza run` processes on one store, each hit by one fault from a seeded schedule, then
recovered the way a user would (`cadenza resume`), then checked (tests/chaos/verify.py).

Fault kinds (`KINDS`):
  worker_kill   kill -9 of a processes worker in the middle of a task
  driver_kill   kill -9 of the driver's process group (`cadenza run`), then `cadenza resume`;
                measures how long its workers outlive it (the window), how long anything
                it started does (forkserver, workers' guards, tasks' children), and how many
                task bodies end after the kill
  worker_stop   SIGSTOP of a worker in the middle of a task for 1.5 leases, then SIGCONT
  driver_stop   SIGSTOP of the driver's process group for 1.5 leases, then SIGCONT
  disk_full     the artifact root is a small tmpfs with a few KB left: the run fails naming
                the fix; recovery frees the space and resumes
  pg_terminate  (PostgreSQL) the driver's connection killed by pg_terminate_backend while its
                commit waits on a row lock (so the kill lands mid-commit)

Used by tests/chaos/test_campaign.py (a handful of runs) and bench/faults.py (100 per store).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.verify import Counts, LedgerLine, check_runs, read_ledger

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(ROOT / "tests" / "pipelines" / "chaos.py") + ":chaos"
_SCRIPT = Path(sys.executable).parent / "cadenza"
CADENZA = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cadenza"]
LEASE_S = 2.0
KINDS = ("worker_kill", "driver_kill", "worker_stop", "driver_stop", "disk_full")
PG_KINDS = (*KINDS, "pg_terminate")
RUN_TIMEOUT_S = 180.0


@dataclass
class Target:
    """One store under test and the folders of its campaign."""

    name: str  # "sqlite" or "postgres"
    url: str
    folder: Path
    small_disk: Path | None = None  # a mounted tmpfs, for disk_full
    lease_s: float = LEASE_S  # the drivers' lease; a stop fault lasts 1.5 of them

    @property
    def ledger(self) -> Path:
        return self.folder / "ledger"

    @property
    def app_name(self) -> str:
        return f"chaos_{self.folder.name}"[:60]

    def driver_url(self) -> str:
        if self.name != "postgres":
            return self.url
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}application_name={self.app_name}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
        env.update({
            "CADENZA_HOME": str(self.folder / "home"),
            "CADENZA_DATABASE_URL": self.driver_url(),
            "CADENZA_LEASE_S": str(self.lease_s),
            "CADENZA_INLINE_LIMIT_BYTES": "1024",  # the 2 KB outputs become artifacts
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        })
        env.update(extra)
        return env

    def store(self) -> Any:
        from cadenza.store import open_store

        return open_store(self.url)


@dataclass
class Outcome:
    index: int
    kind: str
    run_id: str | None = None
    fired: bool = False
    recover_s: float | None = None
    resumes: int = 0
    window_ms: float | None = None  # driver_kill: how long workers outlived the driver
    family_ms: float | None = None  # driver_kill: ... and every process it started
    ended_in_window: int = 0  # driver_kill: task bodies that ended after the kill
    note: str = ""
    output: str = ""  # what the user saw (driver and resume)
    errors: str = ""  # their stderr: no Python traceback may reach it


@dataclass
class Report:
    target: str
    outcomes: list[Outcome] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    tracebacks: int = 0
    locked: int = 0

    def fired(self) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes if o.fired)

    def recover_times(self) -> list[float]:
        return [o.recover_s for o in self.outcomes if o.fired and o.recover_s is not None]

    def windows(self) -> list[float]:
        return [o.window_ms for o in self.outcomes if o.window_ms is not None]

    def family_windows(self) -> list[float]:
        return [o.family_ms for o in self.outcomes if o.family_ms is not None]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class LedgerTail:
    """The ledger's new lines since the last poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.lines: list[LedgerLine] = []

    def poll(self) -> list[LedgerLine]:
        if not self.path.exists():
            return self.lines
        with open(self.path) as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[:chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for raw in complete.splitlines():
            parts = raw.split()
            if len(parts) == 7:
                self.lines.append(LedgerLine(parts[0], parts[1], int(parts[2]), int(parts[3]),
                                             int(parts[4]), parts[5], float(parts[6])))
        return self.lines

    def running(self, run_id: str, driver_pid: int) -> list[LedgerLine]:
        """Task bodies of `run_id` started and not ended (nor raised), newest last."""
        open_: dict[tuple[str, int, int], LedgerLine] = {}
        for line in self.lines:
            if line.run_id != run_id:
                continue
            key = (line.task_id, line.map_index, line.attempt)
            if line.phase == "start":
                open_[key] = line
            else:
                open_.pop(key, None)
        return [x for x in open_.values() if x.pid != driver_pid and _alive(x.pid)]

    def ends(self, run_id: str) -> int:
        return sum(1 for x in self.lines if x.run_id == run_id and x.phase == "end")


def _children(process: Any) -> list[Any]:
    import psutil

    try:
        return list(process.children())
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


class Campaign:
    """`runs` runs on `target`, one fault each from `kinds`, chosen by `seed`."""

    def __init__(self, target: Target, *, runs: int, seed: int, kinds: tuple[str, ...],
                 work_s: float = 0.05, log: Any = None) -> None:
        self.target = target
        self.runs = runs
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.work_s = work_s
        self.log = log or (lambda text: None)
        self.params: dict[str, dict[str, Any]] = {}
        target.folder.mkdir(parents=True, exist_ok=True)
        target.ledger.touch()
        self.tail = LedgerTail(target.ledger)

    # -- the campaign -----------------------------------------------------------------
    def run(self) -> Report:
        report = Report(self.target.name)
        # Every kind at least once per full cycle, in a seeded order.
        schedule: list[str] = []
        while len(schedule) < self.runs:
            cycle = list(self.kinds)
            self.rng.shuffle(cycle)
            schedule.extend(cycle)
        for i, kind in enumerate(schedule[:self.runs]):
            outcome = self.one(i, kind)
            report.outcomes.append(outcome)
            self.log(f"  {self.target.name} #{i:3d} {kind:12s} fired={outcome.fired!s:5s} "
                     f"recover={_fmt(outcome.recover_s)} s resumes={outcome.resumes} "
                     f"{outcome.note}")
        run_ids = [o.run_id for o in report.outcomes if o.run_id]
        store = self.target.store()
        report.counts = check_runs(store, run_ids, read_ledger(self.target.ledger),
                                   self.params)
        for o in report.outcomes:
            report.tracebacks += o.errors.count("Traceback (most recent call last)")
            report.locked += (o.output + o.errors).count("database is locked")
        return report

    def one(self, index: int, kind: str) -> Outcome:
        out = Outcome(index, kind)
        at_end = self.rng.randint(2, 16)  # later, only quick tasks are left to hit
        extra: dict[str, str] = {}
        if kind == "disk_full":
            if self.target.small_disk is None:
                out.note = "no small disk"
                return out
            art = self.target.small_disk / f"{self.target.folder.name}-{index}"
            extra["CADENZA_ARTIFACT_ROOT"] = str(art)
            _fill(self.target.small_disk, keep_kb=self.rng.randint(0, 40))
        seed, group = index, index // 5
        env = self.target.env(**extra)
        log_path = self.target.folder / f"run-{index}.out"
        err_path = self.target.folder / f"run-{index}.err"
        with open(log_path, "wb") as fh, open(err_path, "wb") as fe:
            proc = subprocess.Popen(
                [*CADENZA, "run", PIPELINE, "-p", f"seed={seed}", "-p",
                 f"ledger={self.target.ledger}", "-p", f"work_s={self.work_s}", "-p",
                 f"cache_group={group}", "--executor", "processes", "--json"],
                cwd=self.target.folder, env=env, stdout=fh, stderr=fe,
                stdin=subprocess.DEVNULL, start_new_session=True)
        fault_at: float | None = None
        try:
            out.run_id = self._wait_run_id(proc)
            if out.run_id is None:
                out.note = f"the run never started (exit {proc.poll()})"
                return out
            self.params[out.run_id] = {"seed": seed, "cache_group": group}
            inject = getattr(self, f"_{kind}")
            fault_at = inject(proc, out, at_end)
            _wait_exit(proc, RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                out.note += " driver hung: killed"
            out.output = log_path.read_text(errors="replace")
            out.errors = err_path.read_text(errors="replace")
        if kind == "disk_full":
            run = self.target.store().get_run(out.run_id)
            out.fired = str(run.state) == "failed" and "artifact store" in (out.output or "")
            fault_at = fault_at or time.monotonic()
            _fill(self.target.small_disk, keep_kb=None)  # recovery: free the space
        self._recover(out, env)
        if fault_at is not None and out.fired:
            out.recover_s = time.monotonic() - fault_at
        return out

    def _wait_run_id(self, proc: subprocess.Popen[bytes]) -> str | None:
        known = set(self.params)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.tail.poll():
                if line.run_id not in known:
                    return line.run_id
            if proc.poll() is not None:
                for line in self.tail.poll():
                    if line.run_id not in known:
                        return line.run_id
                return None
            time.sleep(0.005)
        return None

    def _wait_ends(self, proc: subprocess.Popen[bytes], run_id: str, n: int,
                   *, running: bool = False) -> LedgerLine | bool:
        """Until `n` task bodies of the run ended (and, with `running`, one is running in a
        worker: returned). False if the driver exits first."""
        while proc.poll() is None:
            self.tail.poll()
            if self.tail.ends(run_id) >= n:
                if not running:
                    return True
                live = self.tail.running(run_id, proc.pid)
                if live:
                    return live[-1]
            time.sleep(0.002)
        return False

    def _recover(self, out: Outcome, env: dict[str, str]) -> None:
        """`cadenza resume` until the run succeeds (at most 3 times)."""
        assert out.run_id is not None
        store = self.target.store()
        for _ in range(3):
            run = store.get_run(out.run_id)
            if str(run.state) == "success":
                return
            out.resumes += 1
            proc = subprocess.run([*CADENZA, "resume", out.run_id, "--json"],
                                  cwd=self.target.folder, env=env, capture_output=True,
                                  text=True, timeout=RUN_TIMEOUT_S, check=False,
                                  stdin=subprocess.DEVNULL)
            out.output += proc.stdout
            out.errors += proc.stderr

    # -- the faults: each returns when it struck (monotonic), or None -------------------
    def _worker_kill(self, proc: subprocess.Popen[bytes], out: Outcome, at: int) -> float | None:
        victim = self._wait_ends(proc, out.run_id or "", at, running=True)
        if not isinstance(victim, LedgerLine):
            return None
        os.kill(victim.pid, signal.SIGKILL)
        out.fired, out.note = True, f"{victim.task_id}[{victim.map_index}]"
        return time.monotonic()

    def _worker_stop(self, proc: subprocess.Popen[bytes], out: Outcome, at: int) -> float | None:
        victim = self._wait_ends(proc, out.run_id or "", at, running=True)
        if not isinstance(victim, LedgerLine):
            return None
        os.kill(victim.pid, signal.SIGSTOP)
        struck = time.monotonic()
        time.sleep(self.target.lease_s * 1.5)  # the fault: stopped for longer than the lease
        os.kill(victim.pid, signal.SIGCONT)
        out.fired, out.note = True, f"{victim.task_id}[{victim.map_index}]"
        return struck

    def _driver_stop(self, proc: subprocess.Popen[bytes], out: Outcome, at: int) -> float | None:
        if not self._wait_ends(proc, out.run_id or "", at):
            return None
        os.killpg(proc.pid, signal.SIGSTOP)
        struck = time.monotonic()
        time.sleep(self.target.lease_s * 1.5)  # the fault: stopped for longer than the lease
        os.killpg(proc.pid, signal.SIGCONT)
        out.fired = True
        return struck

    def _driver_kill(self, proc: subprocess.Popen[bytes], out: Outcome, at: int) -> float | None:
        import psutil

        if not self._wait_ends(proc, out.run_id or "", at):
            return None
        try:
            helpers = psutil.Process(proc.pid).children()  # the forkserver, in its group
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        # Workers: the processes that run task bodies (the forkserver's children); the rest
        # of the family: the forkserver, each worker's guard, what tasks started.
        workers = {p.pid for h in helpers for p in _children(h)}
        os.killpg(proc.pid, signal.SIGKILL)
        struck, wall = time.monotonic(), time.time()
        out.fired = True
        alive = [p.pid for p in family if _alive(p.pid)]
        out.note = (f"{len(workers & set(alive))} workers and {len(alive)} processes in all "
                    "outlived the driver's group")
        while alive:
            alive = [pid for pid in alive if _alive(pid)]
            now = time.monotonic()
            if out.window_ms is None and not workers.intersection(alive):
                out.window_ms = (now - struck) * 1000
            if now - struck > 30:
                out.note += "; a process was still alive 30 s later"
                break
            time.sleep(0.0005)
        out.family_ms = (time.monotonic() - struck) * 1000
        if out.window_ms is None:
            out.window_ms = out.family_ms
        proc.wait()
        self.tail.poll()
        out.ended_in_window = sum(1 for x in self.tail.lines if x.run_id == out.run_id
                                  and x.phase == "end" and x.at > wall)
        return struck

    def _disk_full(self, proc: subprocess.Popen[bytes], out: Outcome, at: int) -> float | None:
        return time.monotonic()  # the disk was full before the run started

    def _pg_terminate(self, proc: subprocess.Popen[bytes], out: Outcome, at: int) -> float | None:
        """Hold the run's task rows locked until the driver's next commit waits on them,
        then terminate the driver's backend: the commit dies half-way (rolled back)."""
        import psycopg

        if not self._wait_ends(proc, out.run_id or "", at):
            return None
        with psycopg.connect(_libpq(self.target.url), autocommit=False) as holder:
            holder.execute("SELECT 1 FROM task_instances WHERE run_id = %s FOR UPDATE",
                           (out.run_id,))
            struck = None
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                rows = holder.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND "
                    "wait_event_type = 'Lock'", (self.target.app_name,)).fetchall()
                if rows:
                    holder.execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))
                    struck = time.monotonic()
                    out.fired = True
                    break
                time.sleep(0.002)
            holder.rollback()
        return struck


def _libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq connection keywords (search_path kept)."""
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = [f"host={u.host or '127.0.0.1'}", f"port={u.port or 5432}",
             f"user={u.username or 'postgres'}", f"dbname={u.database}"]
    options = u.query.get("options")
    if options:
        parts.append(f"options='{unquote(str(options))}'")
    return " ".join(parts)


def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return


def _fill(disk: Path | None, *, keep_kb: int | None) -> None:
    """Fill `disk` but `keep_kb` KB with a filler file; None removes the filler."""
    if disk is None:
        return
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    if keep_kb is None:
        return
    free = shutil.disk_usage(disk).free
    size = max(0, free - keep_kb * 1024)
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            n = min(size, len(chunk))
            try:
                fh.write(chunk[:n])
            except OSError:
                break
            size -= n


def mount_small_disk(path: Path, size_mb: int = 32) -> str | None:
    """Mount a tmpfs of `size_mb` at `path`; None if mounted, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (disk_full is skipped)"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"mount -t tmpfs failed: {proc.stderr.strip()}"
    return None


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def new_folder(base: Path, name: str) -> Path:
    folder = base / f"{name}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    return folder


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class PostgresDatabase:
    """A database of its own on the test PostgreSQL server (dropped by `drop`), in which
    each campaign takes a fresh schema."""

    def __init__(self) -> None:
        from tests.fixtures.store import _connect_admin, _database_url

        self.name = f"cadenza_faults_{secrets.token_hex(5)}"
        with _connect_admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = _database_url(self.name)

    def schema(self) -> str:
        from tests.fixtures.store import new_postgres_schema

        return new_postgres_schema(self.url)

    def drop(self) -> None:
        from cadenza.store.db import store_cache
        from tests.fixtures.store import _connect_admin

        for key in list(store_cache.urls()):
            if self.name in key:
                cached = store_cache.peek(key)
                if cached is not None:
                    cached.dispose()
        with _connect_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
