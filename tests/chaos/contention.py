"""Concurrency on one SQLite store: several processes each drive runs back to back for a
while (`python -m tests.chaos.contention DB LEDGER SECONDS`, one per process), and no user
may see "database is locked": every run ends successful, and nothing is raised.

`run_contention(db_url, folder, processes, seconds)` starts them and counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ContentionReport:
    processes: int
    seconds: float
    runs: int
    failed_runs: int
    errors: int  # exceptions raised to the caller
    locked: int  # of which, or in any output, "database is locked"
    tracebacks: int
    output: str


def main(db_url: str, ledger: str, seconds: float) -> int:
    """Drive chaos runs (threads, no task sleep) until `seconds` have passed."""
    os.environ["CADENZA_DATABASE_URL"] = db_url
    from tests.pipelines.chaos import chaos

    deadline = time.monotonic() + seconds
    runs = failed = errors = 0
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            result = chaos.run(seed=os.getpid() * 1000 + n, ledger=ledger, work_s=0.0,
                               cache_group=n % 3, executor="threads")
        except Exception as exc:  # noqa: BLE001 - counted: what a user would have seen
            errors += 1
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
            continue
        runs += 1
        if str(result.state) != "success":
            failed += 1
            print(f"FAILED {result.run_id}: {result.failed}", flush=True)
    print(f"RESULT {runs} {failed} {errors}", flush=True)
    return 0


def run_contention(db_url: str, folder: Path, *, processes: int, seconds: float
                   ) -> ContentionReport:
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update({"CADENZA_HOME": str(folder / "home"), "CADENZA_INLINE_LIMIT_BYTES": "1024",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    ledger = folder / "ledger"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.contention", db_url, str(ledger), str(seconds)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(processes)]
    outputs = [p.communicate(timeout=seconds + 300)[0] for p in procs]
    runs = failed = errors = 0
    for text in outputs:
        for line in text.splitlines():
            if line.startswith("RESULT "):
                r, f, e = map(int, line.split()[1:])
                runs, failed, errors = runs + r, failed + f, errors + e
    text = "\n".join(outputs)
    return ContentionReport(processes, seconds, runs, failed, errors,
                            text.count("database is locked"),
                            text.count("Traceback (most recent call last)"), text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
