"""The processes executor: a persistent pool of worker processes, the default executor.

What belongs here: starting, feeding, watching, killing and replacing worker processes, and
shipping functions and calls to them. What does not: running a call (that is
`executors/worker.py`, which every executor shares), resource admission (the engine, with
`engine/resources.py`), retries (the engine).

How it works. Each worker is a long-lived child process with one duplex
pipe to the driver. `submit` pickles the call without its function (the function travels
once per worker, keyed by `fn_key`) and writes it to an idle worker's pipe, or queues it in a
FIFO backlog. One thread at a time, the leader, blocks on every worker pipe, every worker's
process sentinel and a wake-up pipe, with a timeout equal to the nearest deadline (task
timeout or kill grace); it never polls. The wait is a persistent `selectors` selector (epoll):
`multiprocessing.connection.wait()` is the same mechanism rebuilt on every call, 15 us per
wake-up with 2 workers and 290 us with 64, against 2 us for the persistent one. The leader
reads outcomes, detects dead workers, enforces timeouts by killing, replaces lost workers,
hands out backlog work and calls the sinks; only the leader does, so an engine's sink never
runs concurrently with itself for this executor (shutdown() is the one exception: it
delivers the outcomes of interrupted calls itself, after the leader has stopped).

Leader/follower (`collector.py`): a driver hands calls over with its `Outcomes.put` as the
sink (executors/base.py); when it waits on its `Outcomes` and no other thread leads, the
driver's own thread leads, so it reads its outcome off the pipe itself instead of sleeping
until a collector thread has read it and handed it over. The collector thread leads only
when something else needs watching (a booting worker, a timer due, a call whose sink no
driver waits on, outcomes made outside the pipes, a driver that waits without leading), and
parks otherwise. chain200 on PostgreSQL (bench/procs_hops.py, per task, load 11-18): the
driver's voluntary context switches 2.2 -> 1.2 (one is the commit's round trip), the
collector's 1.0 -> 0; outcome read -> driver's fold 30 -> 16 us.

Start method: worker start latency, Process.start() until the worker has imported
`cadenza.executors.worker` and said it is ready (2-core CI VM, Python 3.11,
`bench/executor_roundtrip.py`, medians of 5; ranges span a quiet and a loaded machine):
    fork         4-7 ms      but unsafe: the driver always has threads (this collector, the
                             engine's, SQLAlchemy's pool), and forking a threaded process can
                             deadlock the child on a lock another thread held at fork time.
    forkserver   10-25 ms    the first worker also pays 200-400 ms once, for the server to
                             start and preload the worker modules (without the preload each
                             worker would import them: +100 ms). Children fork from a clean,
                             single-threaded server. Python 3.14 made it the Linux default.
    spawn        200-300 ms  a fresh interpreter importing everything again, per worker.
So the default is forkserver (spawn where it is unavailable); CADENZA_START_METHOD or
`start_method=` overrides it. A worker that dies while starting says so.

Workers never import the driver's `__main__` (standard multiprocessing children do, which
re-runs a script's unguarded top level, `pipeline.run()` included): scripts need no
`if __name__ == "__main__":` guard. Functions and classes of `__main__` travel by value
(cloudpickle, with the module-level values they read; inputs that refer to `__main__` too),
as Ray and Dask ship them; how and why in `main_module.keep_main_out_of_workers`. In the worker, those
names are put into its `__main__` so that a task's own pickling by reference finds them, and
its `__main__` points at the driver's script so that a pool the task starts behaves as it
would in the driver.

Workers survive neither the driver nor their own task's children: each worker leads its own
process group (so a kill also stops what the task spawned, and Ctrl-C in the terminal reaches
the driver only). When the driver goes away, even by SIGKILL, no code of the worker's needs
to run (`lifeline.py`): under forkserver the kernel kills the worker as the forkserver exits
with the driver (PR_SET_PDEATHSIG), and a guard process per worker kills the worker's group
(its task's children) when the worker dies or the driver's sentinel closes. A watchdog thread
in the worker, which needs the GIL, is the last resort.

Modules: `pool.py` (ProcessExecutor), `collector.py` (the leader's loop: the collector
thread's and a waiting driver's), `child.py` (the worker process's main), `lifeline.py` (what
ends a worker and its task's children with the driver), `wire.py` (messages and codecs),
`jobs.py` (per-call and per-worker bookkeeping, the outcomes of calls that did not return),
`main_module.py` (keeping `__main__` out of workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cadenza.executors.processes.forkserver import default_start_method

if TYPE_CHECKING:
    from cadenza.executors.processes.pool import ProcessExecutor

__all__ = ["ProcessExecutor", "default_start_method"]


def __getattr__(name: str) -> Any:
    # The pool is imported on first use, not by every module of the package: the worker's
    # modules (preloaded by the forkserver, `forkserver.py`) and `forkserver.start_early`
    # import none of the driver's side.
    if name == "ProcessExecutor":
        from cadenza.executors.processes.pool import ProcessExecutor

        return ProcessExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
