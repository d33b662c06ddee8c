"""The fault campaign (issue 18): prove "a crash loses nothing" with counts.

    python bench/faults.py [--runs 100] [--seed 18] [--only sqlite,postgres,schedulers,
                            clock,contention,flood] [--events 120] [--sched-faults 39]
                           [--contention-s 60] [--flood 1000] [--work-s 0.05]

Each store gets a fresh database (SQLite file; PostgreSQL: a database of its own, a fresh
schema in it) and `--runs` runs of the 30-task chaos pipeline (tests/pipelines/chaos.py:
mapped, cached, retried and branch tasks), each hit by one fault from a seeded schedule
(tests/chaos/campaign.py says what each does), then recovered as a user would
(`cadenza resume`), then counted from the store and the ledger the tasks append to
(tests/chaos/verify.py). Then, on PostgreSQL, the scheduler fleet (two `cadenza scheduler`
and a `cadenza server --scheduler`) hit by kill -9 and SIGSTOP; clock jumps for schedulers
on both stores; 4 processes driving runs on one SQLite file; 3 schedulers x `--flood`
Redis events. Prints one table; every count in it must be 0.

Needs root for the disk_full fault (it mounts a small tmpfs), PostgreSQL on
127.0.0.1:5432 and Redis on 127.0.0.1:6379 (their rows are skipped when unreachable).
Times are wall-clock on whatever machine runs it; quote them with its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.campaign import (
    KINDS,
    PG_KINDS,
    Campaign,
    PostgresDatabase,
    Report,
    Target,
    median,
    mount_small_disk,
    new_folder,
    pct,
    unmount,
)


def log(text: str) -> None:
    print(text, flush=True)


def fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}"


def postgres_ok() -> str | None:
    from tests.fixtures.store import postgres_available

    return postgres_available()


def redis_client() -> object | None:
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - reported: the rows are skipped
        log(f"Redis unreachable ({exc}): scheduler rows skipped")
        return None


def store_campaign(name: str, base: Path, disk: Path | None, args: argparse.Namespace
                   ) -> Report:
    folder = new_folder(base, name)
    db = None
    if name == "postgres":
        db = PostgresDatabase()
        target = Target(name, db.schema(), folder, disk)
        kinds = PG_KINDS
    else:
        target = Target(name, f"sqlite:///{folder / 'store.db'}", folder, disk)
        kinds = KINDS
    if disk is None:
        kinds = tuple(k for k in kinds if k != "disk_full")
    started = time.monotonic()
    try:
        report = Campaign(target, runs=args.runs, seed=args.seed, kinds=kinds,
                          work_s=args.work_s, log=log).run()
    finally:
        if db is not None:
            db.drop()
    log(f"{name}: {args.runs} runs in {time.monotonic() - started:.0f} s")
    return report


def _table(header: str, rows: Sequence[Sequence[str]]) -> None:
    """A markdown table: `header` is its first line ("| a | b |"), then one line per row."""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--only", default="sqlite,postgres,schedulers,clock,contention,flood")
    parser.add_argument("--events", type=int, default=120)
    parser.add_argument("--sched-faults", type=int, default=39)  # 13 of each kind: >= 10 fire
    parser.add_argument("--contention-s", type=float, default=60.0)
    parser.add_argument("--flood", type=int, default=1000)
    parser.add_argument("--work-s", type=float, default=0.05)
    args = parser.parse_args()
    only = set(args.only.split(","))
    base = Path(tempfile.mkdtemp(prefix="cadenza-faults-"))
    os.environ.setdefault("CADENZA_HOME", str(base / "home"))
    pg = postgres_ok()
    if pg:
        log(f"PostgreSQL: {pg}: its rows are skipped")
    disk = base / "small-disk"
    why = mount_small_disk(disk, size_mb=64)
    if why:
        log(f"disk_full skipped: {why}")
    rows: list[tuple[str, ...]] = []
    fired: Counter[str] = Counter()
    windows: list[float] = []
    in_window = 0
    all_zero = True
    try:
        for name in ("sqlite", "postgres"):
            if name not in only or (name == "postgres" and pg):
                continue
            rep = store_campaign(name, base, None if why else disk, args)
            c = rep.counts
            fired.update(rep.fired())
            windows += rep.windows()
            in_window += sum(o.ended_in_window for o in rep.outcomes)
            times = rep.recover_times()
            rows.append((name, str(c.runs), str(c.task_instances), str(sum(rep.fired().values())),
                         str(c.committed_rerun), str(c.at_least_once), str(c.lost),
                         str(c.corrupt), str(c.non_final + c.failed), str(rep.tracebacks),
                         str(rep.locked), fmt(median(times)), fmt(pct(times, 0.95))))
            bad = c.bad + rep.tracebacks + rep.locked
            all_zero &= bad == 0
            for p in c.problems[:20]:
                log(f"  PROBLEM {name}: {p}")
    finally:
        if not why:
            unmount(disk)
    sched_rows: list[tuple[str, ...]] = []
    client = redis_client() if not pg else None
    if client is not None and "schedulers" in only:
        from tests.chaos.schedulers import SCHED_KINDS, run_scheduler_campaign

        db = PostgresDatabase()
        try:
            target = Target("postgres", db.schema(), new_folder(base, "fleet"), None)
            srep = run_scheduler_campaign(target, events=args.events, faults=args.sched_faults,
                                          seed=args.seed, redis=client, work_s=args.work_s,
                                          log=log)
        finally:
            db.drop()
        c = srep.counts
        fired.update(f.kind for f in srep.faults)
        times = [f.recover_s for f in srep.faults if f.recover_s is not None]
        sched_rows.append(("schedulers (pg)", str(srep.events), str(srep.runs),
                           str(len(srep.faults)), str(srep.unfired), str(srep.duplicated),
                           str(srep.missed), str(c.committed_rerun), str(c.at_least_once),
                           str(c.lost + c.corrupt), str(c.non_final + c.failed),
                           str(srep.tracebacks), fmt(median(times)), fmt(pct(times, 0.95))))
        all_zero &= (srep.duplicated + srep.missed + c.bad + srep.tracebacks) == 0
        by_kind = Counter(f.kind for f in srep.faults)
        log("scheduler faults by kind: " + ", ".join(f"{k} {by_kind[k]}" for k in SCHED_KINDS)
            + f" ({srep.unfired} left unfired; {srep.events} events published)")
    clock_rows = []
    if "clock" in only:
        from tests.chaos.clockjump import run_clock_campaign

        for name in ("sqlite", "postgres"):
            if name == "postgres" and pg:
                continue
            folder = new_folder(base, f"clock-{name}")
            db = PostgresDatabase() if name == "postgres" else None
            url = db.schema() if db else f"sqlite:///{folder / 'clock.db'}"
            try:
                crep = run_clock_campaign(url, folder, ticks=2000, jumps=40, seed=args.seed)
            finally:
                if db:
                    db.drop()
            fired["clock_jump"] += crep.jumps
            clock_rows.append((name, str(crep.jumps), f"{crep.forward}/{crep.backward}",
                               str(crep.runs), str(crep.duplicated), str(crep.missed),
                               str(crep.extra)))
            all_zero &= crep.duplicated + crep.missed + crep.extra == 0
    contention = None
    if "contention" in only:
        from tests.chaos.contention import run_contention

        folder = new_folder(base, "contention")
        contention = run_contention(f"sqlite:///{folder / 'shared.db'}", folder, processes=4,
                                    seconds=args.contention_s)
        all_zero &= (contention.errors + contention.failed_runs + contention.locked
                     + contention.tracebacks) == 0
    flood = None
    if client is not None and "flood" in only:
        from tests.chaos.schedulers import run_event_flood

        db = PostgresDatabase()
        try:
            flood = run_event_flood(Target("postgres", db.schema(), new_folder(base, "flood"),
                                           None), events=args.flood, redis=client)
        finally:
            db.drop()
        all_zero &= flood.runs == flood.events == flood.distinct == flood.succeeded

    load = os.getloadavg()
    print()
    print(f"## Fault campaign (seed {args.seed}; load average {load[0]:.1f} on "
          f"{os.cpu_count()} CPUs)")
    print()
    if rows:
        _table("| store | runs | task instances | faults | finished+committed run twice | "
              "at-least-once re-runs (killed mid-attempt) | outputs lost | artifacts corrupt "
              "| runs not finished/failed after recovery | tracebacks shown | "
              "'database is locked' | recover median | recover p95 |",
               rows)
    if windows:
        print(f"driver_kill: workers outlived the killed process group by {fmt(median(windows), 'ms')} "
              f"median, {fmt(pct(windows, 0.95), 'ms')} p95, {fmt(max(windows), 'ms')} max "
              f"({len(windows)} kills); task bodies that ended in that window: {in_window}")
        print()
    if sched_rows:
        _table("| schedulers | events | runs | faults | unfired | runs duplicated | runs missed | "
              "finished+committed run twice | at-least-once | outputs lost/corrupt | "
              "runs not finished/failed | tracebacks | recover median | recover p95 |",
               sched_rows)
    if clock_rows:
        _table("| clock jumps | jumps | forward/back | runs | duplicated | missed | "
              "for intervals never reached |",
               clock_rows)
    if contention is not None:
        print(f"SQLite, {contention.processes} processes x {contention.seconds:g} s driving "
              f"runs: {contention.runs} runs, {contention.failed_runs} failed, "
              f"{contention.errors} errors raised, {contention.locked} 'database is locked', "
              f"{contention.tracebacks} tracebacks")
    if flood is not None:
        print(f"PostgreSQL, 3 schedulers x {flood.events} Redis events: {flood.runs} runs "
              f"({flood.distinct} distinct events, {flood.succeeded} succeeded) in "
              f"{flood.seconds:.1f} s")
    print()
    print("faults seen: " + ", ".join(f"{k} {v}" for k, v in sorted(fired.items())))
    print("every count 0: " + ("yes" if all_zero else "NO"))
    return 0 if all_zero else 1


if __name__ == "__main__":
    sys.exit(main())
