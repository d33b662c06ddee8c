// A pipeline's or a run's task graph: layered layout by dagre (left to right), drawn as SVG.
// A mapped task is one stacked node with its instance count and a bar of its instances'
// states, never one node per instance, so a map over 10,000 stays a handful of nodes.
// Layout depends only on the structure (ids and edges), so live state changes repaint
// nodes without laying out again.
import dagre from "@dagrejs/dagre";
import { useMemo } from "react";
import { useNavigate } from "react-router";
import { stateColour } from "./State";

export type GNode = {
  id: string;
  title: string;
  subtitle?: string;
  mapped?: boolean;
  state?: string;
  counts?: Record<string, number>;
  total?: number;
  href?: string;
};
export type GEdge = { from: string; to: string; kind?: string };

const W = 172;
const H = 56;

type Laid = { x: number; y: number };

function layout(nodes: GNode[], edges: GEdge[]) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 56, marginx: 24, marginy: 24 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: W, height: H });
  for (const e of edges) if (g.hasNode(e.from) && g.hasNode(e.to)) g.setEdge(e.from, e.to);
  dagre.layout(g);
  const pos = new Map<string, Laid>();
  for (const id of g.nodes()) {
    const n = g.node(id);
    pos.set(id, { x: n.x - W / 2, y: n.y - H / 2 });
  }
  const paths = g.edges().map((e) => ({
    from: e.v,
    to: e.w,
    points: g.edge(e).points as { x: number; y: number }[],
  }));
  const graph = g.graph();
  return { pos, paths, width: (graph.width ?? 0) + 8, height: (graph.height ?? 0) + 8 };
}

function pathOf(points: { x: number; y: number }[]): string {
  if (points.length === 0) return "";
  const [first, ...rest] = points;
  if (rest.length === 1) return `M${first.x},${first.y} L${rest[0].x},${rest[0].y}`;
  // A smooth curve through dagre's control points.
  let d = `M${first.x},${first.y}`;
  for (let i = 0; i < rest.length - 1; i++) {
    const p = rest[i];
    const q = rest[i + 1];
    const end = i === rest.length - 2 ? q : { x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 };
    d += ` Q${p.x},${p.y} ${end.x},${end.y}`;
  }
  return d;
}

function CountBar({ counts, total, width }: { counts: Record<string, number>; total: number; width: number }) {
  let x = 0;
  const parts = Object.entries(counts).filter(([, n]) => n > 0);
  return (
    <g>
      {parts.map(([state, n]) => {
        const w = total ? (n / total) * width : 0;
        const r = <rect key={state} x={x} y={0} width={w} height={4} fill={stateColour(state)} />;
        x += w;
        return r;
      })}
    </g>
  );
}

export function Graph({ nodes, edges, kindOf }: { nodes: GNode[]; edges: GEdge[]; kindOf?: (e: GEdge) => string }) {
  const navigate = useNavigate();
  const structure = nodes.map((n) => n.id).join("|") + "#" + edges.map((e) => `${e.from}>${e.to}`).join("|");
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const laid = useMemo(() => layout(nodes, edges), [structure]);
  const kinds = new Map(edges.map((e) => [`${e.from}>${e.to}`, kindOf ? kindOf(e) : e.kind ?? "data"]));
  return (
    <div className="graph-wrap" data-testid="graph">
      <svg width={laid.width} height={laid.height} role="img" aria-label="task graph">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" fill="var(--edge)" />
          </marker>
        </defs>
        {laid.paths.map((p) => (
          <path
            key={`${p.from}>${p.to}`}
            className={`edge ${kinds.get(`${p.from}>${p.to}`) === "order" ? "order" : ""}`}
            d={pathOf(p.points)}
            markerEnd="url(#arrow)"
          />
        ))}
        {nodes.map((n) => {
          const at = laid.pos.get(n.id);
          if (!at) return null;
          const colour = n.state ? stateColour(n.state) : "var(--border)";
          return (
            <g
              key={n.id}
              className={`node ${n.state ? `state-${n.state}` : ""}`}
              data-node={n.id}
              data-state={n.state ?? ""}
              transform={`translate(${at.x},${at.y})`}
              style={{ cursor: n.href ? "pointer" : "default" }}
              onClick={() => n.href && navigate(n.href)}
            >
              <title>{[n.title, n.state, n.mapped ? `${n.total ?? "?"} instances` : ""].filter(Boolean).join(" · ")}</title>
              {n.mapped && (
                <>
                  <rect className="box" x={8} y={-8} width={W} height={H} rx={7} />
                  <rect className="box" x={4} y={-4} width={W} height={H} rx={7} />
                </>
              )}
              <rect className="box" width={W} height={H} rx={7} style={{ stroke: n.state ? colour : undefined, strokeWidth: n.state ? 1.5 : 1 }} />
              <rect width={6} height={H} rx={3} fill={colour} />
              <text className="label" x={16} y={n.subtitle ? 22 : H / 2 + 5}>
                {n.title.length > 20 ? n.title.slice(0, 19) + "…" : n.title}
              </text>
              <text className="sub" x={16} y={40}>
                {n.subtitle ?? ""}
              </text>
              {n.mapped && n.total !== undefined && (
                <text className="sub count" x={W - 10} y={22} textAnchor="end">
                  ×{n.total}
                </text>
              )}
              {n.mapped && n.counts && n.total ? (
                <g transform={`translate(14,${H - 9})`}>
                  <CountBar counts={n.counts} total={n.total} width={W - 24} />
                </g>
              ) : null}
            </g>
          );
        })}
      </svg>
    </div>
  );
}
