"""Round-trip cost of the processes executor: worker start, submit->sink latency, throughput.

    python bench/executor_roundtrip.py [--repeats 5] [--calls 10000]

Prints medians of `--repeats` runs. Every measurement runs in a fresh interpreter, so the
forkserver's one-off start is counted where it happens (the first worker) and nowhere else.
The no-op task returns None, so no artifact is written: this is pure orchestration overhead.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

# Only light imports at the top: with forkserver and spawn, every worker imports this script
# again as __mp_main__ (standard multiprocessing behaviour), and we measure the executor here,
# not the script. The rest is imported inside functions.
from cadenza.executors.base import TaskCall


def noop() -> None:
    return None


def make_call(i: int, root: str) -> TaskCall:
    return TaskCall(
        run_id="bench",
        pipeline="bench",
        task_id="noop",
        map_index=i,
        attempt=1,
        fn=noop,
        fn_key=f"{__name__}:noop",
        inputs={},
        call_kinds={},
        artifact_root=root,
    )


def _run_one(ex: Any, call: TaskCall) -> Any:
    import queue

    q: queue.SimpleQueue[object] = queue.SimpleQueue()
    ex.submit(call, q.put)  # type: ignore[attr-defined]
    return q.get(timeout=60)


def measure_start(method: str, root: str, restarts: int = 5) -> dict[str, float]:
    """First worker (includes starting a forkserver), then replacements of a killed worker."""
    import signal
    import statistics

    from cadenza.executors.processes import ProcessExecutor

    ex = ProcessExecutor(max_workers=1, start_method=method)
    ex.start()
    _run_one(ex, make_call(0, root))
    first = ex.start_latencies_s[-1]
    again = []
    for i in range(restarts):
        os.kill(ex.worker_pids()[0], signal.SIGKILL)
        while not getattr(_run_one(ex, make_call(i, root)), "ok", False):
            pass  # the call raced the death and came back worker_lost; the next one runs
        again.append(ex.start_latencies_s[-1])
    ex.shutdown()
    return {"first_ms": first * 1e3, "replace_ms": statistics.median(again) * 1e3}


def measure_calls(method: str, root: str, n_seq: int, n_tp: int) -> dict[str, float]:
    import queue

    import psutil

    from cadenza.executors.processes import ProcessExecutor

    ex = ProcessExecutor(max_workers=2, start_method=method)
    ex.start()
    for i in range(50):  # warm up: both workers booted, function shipped
        _run_one(ex, make_call(i, root))
    lat = []
    for i in range(n_seq):
        call = make_call(i, root)
        t0 = time.perf_counter()
        _run_one(ex, call)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    # Throughput: keep both workers busy the way the engine does (submit up to free_slots,
    # then one more for each outcome), from one driver thread.
    q: queue.SimpleQueue[object] = queue.SimpleQueue()
    calls = [make_call(i, root) for i in range(n_tp)]
    # CPU time per call (driver: all its threads; workers: both processes) does not depend on
    # what else the machine runs, unlike wall time on a shared box.
    workers = [psutil.Process(pid) for pid in ex.worker_pids()]
    drv0, wkr0 = time.process_time(), sum(_cpu(w) for w in workers)
    t0 = time.perf_counter()
    sent = 0
    while sent < len(calls) and ex.free_slots() > 0:
        ex.submit(calls[sent], q.put)
        sent += 1
    for _ in range(n_tp):
        q.get(timeout=60)
        if sent < len(calls):
            ex.submit(calls[sent], q.put)
            sent += 1
    elapsed = time.perf_counter() - t0
    drv_cpu = time.process_time() - drv0
    wkr_cpu = sum(_cpu(w) for w in workers) - wkr0
    # Backlog mode: everything submitted at once, the executor queues and feeds workers.
    t1 = time.perf_counter()
    for c in calls:
        ex.submit(c, q.put)
    for _ in range(n_tp):
        q.get(timeout=60)
    elapsed_bulk = time.perf_counter() - t1
    ex.shutdown()
    return {
        "rt_p50_us": lat[len(lat) // 2] * 1e6,
        "rt_p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        "tp_per_s": n_tp / elapsed,
        "tp_us_per_call": elapsed / n_tp * 1e6,
        "bulk_per_s": n_tp / elapsed_bulk,
        "drv_cpu_us": drv_cpu / n_tp * 1e6,
        "wkr_cpu_us": wkr_cpu / n_tp * 1e6,
    }


def _cpu(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _child(args: Any) -> None:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        if args.what == "start":
            out = measure_start(args.method, root)
        else:
            out = measure_calls(args.method, root, args.seq, args.calls)
    print(json.dumps(out))


def _in_fresh_process(what: str, method: str, args: Any) -> dict[str, float]:
    import json
    import subprocess

    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--method",
        method,
        "--calls",
        str(args.calls),
        "--seq",
        str(args.seq),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    import argparse
    import statistics

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seq", type=int, default=2_000)
    parser.add_argument("--methods", default="fork,forkserver,spawn")
    parser.add_argument("--child", dest="what", default=None)
    parser.add_argument("--method", default="forkserver")
    args = parser.parse_args()
    if args.what:
        _child(args)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeats}")
    print(
        f"{'start method':<12} {'1st worker ms':>14} {'replace ms':>11} {'rt p50 us':>10} "
        f"{'rt p99 us':>10} {'2w calls/s':>11} {'us/call':>8} {'bulk/s':>8} "
        f"{'drv cpu us':>10} {'wkr cpu us':>10}"
    )
    for method in args.methods.split(","):
        starts = [_in_fresh_process("start", method, args) for _ in range(args.repeats)]
        calls = [_in_fresh_process("calls", method, args) for _ in range(args.repeats)]

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"{method:<12} {med(starts, 'first_ms'):>14.1f} {med(starts, 'replace_ms'):>11.1f} "
            f"{med(calls, 'rt_p50_us'):>10.0f} {med(calls, 'rt_p99_us'):>10.0f} "
            f"{med(calls, 'tp_per_s'):>11.0f} {med(calls, 'tp_us_per_call'):>8.0f} "
            f"{med(calls, 'bulk_per_s'):>8.0f} "
            f"{med(calls, 'drv_cpu_us'):>10.1f} {med(calls, 'wkr_cpu_us'):>10.1f}"
        )


if __name__ == "__main__":
    main()
