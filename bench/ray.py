"""The ray executor: per-task overhead beside processes, a 10k map, Ray's own round trips
(tasks vs actors), and a task environment built cold vs cached by Ray's runtime_env.

    python bench/ray.py [--repeat 3] [--workloads chain200,wide500,map1000] [--skip-envs]

The cluster: CADENZA_RAY_ADDRESS when set, else a local Ray started here with 2 CPUs (this
machine's). Workloads are bench/overhead.py's, each a median of N after one warm-up run:
overhead ms/task = (cadenza - bare Python calling the same functions) / tasks, for `ray` and
`processes` alike. Then:
  map10k        expand over 10,000 on ray (one run after the warm-up)
  ray task      `f.remote()` of a no-op Ray task: one at a time, and 500 in flight
  ray actor     an actor method call: one at a time, and 500 in flight
  env cold      a one-task pipeline with requirements=[six==X] on ray, new env cache
  env cached    the same again (the env is found in the node's cache)
  --runtime-env also Ray's own runtime_env {"uv": [six==X]}: an actor until ready, cold and
                again (for comparison; the executor does not use it)
Wall-clock figures: on the shared 2-core VM they move with the load, which is printed with
them (`os.getloadavg()`); read ratios and orders of magnitude. Two figures that move less:
`driver CPU ms/task`, the driver process's own CPU time (getrusage: user + sys, all its
threads, Ray's included) per task, median of the runs; and, for ray, how many calls went out
and came back without a hop through the executor's collector thread (`direct` = sends from
the engine's thread + outcomes from Ray's callback thread, over 2 x tasks).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is bench/ray.py: with its folder first on sys.path, `import ray` would import it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import ray

sys.path.append(str(HERE))
from overhead import WORKLOADS, baseline, map10k, median_of, timed_run
from workloads import inc


def _noop(x: int) -> int:
    return x


class _Echo:
    def call(self, x: int) -> int:
        return x


def cpu_s() -> float:
    """CPU seconds this process has used (every thread): user + sys."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def cpu_timed_run(pipe, executor: str, cpus: list[float]) -> float:
    """timed_run, also appending the run's driver CPU seconds to `cpus`."""
    c0 = cpu_s()
    elapsed = timed_run(pipe, executor)
    cpus.append(cpu_s() - c0)
    return elapsed


def direct_of(ex) -> int:
    """Calls sent + outcomes delivered without the collector's hop (0 before it had them)."""
    return getattr(ex, "direct_sends", 0) + getattr(ex, "direct_outcomes", 0)


def ray_round_trips(ray, n: int = 500) -> dict[str, float]:
    """ms per call of bare Ray: tasks and actor methods, sequential and in flight."""
    task = ray.remote(num_cpus=1)(_noop)
    actor = ray.remote(num_cpus=1)(_Echo).remote()
    ray.get([task.remote(0), actor.call.remote(0)])
    out = {}
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(task.remote(i))
    out["task, one at a time"] = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    ray.get([task.remote(i) for i in range(n)])
    out["task, 500 in flight"] = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(actor.call.remote(i))
    out["actor, one at a time"] = (time.perf_counter() - t0) * 1000 / n
    t0 = time.perf_counter()
    ray.get([actor.call.remote(i) for i in range(n)])
    out["actor, 500 in flight"] = (time.perf_counter() - t0) * 1000 / n
    ray.kill(actor)
    return out


def runtime_env_builds(ray) -> list[tuple[str, float, float]]:
    """(requirement, cold s, cached s): an actor whose Ray runtime_env installs it with uv,
    until ready. Not what the executor uses (see executors/ray/__init__.py): for comparison."""
    out = []
    for pin in ("six==1.16.0", "six==1.15.0"):
        times = []
        for _ in range(2):
            cls = ray.remote(num_cpus=1, runtime_env={"uv": {"packages": [pin],
                                                             "uv_pip_install_options": []}})(_Echo)
            t0 = time.perf_counter()
            actor = cls.remote()
            ray.get(actor.call.remote(0))
            times.append(time.perf_counter() - t0)
            ray.kill(actor)
        out.append((pin, times[0], times[1]))
    return out


