"""Task caching: serve a task instance from an earlier successful one with the same key.

The key is computed when the instance is admitted (its inputs are known then): code
fingerprint + the values the code reads (globals, closure variables; `graph/fingerprint.py`)
+ `version` + content digests of its inputs (+ for a task in its own environment, its
requirement set, python and the digest of the env's resolved lock, which the run's executor
reports: it builds the env first if its cache does not have it). A hit copies the earlier output reference (no
data moves), marks the instance `cached` and records where it came from. An entry whose
artifact has gone missing is not served: the task runs again.

A task's fingerprint is taken once per run (at its start, `CachePolicy.prepare`) and shared
by its instances: values are read as they are when the run starts. A task that reads a value
with no stable hash (an open file, a client, a lock) is not cacheable: the run warns once,
naming it, and runs the task every time without making an entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import CadenzaError
from cadenza.core.states import TaskState
from cadenza.graph.envspec import env_spec, lock_digest
from cadenza.graph.fingerprint import (
    TaskFingerprint,
    Unhashable,
    cache_key,
    task_fingerprint,
    value_digest,
)
from cadenza.graph.model import ParamValue, TaskNode, TaskOutput, substitute

log = logging.getLogger(__name__)


def cache_key_parts(
    node: TaskNode,
    ref_of: Callable[[TaskOutput | ParamValue], Any],
    *,
    mapped_inputs: Mapping[str, Any] | None = None,
    fingerprint: TaskFingerprint | None = None,
    env_lock: str | None = None,
) -> dict[str, Any]:
    """What a task instance's cache key is made of. Pure: the engine and `cadenza plan` both
    call it, so the plan predicts exactly the key the run will look up.

    `ref_of` gives a parameter's value, or an upstream's output `ValueRef` (a list of them,
    in map order, for a mapped upstream). `mapped_inputs` holds a mapped instance's own
    elements for the arguments it is expanded over. `fingerprint` is the task's, when the
    caller took it already (once per task, not per instance). `env_lock`: for a task in its
    own environment, the digest of that env's resolved lock (`graph/envspec.lock_digest`).
    """
    fp = fingerprint if fingerprint is not None else task_fingerprint(node.fn)
    if mapped_inputs is not None:
        raw = {
            k: (substitute(v, ref_of) if k not in node.mapped else mapped_inputs[k])
            for k, v in node.args.items()
        }
    else:
        raw = {k: substitute(v, ref_of) for k, v in node.args.items()}
    parts: dict[str, Any] = {
        "fingerprint": fp.code,
        "functions": dict(fp.functions),
        "version": node.options.version,
        "inputs": {k: value_digest(v) for k, v in raw.items()},
    }
    if fp.values:
        parts["values"] = dict(fp.values)
    # The requirement set and the resolved lock: one set may resolve to other versions when
    # its env is built again (a new release of an unpinned dependency), and the output of
    # the old versions is then not the one the task would make now.
    env = env_spec(node.options.requirements, node.options.python)
    if env is not None:
        if env_lock is not None:
            env["lock"] = env_lock
        parts["env"] = env
    return parts


def key_from_parts(parts: Mapping[str, Any]) -> str:
    """The cache key of parts made by `cache_key_parts`."""
    return cache_key(
        fingerprint=parts["fingerprint"],
        version=parts["version"],
        inputs=parts["inputs"],
        values=parts.get("values"),
        env=parts.get("env"),
    )


def uncacheable_message(pipeline: str, node: TaskNode, fingerprint: TaskFingerprint,
                        *, same_function: int = 0) -> str:
    """One line: why `node` is not cached, naming the pipeline, the task, the value and the
    fix. `same_function`: how many other tasks of the run share its function (one line for
    all of them).

    Example:
        pipeline 'train', task 'fetch': global client (a redis.client.Redis) has no stable
        hash (it holds a _thread.lock: cannot pickle '_thread.lock' object), so the task is
        not cached and runs every time. Fix: create the client inside the task, or pass what
        it needs as a parameter.
    """
    first = fingerprint.unhashable[0]
    others = [u.name for u in fingerprint.unhashable[1:]]
    also = f"; so do {', '.join(others)}" if others else ""
    tasks = f" (and {same_function} more tasks of its function)" if same_function else ""
    return (
        f"pipeline '{pipeline}', task '{node.id}'{tasks}: {first.name} (a {first.type_name}) "
        f"has no stable hash ({first.reason}{also}), so the task is not cached and runs every "
        f"time. Fix: create the {_noun(first)} inside the task, or pass what it needs as a "
        f"parameter."
    )


def _noun(value: Unhashable) -> str:
    """What to call the value in the fix: "lock", "client", "file"... or "value"."""
    text = f"{value.type_name} {value.reason}".lower()
    for words, noun in (
        (("redis", "client", "engine", "session", "pool", "connection", "cursor"), "client"),
        (("socket",), "socket"),
        (("lock", "semaphore", "condition", "event"), "lock"),
        (("_io.", "textiowrapper", "bufferedreader", "bufferedwriter", "file"), "file"),
        (("generator", "iterator"), "generator"),
    ):
        if any(w in text for w in words):
            return noun
    return "value"


class FingerprintMemo:
    """Fingerprints taken once per function for one run or plan: the nodes of one function
    (`with_options` copies, a chain of the same task) share it, and so do mapped instances.
    ~70 us per task on the bench machine, so a 200-task chain of one function saves ~14 ms."""

    def __init__(self) -> None:
        self._by_fn: dict[int, tuple[Any, TaskFingerprint]] = {}  # id(fn) -> (fn, print)

    def of(self, node: TaskNode) -> TaskFingerprint:
        found = self._by_fn.get(id(node.fn))
        if found is None:
            found = self._by_fn[id(node.fn)] = (node.fn, task_fingerprint(node.fn))
        return found[1]


def not_before_for(node: TaskNode) -> datetime | None:
    """The oldest end time a cache entry of `node` may have (`cache_expiration`), or None."""
    expiration = node.options.cache_expiration_s
    return clock.now() - timedelta(seconds=expiration) if expiration else None


class CachePolicy:
    """The cache of one run: looks instances up, and remembers each task's fingerprint."""

    def __init__(self, store: Any, settings: Any) -> None:
        self.store = store
        self.settings = settings
        self.fingerprints = FingerprintMemo()
        # (requirements, python) -> the digest of its env's lock (None: it could not be
        # built), asked of the run's executor once per run.
        self._locks: dict[tuple[tuple[str, ...], str | None], str | None] = {}

    def env_lock(self, driver: Any, node: TaskNode) -> str | None:
        """The digest of the resolved lock of `node`'s environment, from the run's executor
        (which builds the env first if its cache does not have it: the call needs it to run
        anyway). None when it cannot be built: the task is then not looked up, runs, and
        fails with uv's message."""
        options = node.options
        spec = (options.requirements, options.python)
        if spec in self._locks:
            return self._locks[spec]
        try:
            lock = driver.executor.env_lock(options.requirements, options.python, build=True,
                                            run_id=driver.run_id)
        except CadenzaError as exc:
            log.info("run %s: %s: no cache lookup, its environment could not be built: %s",
                     driver.run_id, node.id, exc.message)
            lock = None
        digest = self._locks[spec] = None if lock is None else lock_digest(lock)
        return digest

    def settle(self, inst: Any, metrics: tuple[tuple[str, float | str, str], ...]) -> None:
        """A task in its own environment succeeded: its cache entry is keyed by the lock its
        attempt reports having run with (`env.lock`), which differs from the one looked up
        when the env it ran in was built elsewhere or again (a Ray node's own env cache)."""
        detail = inst.cache_detail
        if detail is None or "env" not in detail:
            return
        lock = next((v for name, v, kind in metrics if name == "env.lock" and kind == "env"),
                    None)
        if lock is None:
            return
        digest = lock_digest(str(lock))
        if inst.cache_key is not None and detail["env"].get("lock") == digest:
            return
        parts = {**detail, "env": {**detail["env"], "lock": digest}}
        inst.cache_detail = parts
        inst.cache_key = key_from_parts(parts)

    def fingerprint(self, node: TaskNode) -> TaskFingerprint:
        """The task's fingerprint, taken on first use and kept for the run."""
        return self.fingerprints.of(node)

    def prepare(self, driver: Any) -> None:
        """At run start: fingerprint every cached task, and warn once about each one that
        cannot be cached."""
        uncacheable: dict[int, list[TaskNode]] = {}  # id(fn) -> its tasks: one line each
        for ns in driver.nodes.values():
            node = ns.node
            if node.options.cache and not self.fingerprint(node).is_cacheable:
                uncacheable.setdefault(id(node.fn), []).append(node)
        for nodes in uncacheable.values():
            driver._warn(uncacheable_message(driver.graph.name, nodes[0], self.fingerprint(
                nodes[0]), same_function=len(nodes) - 1))

    def key_parts(self, driver: Any, inst: Any) -> dict[str, Any]:
        """What the key is made of, kept with the instance so `plan` can explain a miss."""
        node = inst.node

        def ref_of(marker: TaskOutput | ParamValue) -> Any:
            if isinstance(marker, ParamValue):
                return driver.params[marker.name]
            ns = driver.nodes[marker.task_id]
            if ns.node.is_mapped:
                return [c.output for c in ns.children]
            return ns.summary.output

        mapped = None
        if inst.map_index >= 0:
            # Element values as stored refs, never live objects: the key must be the same
            # whichever executor produced the upstream element.
            mapped = inst.key_inputs if inst.key_inputs is not None else inst.inputs
        lock = self.env_lock(driver, node) if node.options.isolated else None
        return cache_key_parts(node, ref_of, mapped_inputs=mapped,
                               fingerprint=self.fingerprint(node), env_lock=lock)

    def try_serve(self, driver: Any, inst: Any) -> bool:
        if not self.fingerprint(inst.node).is_cacheable:  # warned at run start
            return False
        parts = self.key_parts(driver, inst)
        if "env" in parts and "lock" not in parts["env"]:
            # Its env could not be built: no key to look up (`settle` keys an attempt that
            # succeeds all the same, by the lock it reports).
            inst.cache_key = None
            inst.cache_detail = parts
            return False
        key = key_from_parts(parts)
        inst.cache_key = key
        inst.cache_detail = parts
        hit = self.store.find_cached(key, not_before=not_before_for(inst.node))
        if hit is None or hit.output is None:
            return False
        if hit.output.kind == "artifact" and not artifact_exists(hit.output.uri):
            log.warning("cache entry for %s points at missing artifact %s; running it",
                        inst.label, hit.output.uri)
            return False
        origin = {"run_id": hit.run_id, "task_id": hit.task_id, "map_index": hit.map_index,
                  "attempt": hit.attempt}
        if inst.state is TaskState.SCHEDULED:
            driver.serve_cached(inst, hit.output, origin)
        return True


def artifact_exists(uri: str | None) -> bool:
    """The artifact at `uri` is still there (a cache entry pointing at a deleted one is not
    served). It is marked as just reused, so a concurrent `cadenza gc` leaves it alone."""
    from cadenza.artifacts.store import claim_artifact

    return claim_artifact(uri)
