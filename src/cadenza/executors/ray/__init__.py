"""The ray executor: Cadenza drives the run (state, retries, caching, resume, lineage), a Ray
cluster runs its tasks. `executor="ray"`, `cadenza run --executor ray`.

What belongs here: connecting to Ray and placing calls on it (`pool.py`: the actor pool and
its collector thread; `cluster.py`: connection, resources, the artifact-store check;
`actor.py`: what runs in a Ray worker; `outcomes.py`: Ray's exceptions as Cadenza's outcome
kinds). What does not: running a call (`executors/worker.py`, inside the actor), retries and
pools (the engine). Ray is imported only when this executor starts: `import cadenza` does not
load it.

Where. CADENZA_RAY_ADDRESS (or `RayExecutor(address=...)`): `ray://HEAD:10001` (Ray Client),
`HEAD:6379` or `auto` (a machine of the cluster); unset, a local Ray starts in the driver.
Outputs are written by the Ray worker straight into the artifact store, so its URL must be
reachable from every node (a shared folder or s3://...): `preflight` checks that before a run
starts, with a probe file every node reads back. Only references travel back to the driver.

Actors, not tasks. Each call runs on a persistent actor (a Ray worker process that keeps the
functions it has loaded, like a `processes` worker). Measured on the 2-core VM (a local
two-node cluster, 1 CPU each, load average ~7 from other jobs), per call: a Ray task
`f.remote()` 2.2 ms one at a time and 1.1 ms when many are in flight; an actor method call
1.5 ms and 0.4 ms. So actors, with per-call overhead bench/ray.py measures end to end.

Resources. A call's `resources=` become its actor's: `cpu` -> num_cpus (default 1), `gpu` ->
num_gpus, `memory` -> memory (bytes), any other name -> a custom resource
(`resources={"TPU": 1}`). Calls of one shape share actors; there are at most as many actors
as the cluster has CPUs, and an idle actor of another shape makes room (it is stopped) when a
call needs one; an actor idle for IDLE_TIMEOUT_S is stopped, so that it does not hold a CPU
another driver of the same cluster waits for. Ray places each actor on a node that has its resources; a shape no node has fails at
once (kind "resources"). Pools are admitted by the engine, in the driver, as on every executor.

Task environments (requirements=, python=). The actor hands such a call to
`executors/envs.py` on its node: the env is built with uv into that node's env cache
(CADENZA_HOME/envs, or CADENZA_ENVS_DIR) once per requirement set and reused, the call runs
on a kept env worker process, and the env's key, python and lock are recorded on the attempt,
as on every executor. Not Ray's `runtime_env={"uv": ...}`: measured with Ray 2.60, it clones
the worker's whole virtualenv for each environment on each node (1.8 GB here, several
minutes on the 2-core VM) before uv installs the pins; the env cache installs only the pins
(seconds) and finds the driver's packages after them on sys.path.

Logs. A call's log is written on the node that ran it (at the driver's CADENZA_HOME path
there) and its bytes come back with the outcome; the driver writes them where `cadenza logs`
reads them, unless the node's file is already there (a node of this machine, a shared folder).

Failures. The actor's process or node dying surfaces as Ray's exception types (RayActorError,
NodeDiedError, WorkerCrashedError, ...), which `outcomes.py` turns into a `worker_lost`
attempt, retried per the task's policy. A timeout or a cancel kills the actor (`ray.kill`).
Actors belong to the driver's Ray job: when the driver dies, Ray kills them.
"""

from cadenza.executors.ray.pool import RayExecutor

__all__ = ["RayExecutor"]
