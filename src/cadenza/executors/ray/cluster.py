"""The driver's view of the Ray cluster: connecting, what its nodes offer, what a call asks
of them, whether the artifact store is reachable from every node, and what Ray's exceptions
mean for an attempt.

What belongs here: everything that talks to Ray about the cluster rather than about one
call. What does not: the actor pool and its collector thread (`pool.py`), the code that runs
inside a Ray worker (`actor.py`).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cadenza.core.errors import ConfigError
from cadenza.executors.base import TaskCall

log = logging.getLogger("cadenza.executors.ray")

ADDRESS_ENV = "CADENZA_RAY_ADDRESS"
# Environment variables of the driver that every call sees in its Ray worker (besides the
# call's own env): Cadenza's settings, the object store's credentials and endpoint, and uv's
# (the index task environments are built from: UV_INDEX_URL, UV_EXCLUDE_NEWER, ...).
FORWARDED_PREFIXES = ("CADENZA_", "AWS_", "GOOGLE_", "AZURE_", "FSSPEC_", "UV_")
INSTALL_HINT = "pip install 'cadenza[ray]' (or pick another executor: --executor processes)"


def import_ray() -> Any:
    """Ray, imported on first use; a ConfigError with the install command when absent."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"the 'ray' executor needs Ray, which is not installed ({exc})",
                          hint=INSTALL_HINT) from exc
    return ray


def connect(address: str | None) -> bool:
    """Connect this process to Ray; True if this call started Ray (so shutdown stops it).

    `address` (else CADENZA_RAY_ADDRESS): `ray://host:10001` (Ray Client), `host:6379` (the
    head's GCS, from a machine of the cluster), or `auto` (the cluster started on this
    machine with `ray start`). Unset: a Ray already initialised in this process is used,
    else a local Ray is started for this process."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get(ADDRESS_ENV) or None
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": False}
    if address is None:
        kwargs.update(include_dashboard=False, num_cpus=os.cpu_count() or 1)
    # Started off the main thread (the engine overlaps it with opening the store), ray.init
    # warns that it leaves SIGTERM alone: which is what Cadenza wants, so say nothing.
    quiet = logging.getLogger("ray._private.worker")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise ConfigError(
            f"could not connect to {where}: {exc}",
            hint=("start a cluster with `ray start --head --port 6379` and set "
                  f"{ADDRESS_ENV}=HEAD_IP:6379 (or ray://HEAD_IP:10001 from outside the "
                  f"cluster, or `auto` on a machine of it); unset {ADDRESS_ENV} to start a "
                  "local Ray"),
        ) from exc
    finally:
        quiet.setLevel(level)
    return True


@dataclass(frozen=True, slots=True)
class Shape:
    """What an actor asks Ray for: its resources. Calls of one shape share actors. The
    default shape (a task that declares nothing) is one CPU."""

    cpu: float = 1.0
    gpu: float = 0.0
    memory: float = 0.0
    custom: tuple[tuple[str, float], ...] = ()

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_SHAPE

    def needs(self) -> dict[str, float]:
        """As Ray names them (node resource keys)."""
        out = {"CPU": self.cpu}
        if self.gpu:
            out["GPU"] = self.gpu
        if self.memory:
            out["memory"] = self.memory
        out.update(self.custom)
        return {k: v for k, v in out.items() if v}

    def describe(self) -> str:
        text = ", ".join(f"{k}: {v:g}" for k, v in self.needs().items()) or "nothing"
        return "{" + text + "}"

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.cpu, "max_restarts": 0,
                                   "max_task_retries": 0, "scheduling_strategy": "SPREAD"}
        if self.gpu:
            options["num_gpus"] = self.gpu
        if self.memory:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


DEFAULT_SHAPE = Shape()


def shape_of(call: TaskCall) -> Shape:
    res: Mapping[str, float] = call.resources
    if not res:
        return DEFAULT_SHAPE
    cpu = float(res.get("cpu", 0.0)) or 1.0
    custom = tuple(sorted((k, float(v)) for k, v in res.items()
                          if k not in ("cpu", "gpu", "memory") and v))
    return Shape(cpu=cpu, gpu=float(res.get("gpu", 0.0)), memory=float(res.get("memory", 0.0)),
                 custom=custom)


def misfit(shape: Shape, nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no node of the cluster could ever run `shape`, or None when one could."""
    needs = shape.needs()
    for total in nodes:
        if all(total.get(k, 0.0) >= v for k, v in needs.items()):
            return None
    offered = "; ".join(
        ", ".join(f"{k}: {v:g}" for k, v in sorted(t.items())
                  if k in needs or k in ("CPU", "GPU")) for t in nodes) or "no live node"
    return f"it needs {shape.describe()} and no node of the Ray cluster has that ({offered})"


