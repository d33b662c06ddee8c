"""Per-task environments (executors/envs.py): build cold vs cached, and the cost of a call.

    python bench/envs.py [--repeats 5] [--requirements six==1.16.0 ...]

Prints medians of `--repeats`:
  build cold     a new env cache each time (uv's own download cache stays warm, as on a
                 machine that built any env before); `uv venv` + `uv pip install` + freeze
  build cached   ensure_env() of an env that is there: the marker read (the fast path)
  first isolated the first call of a no-op task with requirements on `processes`: starts an
                 env worker (the env's python importing Cadenza's worker)
  call isolated  submit -> outcome of the same task again (a kept env worker)
  call pooled    the same task without requirements on the same executor (a warm worker)
Wall-clock figures: on the shared 2-core VM they move with the load; read them as orders of
magnitude, not as a test.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cadenza.executors.base import TaskCall


def noop() -> None:
    return None


def make_call(i: int, root: str, requirements: tuple[str, ...]) -> TaskCall:
    return TaskCall(run_id="bench", pipeline="bench", task_id="noop", map_index=i, attempt=1,
                    fn=noop, fn_key=f"{__name__}:noop", inputs={}, call_kinds={},
                    artifact_root=root, requirements=requirements)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requirements", nargs="*", default=["six==1.16.0"])
    args = parser.parse_args()
    reqs = tuple(args.requirements)

    from cadenza.executors.envs import ensure_env
    from cadenza.executors.processes import ProcessExecutor

    tmp = Path(tempfile.mkdtemp(prefix="cadenza-bench-envs-"))
    cold, cached = [], []
    for i in range(args.repeats):
        root = tmp / f"cold{i}"
        t0 = time.perf_counter()
        ensure_env(reqs, None, root=root)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ensure_env(reqs, None, root=root)
        cached.append(time.perf_counter() - t0)

    import os

    os.environ["CADENZA_ENVS_DIR"] = str(tmp / "cold0")
    ex = ProcessExecutor(max_workers=2)
    ex.start()

    def one(call: TaskCall) -> Any:
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        ex.submit(call, q.put)
        return q.get(timeout=120)

    artifacts = str(tmp / "artifacts")
    one(make_call(0, artifacts, ()))  # warm the pool
    t0 = time.perf_counter()
    assert one(make_call(0, artifacts, reqs)).ok
    first = [time.perf_counter() - t0]
    iso, pooled = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        out = one(make_call(i, artifacts, reqs))
        iso.append(time.perf_counter() - t0)
        assert out.ok, out.error
        t0 = time.perf_counter()
        one(make_call(i, artifacts, ()))
        pooled.append(time.perf_counter() - t0)
    ex.shutdown()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:10.1f}"

    print(f"requirements: {' '.join(reqs)}   python {sys.version.split()[0]}   "
          f"medians of {args.repeats}")
    print(f"{'what':<16}{'ms':>10}")
    print(f"{'build cold':<16}{ms(cold)}")
    print(f"{'build cached':<16}{ms(cached)}")
    print(f"{'first isolated':<16}{ms(first)}")
    print(f"{'call isolated':<16}{ms(iso)}")
    print(f"{'call pooled':<16}{ms(pooled)}")


if __name__ == "__main__":
    main()
