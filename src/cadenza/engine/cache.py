"""Task caching: serve a task instance from an earlier successful one with the same key.

The key is computed when the instance is admitted (its inputs are known then): code
fingerprint + `version` + content digests of its inputs. A hit copies the earlier output
reference (no data moves), marks the instance `cached` and records where it came from. An
entry whose artifact has gone missing is not served: the task runs again.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from cadenza.core import clock
from cadenza.graph.fingerprint import cache_key, code_fingerprint_parts, value_digest
from cadenza.graph.model import ParamValue, TaskOutput, substitute

log = logging.getLogger(__name__)


class CachePolicy:
    def __init__(self, store: Any, settings: Any) -> None:
        self.store = store
        self.settings = settings

    def key_parts(self, driver: Any, inst: Any) -> dict[str, Any]:
        """What the key is made of, kept with the instance so `plan` can explain a miss."""
        node = inst.node
        fingerprint, functions = code_fingerprint_parts(node.fn)

        def ref_of(marker: TaskOutput | ParamValue) -> Any:
            if type(marker) is ParamValue:
                return driver.params[marker.name]
            ns = driver.nodes[marker.task_id]
            if ns.node.is_mapped:
                return [c.output for c in ns.children]
            return ns.summary.output

        if inst.map_index >= 0 and inst.inputs is not None:
            raw = {k: (substitute(v, ref_of) if k not in node.mapped else inst.inputs[k])
                   for k, v in node.args.items()}
        else:
            raw = {k: substitute(v, ref_of) for k, v in node.args.items()}
        inputs = {k: value_digest(v) for k, v in raw.items()}
        return {
            "fingerprint": fingerprint,
            "functions": dict(functions),
            "version": node.options.version,
            "inputs": inputs,
        }

    def try_serve(self, driver: Any, inst: Any) -> bool:
        parts = self.key_parts(driver, inst)
        key = cache_key(fingerprint=parts["fingerprint"], version=parts["version"],
                        inputs=parts["inputs"])
        inst.cache_key = key
        inst.cache_detail = parts
        expiration = inst.node.options.cache_expiration_s
        not_before = clock.now() - timedelta(seconds=expiration) if expiration else None
        hit = self.store.find_cached(key, not_before=not_before)
        if hit is None or hit.output is None:
            return False
        if hit.output.kind == "artifact" and not _artifact_exists(hit.output.uri):
            log.warning("cache entry for %s points at missing artifact %s; running it",
                        inst.label, hit.output.uri)
            return False
        origin = {"run_id": hit.run_id, "task_id": hit.task_id, "map_index": hit.map_index,
                  "attempt": hit.attempt}
        if inst.state.value == "scheduled":
            driver.serve_cached(inst, hit.output, origin)
        return True


def _artifact_exists(uri: str | None) -> bool:
    if not uri:
        return False
    if "://" not in uri or uri.startswith("file://"):
        import os

        return os.path.exists(uri[len("file://"):] if uri.startswith("file://") else uri)
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return bool(fs.exists(path))