def env_builds() -> list[tuple[str, float, float]]:
    """(requirement, cold s, cached s): a one-task pipeline with requirements= on ray, in a
    new env cache (CADENZA_ENVS_DIR, passed on to the workers), then again (cached env)."""
    import tempfile

    from cadenza import pipeline, task

    out = []
    for pin in ("six==1.16.0", "six==1.15.0"):
        @task(requirements=[pin])
        def six_version() -> str:
            import six

            return str(six.__version__)

        @pipeline
        def one_env_task():
            six_version()

        os.environ["CADENZA_ENVS_DIR"] = tempfile.mkdtemp(prefix="cadenza-bench-envs-")
        times = [timed_run(one_env_task, "ray") for _ in range(2)]
        out.append((pin, times[0], times[1]))
    os.environ.pop("CADENZA_ENVS_DIR", None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--skip-envs", action="store_true")
    parser.add_argument("--runtime-env", action="store_true",
                        help="also time Ray's own runtime_env uv (clones the virtualenv: slow)")
    parser.add_argument("--skip-10k", action="store_true")
    args = parser.parse_args()

    import concurrent.futures as cf

    from cadenza.executors.base import get_executor

    # A local Ray with token auth would leave a token in ~/.ray that turns it on for every
    # cluster started later on this machine.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = os.environ.get("CADENZA_RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    where = address or f"a local Ray ({cpus} CPUs)"
    print(f"ray {ray.__version__} on {where}; load average at start "
          f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
    ex = get_executor("ray")

    rows = []
    pool = cf.ProcessPoolExecutor(max_workers=os.cpu_count())
    list(pool.map(inc, range(100)))
    for name, (pipe, tasks) in WORKLOADS.items():
        if name not in args.workloads.split(","):
            continue
        for executor in ("ray", "processes"):
            cpus: list[float] = []
            direct0 = direct_of(ex)
            ours = median_of(partial(cpu_timed_run, pipe, executor, cpus), args.repeat)
            direct = (direct_of(ex) - direct0) / (args.repeat + 1)
            bare = median_of(partial(baseline, name, "inline", None), args.repeat)
            rows.append((name, executor, tasks, ours, (ours - bare) * 1000 / tasks,
                         os.getloadavg()[0], statistics.median(cpus[1:]) * 1000 / tasks,
                         f"{direct:.0f}/{2 * tasks}" if executor == "ray" else ""))
            print(f"  {name} {executor}: {ours:.3f} s", file=sys.stderr)
    pool.shutdown()
    ten_k = None
    if not args.skip_10k:
        t0 = time.perf_counter()
        result = map10k.run(executor="ray")
        ten_k = (time.perf_counter() - t0, result.state, os.getloadavg()[0])
    trips = ray_round_trips(ray)
    envs = [] if args.skip_envs else env_builds()
    ray_envs = runtime_env_builds(ray) if args.runtime_env else []

    print(f"\n{'workload':<10} {'executor':<10} {'tasks':>6} {'median s':>9} "
          f"{'ms/task over bare':>18} {'load':>5} {'driver CPU ms/task':>19} {'direct':>10}")
    for name, executor, tasks, ours, per_task, load, cpu, direct in rows:
        print(f"{name:<10} {executor:<10} {tasks:>6} {ours:>9.3f} {per_task:>18.3f} {load:>5.2f}"
              f" {cpu:>19.3f} {direct:>10}")
    if ten_k is not None:
        print(f"{'map10k':<10} {'ray':<10} {10_002:>6} {ten_k[0]:>9.3f} "
              f"{ten_k[0] * 1000 / 10_002:>18.3f} {ten_k[2]:>5.2f}   ({ten_k[1]})")
    print(f"\nbare Ray round trips ({where}), ms per call:")
    for what, ms in trips.items():
        print(f"  {what:<22} {ms:7.3f}")
    print(f"ray executor: {ex.actors_started} actors started, {ex.fn_sends} functions sent")
    for title, rows_ in (("a one-task requirements= pipeline on ray, the node's env cache (s)",
                          envs),
                         ("Ray's runtime_env uv, actor start until ready (s)", ray_envs)):
        if rows_:
            print(f"\n{title}:")
            print(f"  {'requirement':<14} {'cold':>7} {'cached':>7}")
            for pin, cold, cached in rows_:
                print(f"  {pin:<14} {cold:>7.2f} {cached:>7.2f}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} "
          f"(median of cadenza runs: {statistics.median(r[3] for r in rows):.3f} s)")


if __name__ == "__main__":
    main()
