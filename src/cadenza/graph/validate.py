"""Every check of a compiled pipeline, reported at once in one DefinitionError.

Each problem names the task and the fix, and suggests near-misses. Pure: no I/O.
"""

from __future__ import annotations

import difflib

from cadenza.core.errors import DefinitionError, Problem
from cadenza.core.suggest import did_you_mean
from cadenza.graph.model import PipelineGraph, TriggerRule


def check_trigger_rule(rule: str, task: str | None) -> Problem | None:
    valid = [r.value for r in TriggerRule]
    if rule in valid:
        return None
    return Problem(
        message=f"unknown trigger_rule '{rule}'.{did_you_mean(rule, valid)}",
        task=task,
        hint=f"@task(trigger_rule=\"{difflib.get_close_matches(rule, valid, 1, 0.0)[0]}\"). "
        f"Valid rules: {', '.join(valid)}",
    )


def find_cycle(graph: PipelineGraph) -> list[str] | None:
    """One cycle as a list of task ids (first repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph.nodes, white)
    downstream = graph.downstream()
    for start in graph.nodes:
        if color[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                color[node] = grey
                path.append(node)
            children = downstream[node]
            if i < len(children):
                stack.append((node, i + 1))
                child = children[i]
                if color[child] == grey:
                    return path[path.index(child) :] + [child]
                if color[child] == white:
                    stack.append((child, 0))
            else:
                color[node] = black
                path.pop()
    return None


def topological_order(graph: PipelineGraph) -> list[str]:
    """Kahn's algorithm, stable in definition order. Assumes no cycle."""
    indeg = {n: 0 for n in graph.nodes}
    downstream = graph.downstream()
    for node in graph.nodes.values():
        indeg[node.id] = sum(1 for u in node.upstream if u in graph.nodes)
    order: list[str] = []
    ready = [n for n in graph.nodes if indeg[n] == 0]
    while ready:
        nxt: list[str] = []
        for n in ready:
            order.append(n)
            for d in downstream[n]:
                indeg[d] -= 1
                if indeg[d] == 0:
                    nxt.append(d)
        ready = nxt
    return order


def validate_graph(graph: PipelineGraph, extra: list[Problem] | None = None) -> None:
    """Raise one DefinitionError listing every problem of `graph` (plus `extra`)."""
    problems = list(extra or [])
    ids = list(graph.nodes)
    downstream = graph.downstream()

    for node in graph.nodes.values():
        for up in node.upstream:
            if up not in graph.nodes:
                problems.append(
                    Problem(
                        message=f"depends on '{up}', which is not part of this pipeline."
                        + did_you_mean(up, ids),
                        task=node.id,
                        hint="call the upstream task inside the same @pipeline body",
                    )
                )
        if node.options.is_branch:
            direct = downstream[node.id]
            if not direct:
                problems.append(
                    Problem(
                        message="is a @task.branch with no downstream tasks to choose from",
                        task=node.id,
                        hint=f"add downstreams: {node.id}_ref >> [task_a(), task_b()]",
                    )
                )
            for target in node.branch_targets:
                if target not in direct:
                    problems.append(
                        Problem(
                            message=f"branch can return '{target}', which is not one of its "
                            f"direct downstream tasks ({', '.join(direct) or 'none'})."
                            + did_you_mean(target, direct),
                            task=node.id,
                            hint="return the id of a direct downstream task, or add "
                            f"'{target}' downstream of the branch with >>",
                        )
                    )

    cycle = find_cycle(graph)
    if cycle:
        problems.append(
            Problem(
                message=f"the tasks form a cycle: {' -> '.join(cycle)}",
                task=cycle[0],
                hint="remove one of the >> dependencies on that cycle",
            )
        )
    if problems:
        raise DefinitionError(graph.name, problems)
