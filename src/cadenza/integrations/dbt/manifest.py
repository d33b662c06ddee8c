"""A dbt project seen from outside dbt: its files' digest and its manifest's node graph.

What belongs here: what `dbt_task` needs at definition time, read without importing dbt
(dbt runs in its own environment): a digest of the project's files for cache keys, and the
buildable nodes of `manifest.json` (models, seeds, snapshots) in dbt's dependency order for
`expand_models=True`. What does not: running dbt (`run.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Folders dbt writes or installs into, never the project's own source.
_SKIPPED_DIRS = frozenset({"target", "logs", "dbt_packages", "dbt_modules"})
BUILDABLE = ("model", "seed", "snapshot")


def project_digest(project_dir: Path) -> str:
    """SHA-256 over the project's source files, leaving out what dbt writes (target/,
    logs/): a model edited changes it, a run does not."""
    from cadenza.integrations.files import folder_digest

    return folder_digest(project_dir, skip_dirs=_SKIPPED_DIRS)


@dataclass(frozen=True, slots=True, kw_only=True)
class DbtNode:
    """One buildable node of the manifest."""

    unique_id: str
    name: str
    resource_type: str
    upstream: tuple[str, ...]  # unique ids of buildable nodes it selects from
    digest: str  # its file's checksum and those of the tests that read it


class ManifestError(Exception):
    """manifest.json is missing or not a dbt manifest (the caller makes a Problem of it)."""


def read_nodes(manifest_path: Path) -> list[DbtNode]:
    """The project's buildable nodes in dependency order (upstream first, then by name)."""
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {manifest_path}") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{manifest_path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise ManifestError(f"{manifest_path} is not a dbt manifest (no 'nodes')")
    project = str((data.get("metadata") or {}).get("project_name") or "")
    raw = {uid: n for uid, n in data["nodes"].items()
           if n.get("resource_type") in BUILDABLE
           and (not project or n.get("package_name") == project)}
    tests: dict[str, list[str]] = {}
    for n in data["nodes"].values():
        if n.get("resource_type") == "test":
            for parent in (n.get("depends_on") or {}).get("nodes") or ():
                tests.setdefault(parent, []).append(
                    str((n.get("checksum") or {}).get("checksum", n.get("unique_id"))))
    nodes: dict[str, DbtNode] = {}
    for uid, n in raw.items():
        ups = tuple(sorted(u for u in (n.get("depends_on") or {}).get("nodes") or ()
                           if u in raw))
        parts = [str((n.get("checksum") or {}).get("checksum", "")), *sorted(tests.get(uid, []))]
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        nodes[uid] = DbtNode(unique_id=uid, name=str(n.get("name") or uid.rsplit(".", 1)[-1]),
                             resource_type=str(n["resource_type"]), upstream=ups, digest=digest)
    return _in_order(nodes)


def _in_order(nodes: dict[str, DbtNode]) -> list[DbtNode]:
    """Kahn's order, ties by name, so the tasks come out the same way every time."""
    waiting = {uid: set(n.upstream) for uid, n in nodes.items()}
    ordered: list[DbtNode] = []
    ready = sorted((uid for uid, ups in waiting.items() if not ups), key=lambda u: nodes[u].name)
    while ready:
        uid = ready.pop(0)
        ordered.append(nodes[uid])
        freed = []
        for other, ups in waiting.items():
            if uid in ups:
                ups.discard(uid)
                if not ups:
                    freed.append(other)
        ready = sorted([*ready, *freed], key=lambda u: nodes[u].name)
    if len(ordered) != len(nodes):  # dbt itself refuses cycles; a hand-edited manifest
        stuck = sorted(nodes[u].name for u in nodes if nodes[u] not in ordered)
        raise ManifestError(f"the manifest's nodes form a cycle: {', '.join(stuck)}")
    return ordered
