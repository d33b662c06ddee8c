"""Retention at scale (issue 11 item 7's bench line): `cadenza gc` on a 10,000-run store.

    python bench/gc.py [--runs 10000] [--artifacts 2000] [--repeat 3] [--database-url URL]

Each repetition builds a fresh store through the store API in bulk (WriteBatch of 500 runs:
runs, 3 task instances each, lineage records; one transaction per batch): 10 pipelines,
`--artifacts` real artifact files (a quarter of the runs share one file, so shared artifacts
are exercised), aged by two hours. Then it times the real `cadenza gc --keep-last 10
--grace 1h` as a subprocess (CLI start-up included): it deletes all but 100 runs, the files
only those runs referenced, and their lineage records. Prints the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path


def build(home: Path, url: str, runs: int, artifacts: int) -> None:
    from cadenza.artifacts.store import ArtifactStore
    from cadenza.core import clock
    from cadenza.core.records import (
        ArtifactRecord,
        RunRecord,
        TaskInstanceRecord,
        ValueRef,
        WriteBatch,
    )
    from cadenza.core.states import RunState, TaskState
    from cadenza.store import open_store

    store = open_store(url)
    files = ArtifactStore(str(home / "artifacts"))
    refs: list[ValueRef] = []
    for i in range(artifacts):
        uri, sha = files.put_bytes(f"artifact {i}".encode() * 200, ".bin")
        refs.append(ValueRef(kind="artifact", uri=uri, sha256=sha, serializer="pickle",
                             size=os.path.getsize(uri), type_name="bytes"))
        past = time.time() - 7200
        os.utime(uri, (past, past))
    start = clock.now() - timedelta(days=60)
    batch = WriteBatch()
    seen: set[str] = set()
    for i in range(runs):
        rid = f"bench{i:08d}"
        at = start + timedelta(seconds=i * 60)
        batch.new_runs.append(RunRecord(
            run_id=rid, pipeline=f"pipe{i % 10}", state=RunState.SUCCESS, created_at=at,
            started_at=at, ended_at=at + timedelta(seconds=5), executor="processes",
            source="bench.py:pipe"))
        ref = refs[0] if i % 4 == 0 else refs[i % len(refs)]
        for t, out in (("extract", ValueRef(kind="json", value=[1, 2, 3])), ("train", ref),
                       ("report", ValueRef(kind="json", value={"auc": 0.9}))):
            batch.new_task_instances.append(TaskInstanceRecord(
                run_id=rid, task_id=t, state=TaskState.SUCCESS, attempt=1, started_at=at,
                ended_at=at + timedelta(seconds=1), output=out))
        if ref.sha256 not in seen:
            seen.add(ref.sha256 or "")
            batch.artifacts.append(ArtifactRecord(
                sha256=ref.sha256 or "", uri=ref.uri or "", size=ref.size, serializer="pickle",
                type_name="bytes", run_id=rid, task_id="train", map_index=-1, attempt=1,
                code_fingerprint="bench",
                created_at=at))
        if len(batch.new_runs) == 500:
            store.write(batch)
            batch = WriteBatch()
    store.write(batch)
    store.dispose()


def time_gc(home: Path, url: str) -> tuple[float, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update(CADENZA_HOME=str(home), CADENZA_DATABASE_URL=url)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cadenza", "gc", "--keep-last", "10",
                           "--json"], env=env, cwd=home, capture_output=True, text=True,
                          check=True)
    elapsed = time.perf_counter() - t0
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--artifacts", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None,
                        help="an empty database (default: a new SQLite file per repetition)")
    args = parser.parse_args()
    times = []
    for _ in range(args.repeat):
        home = Path(tempfile.mkdtemp(prefix="cadenza-bench-gc-"))
        url = args.database_url or f"sqlite:///{home / 'cadenza.db'}"
        t0 = time.perf_counter()
        build(home, url, args.runs, args.artifacts)
        built = time.perf_counter() - t0
        elapsed, report = time_gc(home, url)
        times.append(elapsed)
        print(f"  built {args.runs} runs in {built:.1f} s; gc: {elapsed:.2f} s, "
              f"{report['runs_deleted']} runs, {report['artifacts_deleted']} artifacts, "
              f"{report['bytes_freed']} bytes, {report['log_files_deleted']} log files")
    print(f"gc of a {args.runs}-run store ({args.artifacts} artifacts): "
          f"{statistics.median(times):.2f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
