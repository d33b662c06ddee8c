// Graph layout by dagre (left to right), shared by the page and the layout worker.
import dagre from "@dagrejs/dagre";

export const NODE_W = 172;
export const NODE_H = 56;

export type LayoutIn = { ids: string[]; edges: [string, string][] };
export type LayoutOut = {
  pos: Record<string, { x: number; y: number }>;
  paths: { from: string; to: string; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
};

export function layout({ ids, edges }: LayoutIn): LayoutOut {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 56, marginx: 24, marginy: 24 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const id of ids) g.setNode(id, { width: NODE_W, height: NODE_H });
  for (const [a, b] of edges) if (g.hasNode(a) && g.hasNode(b)) g.setEdge(a, b);
  dagre.layout(g);
  const pos: LayoutOut["pos"] = {};
  for (const id of g.nodes()) {
    const n = g.node(id);
    pos[id] = { x: n.x - NODE_W / 2, y: n.y - NODE_H / 2 };
  }
  const paths = g.edges().map((e) => ({ from: e.v, to: e.w, points: g.edge(e).points as { x: number; y: number }[] }));
  const graph = g.graph();
  return { pos, paths, width: (graph.width ?? 0) + 8, height: (graph.height ?? 0) + 8 };
}
