// A pipeline's or a run's task graph: layered layout by dagre (left to right), drawn as SVG.
// A mapped task is one stacked node with its instance count and a bar of its instances'
// states, never one node per instance, so a map over 10,000 stays a handful of nodes.
// Layout depends only on the structure (ids and edges), so live state changes repaint
// nodes without laying out again.
import { useEffect, useMemo, useState } from "react";
import { useNavigate } from "react-router";
import { layout, NODE_H as H, NODE_W as W, type LayoutIn, type LayoutOut } from "./layout";
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

// Above this many nodes the layout runs in a Web Worker (a few hundred nodes take dagre
// tens of milliseconds to hundreds on a slow machine).
const WORKER_ABOVE = 150;

/** The layout of `input`: computed here for small graphs, in a worker for big ones (null
 * until it arrives). */
function useLayout(input: LayoutIn, key: string): { laid: LayoutOut | null; where: string } {
  const big = input.ids.length > WORKER_ABOVE;
  const small = useMemo(() => (big ? null : layout(input)), [key]); // eslint-disable-line react-hooks/exhaustive-deps
  const [fromWorker, setFromWorker] = useState<{ key: string; out: LayoutOut } | null>(null);
  useEffect(() => {
    if (!big) return;
    const worker = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module" });
    worker.onmessage = (e: MessageEvent<{ key: string; out: LayoutOut }>) => setFromWorker(e.data);
    worker.postMessage({ key, input });
    return () => worker.terminate();
  }, [key]); // eslint-disable-line react-hooks/exhaustive-deps
  if (!big) return { laid: small, where: "main" };
  return { laid: fromWorker && fromWorker.key === key ? fromWorker.out : null, where: "worker" };
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
  const { laid, where } = useLayout({ ids: nodes.map((n) => n.id), edges: edges.map((e) => [e.from, e.to]) }, structure);
  if (!laid) {
    return (
      <div className="graph-wrap" data-testid="graph" data-layout="pending">
        <p className="muted" style={{ padding: 16 }}>Laying out {nodes.length} tasks…</p>
      </div>
    );
  }
  const kinds = new Map(edges.map((e) => [`${e.from}>${e.to}`, kindOf ? kindOf(e) : e.kind ?? "data"]));
  return (
    <div className="graph-wrap" data-testid="graph" data-layout={where}>
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
          const at = laid.pos[n.id];
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
