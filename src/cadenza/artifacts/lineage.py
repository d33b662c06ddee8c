"""Walk artifact lineage: from an artifact (or an asset version) to what it was computed from
(upstream) and to what was computed from it (downstream), as a tree.

What belongs here: resolving a start (SHA-256, prefix, asset name, "asset@version"), the walk
and a plain-text rendering. What does not: the queries (the store's `get_artifact`,
`get_artifacts`, `consumers_of`, `latest_asset_version`, `get_asset_event`; any object with
those methods works, see `LineageStore`), colours and terminal output (the CLI).

The lineage graph is a DAG by construction (an artifact's name is the hash of its bytes, so
it cannot be among its own inputs), but the walk guards anyway: an artifact met a second
time, on a cycle or through another path of a diamond, is shown once more as a reference
(`repeated`) and not expanded again, which also keeps wide fan-ins linear.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cadenza.core.errors import ArtifactNotFound, UsageError
from cadenza.core.records import ArtifactRecord, AssetEventRecord

log = logging.getLogger(__name__)

Direction = Literal["both", "upstream", "downstream"]
_DIRECTIONS = ("both", "upstream", "downstream")


class LineageStore(Protocol):
    """What the walk needs from the metadata store (`cadenza.store.RunStore` has it)."""

    def get_artifact(self, sha_or_prefix: str) -> ArtifactRecord: ...

    def get_artifacts(self, sha256s: Sequence[str]) -> dict[str, ArtifactRecord]: ...

    def consumers_of(self, sha256: str, *, limit: int | None = None) -> list[ArtifactRecord]: ...

    def latest_asset_version(self, asset: str) -> AssetEventRecord | None: ...

    def get_asset_event(self, asset: str, version: int) -> AssetEventRecord | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageNode:
    """One artifact in the lineage tree.

    `artifact` is None when the SHA-256 has no lineage record (an input recorded before
    lineage existed, or an asset version whose value was stored inline). `asset` is set on
    the root when the walk started from an asset. `upstream` are the artifacts it was
    computed from, `downstream` those computed from it. `repeated`: already shown elsewhere
    in the tree, not expanded again. `truncated`: it has more lineage beyond `depth`.
    """

    sha256: str | None
    artifact: ArtifactRecord | None
    asset: AssetEventRecord | None = None
    upstream: tuple[LineageNode, ...] = ()
    downstream: tuple[LineageNode, ...] = ()
    repeated: bool = False
    truncated: bool = False

    def walk(self) -> list[LineageNode]:
        """This node and every node below it, depth first (upstream before downstream)."""
        out: list[LineageNode] = [self]
        for child in (*self.upstream, *self.downstream):
            out.extend(child.walk())
        return out


def walk_lineage(
    store: LineageStore,
    start: str,
    *,
    direction: Direction = "both",
    depth: int | None = None,
    max_nodes: int | None = None,
) -> LineageNode:
    """The lineage tree around `start`.

    `start` is an artifact SHA-256 or a unique prefix of one, an asset name (its newest
    version's artifact), or "asset@N" (version N). An asset name wins over a SHA-256 prefix
    that looks the same. `depth` limits how many steps away from `start` the walk goes
    (None: all the way). `max_nodes` bounds the tree's size (the API's responses): once that
    many nodes are in it, the rest are left out and the node they were under is `truncated`.

    Raises ArtifactNotFound naming what was not found, UsageError for a malformed request.

    Example:
        >>> tree = walk_lineage(store, "features/user", direction="upstream")
        >>> print(render_tree(tree))
        asset features/user v2
        3f2a9c1b0d4e  build_features  run 6b04...  attempt 1  code 9ab3c2d1  781.3 KiB
        └── 77aa01f2c3d4  load_users  run 6b04...  attempt 1  code 01bc77e2  12.0 MiB
    """
    if direction not in _DIRECTIONS:
        raise UsageError(
            f"unknown lineage direction {direction!r}",
            hint=f"use one of: {', '.join(_DIRECTIONS)}",
        )
    if depth is not None and depth < 0:
        raise UsageError(f"depth must be 0 or more, got {depth}", hint="--depth 3")
    if max_nodes is not None and max_nodes < 0:
        raise UsageError(f"max_nodes must be 0 or more, got {max_nodes}", hint="max_nodes=500")
    event = _asset_event(store, start)
    if event is not None:
        if event.artifact_sha256 is None:
            return LineageNode(sha256=None, artifact=None, asset=event)
        sha: str = event.artifact_sha256
        known = store.get_artifacts([sha])
        root_artifact = known.get(sha)
    else:
        root_artifact = store.get_artifact(start)
        sha = root_artifact.sha256
    walker = _Walker(store, depth, max_nodes)
    upstream: tuple[LineageNode, ...] = ()
    downstream: tuple[LineageNode, ...] = ()
    truncated = False
    if direction in ("both", "upstream") and root_artifact is not None:
        upstream, more = walker.inputs(root_artifact, 1, frozenset({sha}))
        truncated |= more
    if direction in ("both", "downstream"):
        walker.seen_down.add(sha)
        downstream, more = walker.consumers(sha, 1, frozenset({sha}))
        truncated |= more
    return LineageNode(
        sha256=sha,
        artifact=root_artifact,
        asset=event,
        upstream=upstream,
        downstream=downstream,
        truncated=truncated,
    )


def _asset_event(store: LineageStore, start: str) -> AssetEventRecord | None:
    """The asset version `start` names, or None if it names no asset (then it is a SHA)."""
    name, at, version_text = start.rpartition("@")
    if at and name:
        if not version_text.isdigit():
            raise UsageError(
                f"'{start}': the version after @ must be a whole number",
                hint=f"{name}@1 for version 1, or {name} for the newest version",
            )
        event = store.get_asset_event(name, int(version_text))
        if event is None:
            latest = store.latest_asset_version(name)
            newest = f"its newest is version {latest.version}" if latest else "it has none"
            raise ArtifactNotFound(
                f"asset '{name}' has no version {version_text} ({newest})",
                hint=f"list its versions, or use '{name}' for the newest",
            )
        return event
    return store.latest_asset_version(start)


class _Walker:
    """Expands nodes breadth by depth, remembering what it has shown in each direction."""

    def __init__(self, store: LineageStore, depth: int | None,
                 max_nodes: int | None = None) -> None:
        self.store = store
        self.depth = depth
        self.seen_up: set[str] = set()
        self.seen_down: set[str] = set()
        self.left = max_nodes if max_nodes is not None else -1  # -1: no bound

    def _full(self) -> bool:
        """The node budget is spent (and takes one from it when it is not)."""
        if self.left == 0:
            return True
        if self.left > 0:
            self.left -= 1
        return False

    def _beyond(self, level: int) -> bool:
        return self.depth is not None and level > self.depth

    def inputs(
        self, artifact: ArtifactRecord, level: int, path: frozenset[str]
    ) -> tuple[tuple[LineageNode, ...], bool]:
        """(nodes for the inputs of `artifact`, whether they were cut off by depth)."""
        shas = artifact.input_sha256s
        if not shas:
            return (), False
        if self._beyond(level):
            return (), True
        records = self.store.get_artifacts(list(shas))
        nodes: list[LineageNode] = []
        for sha in shas:
            if self._full():
                return tuple(nodes), True
            rec = records.get(sha)
            if sha in path or sha in self.seen_up:  # a cycle, or shown already
                nodes.append(LineageNode(sha256=sha, artifact=rec, repeated=True))
                continue
            self.seen_up.add(sha)
            upstream: tuple[LineageNode, ...] = ()
            more = False
            if rec is not None:
                upstream, more = self.inputs(rec, level + 1, path | {sha})
            nodes.append(LineageNode(sha256=sha, artifact=rec, upstream=upstream, truncated=more))
        return tuple(nodes), False

    def consumers(
        self, sha: str, level: int, path: frozenset[str]
    ) -> tuple[tuple[LineageNode, ...], bool]:
        """(nodes for the artifacts computed from `sha`, whether they were cut off by depth)."""
        # With a node budget, no more consumers are read than it can still show (+1 to know
        # that some were left out).
        found = self.store.consumers_of(sha, limit=self.left + 1 if self.left >= 0 else None)
        if not found:
            return (), False
        if self._beyond(level):
            return (), True
        nodes: list[LineageNode] = []
        for rec in found:
            if self._full():
                return tuple(nodes), True
            child = rec.sha256
            if child in path or child in self.seen_down:
                nodes.append(LineageNode(sha256=child, artifact=rec, repeated=True))
                continue
            self.seen_down.add(child)
            downstream, more = self.consumers(child, level + 1, path | {child})
            nodes.append(
                LineageNode(sha256=child, artifact=rec, downstream=downstream, truncated=more)
            )
        return tuple(nodes), False


# ---------------------------------------------------------------------------------------------
# Rendering

SHA_CHARS = 12


def describe(node: LineageNode) -> str:
    """One line about an artifact: SHA prefix, task, run, attempt, code fingerprint, size."""
    sha = (node.sha256 or "")[:SHA_CHARS]
    a = node.artifact
    if a is None:
        text = f"{sha}  (no lineage recorded)" if sha else "(no artifact)"
    else:
        task = a.task_id if a.map_index < 0 else f"{a.task_id}[{a.map_index}]"
        parts = [sha, task, f"run {a.run_id}", f"attempt {a.attempt}"]
        if a.code_fingerprint:
            parts.append(f"code {a.code_fingerprint[:8]}")
        if a.size is not None:
            parts.append(human_size(a.size))
        if a.type_name:
            parts.append(a.type_name)
        text = "  ".join(parts)
    if node.repeated:
        text += "  (shown above)"
    if node.truncated:
        text += "  (more beyond --depth)"
    return text


def human_size(n: int) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 781.3 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_tree(node: LineageNode) -> str:
    """The tree as plain text (box-drawing characters), the start first.

    With both directions, the start's inputs are listed under "upstream (computed from)" and
    its consumers under "downstream (used by)"; with one direction, directly under it.
    """
    lines: list[str] = []
    if node.asset is not None:
        e = node.asset
        where = e.task_id if e.map_index < 0 else f"{e.task_id}[{e.map_index}]"
        head = f"asset {e.asset} v{e.version}"
        if node.artifact is None and node.sha256 is None:
            head += f"  (value stored inline)  {where}  run {e.run_id}  attempt {e.attempt}"
        lines.append(head)
        if node.sha256 is None:
            return "\n".join(lines)
    lines.append(describe(node))
    sections: list[tuple[str, tuple[LineageNode, ...], str]] = []
    if node.upstream:
        sections.append(("upstream (computed from)", node.upstream, "upstream"))
    if node.downstream:
        sections.append(("downstream (used by)", node.downstream, "downstream"))
    if len(sections) == 2:
        for i, (title, children, attr) in enumerate(sections):
            last = i == len(sections) - 1
            lines.append(("└── " if last else "├── ") + title)
            _render_children(children, attr, "    " if last else "│   ", lines)
    elif sections:
        _, children, attr = sections[0]
        _render_children(children, attr, "", lines)
    return "\n".join(lines)


def _render_children(
    children: tuple[LineageNode, ...], attr: str, prefix: str, lines: list[str]
) -> None:
    for i, child in enumerate(children):
        last = i == len(children) - 1
        lines.append(prefix + ("└── " if last else "├── ") + describe(child))
        grandchildren: tuple[LineageNode, ...] = getattr(child, attr)
        _render_children(grandchildren, attr, prefix + ("    " if last else "│   "), lines)


__all__ = ["LineageNode", "LineageStore", "describe", "human_size", "render_tree", "walk_lineage"]
