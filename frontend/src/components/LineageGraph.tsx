// Lineage both ways as a layered graph: what an artifact (or an asset version) was computed
// from on the left, what was computed from it on the right. Each artifact is one node
// named by the task instance that produced it, linking to that task instance.
import type { components } from "../api/schema";
import { Graph, type GEdge, type GNode } from "./Graph";

type LineageNode = components["schemas"]["LineageNodeOut"];

function nodeOf(n: LineageNode): GNode {
  const a = n.artifact;
  return {
    id: n.sha256 ?? `unknown-${Math.random()}`,
    title: a ? (a.map_index >= 0 ? `${a.task_id}[${a.map_index}]` : a.task_id) : "unknown",
    subtitle: (n.sha256 ?? "").slice(0, 12),
    href: a ? `/runs/${a.run_id}/tasks/${encodeURIComponent(a.task_id)}${a.map_index >= 0 ? `?map_index=${a.map_index}` : ""}` : undefined,
  };
}

/** `center`: the node everything hangs off (an asset version, or the artifact itself). */
export function LineageGraph({ center, upstream, downstream }: { center: GNode; upstream: LineageNode[]; downstream: LineageNode[] }) {
  const nodes = new Map<string, GNode>([[center.id, center]]);
  const edges = new Map<string, GEdge>();
  const add = (n: LineageNode) => {
    const g = nodeOf(n);
    if (!nodes.has(g.id)) nodes.set(g.id, g);
    return g.id;
  };
  const up = (n: LineageNode, child: string, depth: number) => {
    const id = add(n);
    edges.set(`${id}>${child}`, { from: id, to: child });
    if (depth < 8) for (const u of n.upstream ?? []) up(u, id, depth + 1);
  };
  const down = (n: LineageNode, parent: string, depth: number) => {
    const id = add(n);
    edges.set(`${parent}>${id}`, { from: parent, to: id });
    if (depth < 8) for (const d of n.downstream ?? []) down(d, id, depth + 1);
  };
  for (const u of upstream) up(u, center.id, 0);
  for (const d of downstream) down(d, center.id, 0);
  return <Graph nodes={[...nodes.values()]} edges={[...edges.values()]} />;
}
