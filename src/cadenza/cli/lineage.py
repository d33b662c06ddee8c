"""`cadenza lineage ARTIFACT_OR_ASSET`: what an artifact was computed from, and what was
computed from it, as a tree.

What belongs here: the command line of `walk_lineage` and showing its tree (a rich Tree,
one `describe()` line per artifact) or JSON (the same tree as nested dicts). What does not:
resolving the start or walking (`artifacts/lineage.py`, over the store's lineage records).

Exit code: 0, or 2 when the artifact or asset is unknown (the store's message and fix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import escape, out, print_json

if TYPE_CHECKING:
    from rich.tree import Tree

    from cadenza.artifacts.lineage import LineageNode


def lineage_command(
    start: Annotated[str, typer.Argument(
        metavar="ARTIFACT_OR_ASSET",
        help="An artifact's SHA-256 or a unique prefix of it (`cadenza runs show RUN_ID` "
        "shows them), an asset name (its newest version), or ASSET@N (version N).")],
    upstream: Annotated[bool, typer.Option(
        "--upstream", help="Only what it was computed from.")] = False,
    downstream: Annotated[bool, typer.Option(
        "--downstream", help="Only what was computed from it.")] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", "-d", min=0, metavar="N",
        help="At most N steps away from it (default: all the way).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the tree as JSON (nested dicts).")] = False,
) -> None:
    """Walk an artifact's lineage both ways (or one with --upstream / --downstream).

    Each line: SHA-256 prefix, the task instance that produced it (task, run, attempt),
    its code fingerprint, size and type.
    """
    from cadenza.core.errors import UsageError

    if upstream and downstream:
        raise UsageError("--upstream and --downstream exclude each other",
                         hint="give neither to walk both ways")
    from cadenza.artifacts.lineage import Direction, walk_lineage

    direction: Direction = "upstream" if upstream else "downstream" if downstream else "both"
    from cadenza.cli.runs import open_project_store

    tree = walk_lineage(open_project_store(), start,
                        direction=direction, depth=depth)
    if json_out:
        print_json(node_to_json(tree))
        return
    print_tree(build_tree(tree))


def print_tree(tree: Tree) -> None:
    """A terminal wraps long lines under their guide; a pipe or file gets one line per
    artifact, never cropped (a Tree is cut at the console's width otherwise)."""
    console = out()
    if console.is_terminal:
        console.print(tree, soft_wrap=False)
        return
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update_width(100_000), tree).maximum
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(tree, soft_wrap=False)
    finally:
        console.width = width


def node_to_json(node: LineageNode) -> dict[str, Any]:
    """One node and everything below it, as nested dicts."""
    import dataclasses

    return {
        "sha256": node.sha256,
        "artifact": dataclasses.asdict(node.artifact) if node.artifact is not None else None,
        "asset": dataclasses.asdict(node.asset) if node.asset is not None else None,
        "repeated": node.repeated,
        "truncated": node.truncated,
        "upstream": [node_to_json(n) for n in node.upstream],
        "downstream": [node_to_json(n) for n in node.downstream],
    }


def build_tree(node: LineageNode) -> Tree:
    """The rich Tree of a walk, laid out as `artifacts.lineage.render_tree` lays out text:
    with both directions, the inputs under "upstream (computed from)" and the consumers
    under "downstream (used by)"; with one, directly under the start."""
    from rich.tree import Tree

    from cadenza.artifacts.lineage import describe

    line = f"[bold]{escape(describe(node))}[/]"
    if node.asset is not None:
        e = node.asset
        head = f"[bold]asset {escape(e.asset)} v{e.version}[/]"
        if node.sha256 is None:  # its value was small and stored inline: no artifact
            where = e.task_id if e.map_index < 0 else f"{e.task_id}[{e.map_index}]"
            return Tree(f"{head}  (value stored inline)  {escape(where)}  run "
                        f"{escape(e.run_id)}  attempt {e.attempt}")
        line = f"{head}\n{line}"
    root = Tree(line)
    sections = [(title, children, attr) for title, children, attr in (
        ("upstream (computed from)", node.upstream, "upstream"),
        ("downstream (used by)", node.downstream, "downstream"),
    ) if children]
    for title, children, attr in sections:
        parent = root.add(f"[dim]{title}[/]") if len(sections) == 2 else root
        _add_children(parent, children, attr)
    return root


def _add_children(parent: Tree, children: tuple[LineageNode, ...], attr: str) -> None:
    from cadenza.artifacts.lineage import describe

    for child in children:
        text = escape(describe(child))
        branch = parent.add(f"[dim]{text}[/]" if child.repeated else text)
        _add_children(branch, getattr(child, attr), attr)
