"""Data passing and the cache-hit path (issue 4's bench lines).

    python bench/data.py [--repeat 3] [--mb 200] [--rows 1000000]

1. A 200 MB NumPy array and a 1M-row DataFrame through a two-task chain on `processes`
   (the producer's worker writes the artifact, the consumer's worker reads it), beside a
   plain np.save / to_parquet + load of the same object in this process: MB/s and the ratio.
2. The driver's RSS growth during those runs (it must never hold the data).
3. A 500-task pipeline, fully cached, run again: seconds end to end.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("CADENZA_HOME", tempfile.mkdtemp(prefix="cadenza-bench-data-"))

import numpy as np
import pandas as pd
from data_workloads import cached_inc, consume_array, consume_frame, make_array, make_frame

from cadenza import pipeline, task

make_array_t = task(make_array)
consume_array_t = task(consume_array)
make_frame_t = task(make_frame)
consume_frame_t = task(consume_frame)
cached_inc_t = task(cache=True)(cached_inc)


@pipeline
def array_chain(mb: int = 200, salt: int = 0):
    consume_array_t(make_array_t(mb, salt))


@pipeline
def frame_chain(rows: int = 1_000_000, salt: int = 0):
    consume_frame_t(make_frame_t(rows, salt))


@pipeline
def cached500():
    for i in range(500):
        cached_inc_t.with_options(name=f"inc_{i}")(i)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline_array(mb: int) -> float:
    arr = make_array(mb, 0)
    t0 = time.perf_counter()
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    path = Path(tempfile.mkdtemp()) / "a.npy"
    path.write_bytes(buf.getvalue())
    np.load(io.BytesIO(path.read_bytes()), allow_pickle=False).sum()
    return time.perf_counter() - t0


def baseline_frame(rows: int) -> float:
    df = make_frame(rows, 0)
    t0 = time.perf_counter()
    path = Path(tempfile.mkdtemp()) / "f.parquet"
    df.to_parquet(path)
    pd.read_parquet(path)["x"].sum()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = []
    salt = iter(range(1, 10_000))  # new content each run, so no run is served by dedupe

    def timed(pipe, **params) -> float:
        t0 = time.perf_counter()
        result = pipe.run(executor="processes", **params)
        if not result.ok:
            raise SystemExit(f"{pipe.name}: {result.state} {result.failed}")
        return time.perf_counter() - t0

    timed(array_chain, mb=1, salt=next(salt))  # warm the pool
    rss_before = rss_mib()
    ours_array = statistics.median(timed(array_chain, mb=args.mb, salt=next(salt))
                                   for _ in range(args.repeat))
    ours_frame = statistics.median(timed(frame_chain, rows=args.rows, salt=next(salt))
                                   for _ in range(args.repeat))
    rss_after_array = rss_mib()  # peak RSS of the driver, before any baseline runs here
    base_array = statistics.median(baseline_array(args.mb) for _ in range(args.repeat))
    base_frame = statistics.median(baseline_frame(args.rows) for _ in range(args.repeat))
    frame_mb = make_frame(args.rows, 0).memory_usage(deep=True).sum() / 1e6
    rows.append(("numpy array", args.mb, ours_array, base_array))
    rows.append(("DataFrame", frame_mb, ours_frame, base_frame))

    timed(cached500)  # fill the cache
    cached = statistics.median(timed(cached500) for _ in range(args.repeat))

    print(f"{'object':<13}{'MB':>7}{'cadenza s':>11}{'MB/s':>8}{'baseline s':>12}{'MB/s':>8}"
          f"{'ratio':>7}")
    for name, mb, ours, base in rows:
        print(f"{name:<13}{mb:>7.0f}{ours:>11.2f}{mb / ours:>8.0f}{base:>12.2f}{mb / base:>8.0f}"
              f"{ours / base:>7.2f}")
    print()
    print(f"driver peak RSS: {rss_before:.0f} MiB before, {rss_after_array:.0f} MiB after the "
          f"array and DataFrame runs (+{rss_after_array - rss_before:.0f} MiB; the array is "
          f"{args.mb} MB)")
    print(f"500-task pipeline, fully cached, re-run: {cached:.2f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
