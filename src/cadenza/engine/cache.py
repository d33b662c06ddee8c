"""Task caching: serve a task instance from an earlier successful one with the same key.

The key is computed when the instance is admitted (its inputs are known then): code
fingerprint + `version` + content digests of its inputs. A hit copies the earlier output
reference (no data moves), marks the instance `cached` and records where it came from. An
entry whose artifact has gone missing is not served: the task runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cadenza.core import clock
from cadenza.graph.fingerprint import cache_key, code_fingerprint_parts, value_digest
from cadenza.graph.model import ParamValue, TaskNode, TaskOutput, substitute

log = logging.getLogger(__name__)


def cache_key_parts(
    node: TaskNode,
    ref_of: Callable[[TaskOutput | ParamValue], Any],
    *,
    mapped_inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a task instance's cache key is made of. Pure: the engine and `cadenza plan` both
    call it, so the plan predicts exactly the key the run will look up.

    `ref_of` gives a parameter's value, or an upstream's output `ValueRef` (a list of them,
    in map order, for a mapped upstream). `mapped_inputs` holds a mapped instance's own
    elements for the arguments it is expanded over.
    """
    fingerprint, functions = code_fingerprint_parts(node.fn)
    if mapped_inputs is not None:
        raw = {
            k: (substitute(v, ref_of) if k not in node.mapped else mapped_inputs[k])
            for k, v in node.args.items()
        }
    else:
        raw = {k: substitute(v, ref_of) for k, v in node.args.items()}
    return {
        "fingerprint": fingerprint,
        "functions": dict(functions),
        "version": node.options.version,
        "inputs": {k: value_digest(v) for k, v in raw.items()},
    }


def key_from_parts(parts: Mapping[str, Any]) -> str:
    """The cache key of parts made by `cache_key_parts`."""
    return cache_key(
        fingerprint=parts["fingerprint"], version=parts["version"], inputs=parts["inputs"]
    )


def not_before_for(node: TaskNode) -> datetime | None:
    """The oldest end time a cache entry of `node` may have (`cache_expiration`), or None."""
    expiration = node.options.cache_expiration_s
    return clock.now() - timedelta(seconds=expiration) if expiration else None


class CachePolicy:
    def __init__(self, store: Any, settings: Any) -> None:
        self.store = store
        self.settings = settings

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
        return cache_key_parts(node, ref_of, mapped_inputs=mapped)

    def try_serve(self, driver: Any, inst: Any) -> bool:
        parts = self.key_parts(driver, inst)
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
        if inst.state.value == "scheduled":
            driver.serve_cached(inst, hit.output, origin)
        return True


def artifact_exists(uri: str | None) -> bool:
    """The artifact at `uri` is still there (a cache entry pointing at a deleted one is not
    served)."""
    if not uri:
        return False
    if "://" not in uri or uri.startswith("file://"):
        import os

        return os.path.exists(uri.removeprefix("file://"))
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return bool(fs.exists(path))
