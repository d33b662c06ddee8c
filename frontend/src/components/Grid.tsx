// A pipeline's runs x tasks grid (Airflow's grid view) on one canvas: a row per task (graph
// order), a column per run (oldest left, newest right), each cell its state's colour. Both
// axes are virtualised: the canvas is the viewport's size and draws only the cells on
// screen, so 1,000 runs x 200 tasks scrolls like 20 x 10.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useNavigate } from "react-router";
import type { RunBriefOut } from "../api/client";
import { fmtDate } from "../format";
import { cssVar } from "../theme";
import { stateColour } from "./State";

export type GridData = { tasks: string[]; runs: RunBriefOut[]; codes: string[]; cells: string[] };

const CELL = 16;
const GAP = 2;
const LABEL = 190;
const HEAD = 26;

export function Grid({ data }: { data: GridData }) {
  const wrap = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [size, setSize] = useState({ w: 800, h: 400 });
  const [tip, setTip] = useState<{ x: number; y: number; text: string } | null>(null);
  const navigate = useNavigate();

  // Columns oldest -> newest; cells decoded once into code indexes (255: no instance).
  const { runs, codes } = useMemo(() => {
    const runs = [...data.runs].reverse();
    const rows = [...data.cells].reverse();
    const codes = rows.map((row) => {
      const a = new Uint8Array(data.tasks.length);
      for (let i = 0; i < data.tasks.length; i++) {
        const c = row.charCodeAt(i) - 97;
        a[i] = c >= 0 && c < data.codes.length ? c : 255;
      }
      return a;
    });
    return { runs, codes };
  }, [data]);
  const colours = useMemo(() => data.codes.map(stateColour), [data.codes]);
  const fullW = LABEL + runs.length * CELL + 8;
  const fullH = HEAD + data.tasks.length * CELL + 4;
  const height = Math.min(fullH + 16, Math.max(200, window.innerHeight * 0.7));

  useEffect(() => {
    const el = wrap.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setSize({ w: el.clientWidth, h: el.clientHeight }));
    ro.observe(el);
    setSize({ w: el.clientWidth, h: el.clientHeight });
    el.scrollLeft = el.scrollWidth; // newest runs in view
    return () => ro.disconnect();
  }, [runs.length]);

  const draw = useCallback(() => {
    const c = canvas.current;
    const el = wrap.current;
    if (!c || !el) return;
    const dpr = window.devicePixelRatio || 1;
    const { w, h } = size;
    if (c.width !== w * dpr || c.height !== h * dpr) {
      c.width = w * dpr;
      c.height = h * dpr;
      c.style.width = `${w}px`;
      c.style.height = `${h}px`;
    }
    const g = c.getContext("2d")!;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const sx = el.scrollLeft;
    const sy = el.scrollTop;
    const c0 = Math.max(0, Math.floor(sx / CELL));
    const c1 = Math.min(runs.length, Math.ceil((sx + w - LABEL) / CELL) + 1);
    const r0 = Math.max(0, Math.floor(sy / CELL));
    const r1 = Math.min(data.tasks.length, Math.ceil((sy + h - HEAD) / CELL) + 1);
    const empty = cssVar("--grid-line");
    // cells
    g.save();
    g.beginPath();
    g.rect(LABEL, HEAD, w - LABEL, h - HEAD);
    g.clip();
    for (let ci = c0; ci < c1; ci++) {
      const x = LABEL + ci * CELL - sx;
      const col = codes[ci];
      for (let ri = r0; ri < r1; ri++) {
        const code = col[ri];
        g.fillStyle = code === 255 ? empty : colours[code];
        g.fillRect(x, HEAD + ri * CELL - sy, CELL - GAP, CELL - GAP);
      }
    }
    g.restore();
    // run headers: a bar in the run's state colour
    g.save();
    g.beginPath();
    g.rect(LABEL, 0, w - LABEL, HEAD);
    g.clip();
    for (let ci = c0; ci < c1; ci++) {
      g.fillStyle = stateColour(runs[ci].state);
      g.fillRect(LABEL + ci * CELL - sx, 4, CELL - GAP, HEAD - 10);
    }
    g.restore();
    // task labels
    g.save();
    g.beginPath();
    g.rect(0, HEAD, LABEL, h - HEAD);
    g.clip();
    g.fillStyle = cssVar("--panel");
    g.fillRect(0, HEAD, LABEL, h - HEAD);
    g.fillStyle = cssVar("--text");
    g.font = "12px system-ui, sans-serif";
    g.textBaseline = "middle";
    for (let ri = r0; ri < r1; ri++) {
      let label = data.tasks[ri];
      while (g.measureText(label).width > LABEL - 16 && label.length > 4) label = label.slice(0, -2);
      g.fillText(label, 8, HEAD + ri * CELL - sy + (CELL - GAP) / 2);
    }
    g.restore();
  }, [size, runs, codes, colours, data.tasks]);

  useEffect(draw, [draw]);

  const at = (clientX: number, clientY: number) => {
    const el = wrap.current!;
    const rect = el.getBoundingClientRect();
    const x = clientX - rect.left;
    const y = clientY - rect.top;
    if (x < LABEL) return null;
    const ci = Math.floor((x - LABEL + el.scrollLeft) / CELL);
    if (ci < 0 || ci >= runs.length) return null;
    if (y < HEAD) return { run: runs[ci], task: null as string | null, state: runs[ci].state as string };
    const ri = Math.floor((y - HEAD + el.scrollTop) / CELL);
    if (ri < 0 || ri >= data.tasks.length) return null;
    const code = codes[ci][ri];
    return { run: runs[ci], task: data.tasks[ri], state: code === 255 ? "no instance" : data.codes[code] };
  };

  return (
    <div
      ref={wrap}
      className="canvas-wrap grid-wrap"
      style={{ height }}
      data-testid="grid"
      data-runs={runs.length}
      data-tasks={data.tasks.length}
      onScroll={draw}
      onMouseMove={(e) => {
        const hit = at(e.clientX, e.clientY);
        setTip(hit ? { x: e.clientX + 12, y: e.clientY + 12, text: `${hit.task ?? "run"} · ${hit.state} · ${fmtDate(hit.run.logical_date ?? hit.run.created_at)} · ${hit.run.run_id.slice(0, 8)}` } : null);
      }}
      onMouseLeave={() => setTip(null)}
      onClick={(e) => {
        const hit = at(e.clientX, e.clientY);
        if (hit) navigate(`/runs/${hit.run.run_id}${hit.task ? `/tasks/${encodeURIComponent(hit.task)}` : ""}`);
      }}
    >
      <canvas ref={canvas} style={{ position: "sticky", top: 0, left: 0, display: "block" }} />
      <div style={{ width: fullW, height: Math.max(0, fullH - size.h), marginTop: -0, pointerEvents: "none" }} />
      {tip && <div className="tooltip" style={{ left: tip.x, top: tip.y }}>{tip.text}</div>}
    </div>
  );
}