def alive_nodes(ray: Any, nodes: list[dict[str, Any]] | None = None
                ) -> list[dict[str, float]]:
    """The total resources of each live node (one GCS round trip, unless `nodes`, what
    `ray.nodes()` returned, is given)."""
    out = []
    for node in ray.nodes() if nodes is None else nodes:
        if node.get("Alive"):
            total = dict(node.get("Resources") or {})
            out.append({k: float(v) for k, v in total.items()
                        if not k.startswith("node:") and k != "object_store_memory"})
    return out


def forwarded_env() -> dict[str, str]:
    """The driver's variables a call sees in its Ray worker (FORWARDED_PREFIXES)."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


# -- the artifact store must be reachable from every node -----------------------------------

PROBE_NAME = ".cadenza-ray-probe-"


def check_reachable(ray: Any, artifact_root: str, *, pipeline: str) -> None:
    """ConfigError naming the fix unless every live node sees the artifact store.

    The driver writes a probe file under the root; a zero-CPU Ray task pinned to each live
    node reads it back. A local folder that only the driver's machine has, or object storage
    a node cannot reach (credentials, endpoint), fails here, before the run starts, instead
    of at the first output a worker writes."""
    import fsspec
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cadenza.executors.ray.actor import read_probe

    token = secrets.token_hex(8)
    fs, root = fsspec.core.url_to_fs(artifact_root)
    path = f"{root.rstrip('/')}/{PROBE_NAME}{token}"
    try:
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(path, token.encode())
    except Exception as exc:
        raise ConfigError(f"pipeline '{pipeline}': the artifact store {artifact_root} cannot "
                          f"be written from the driver: {exc}",
                          hint="set CADENZA_ARTIFACT_ROOT to a writable shared folder or "
                               "s3://bucket/prefix") from exc
    probe = ray.remote(read_probe)
    env = forwarded_env()
    refs = {}
    try:
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            node_id = node["NodeID"]
            refs[node.get("NodeManagerAddress", node_id) + " " + node_id[:8]] = probe.options(
                num_cpus=0, max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(artifact_root, path, token, env)
        failures = []
        for where, ref in refs.items():
            try:
                problem = ray.get(ref, timeout=120)
            except Exception as exc:  # noqa: BLE001 - the node could not even run the probe
                problem = f"the probe could not run there: {type(exc).__name__}: {exc}"
            if problem:
                failures.append(f"node {where}: {problem}")
    finally:
        try:
            fs.rm_file(path)
        except Exception:  # noqa: BLE001 - a leftover probe file is harmless
            log.debug("could not remove the probe file %s", path)
    if failures:
        raise ConfigError(
            f"pipeline '{pipeline}': the artifact store {artifact_root} is not reachable from "
            "every node of the Ray cluster (workers write task outputs there directly): "
            + "; ".join(failures),
            hint="set CADENZA_ARTIFACT_ROOT to a folder every node mounts at the same path "
                 "(NFS, a shared volume) or to object storage, s3://bucket/prefix, with the "
                 "credentials in the driver's environment (AWS_* variables are passed on)",
        )
