// Gantt timeline of a run's task instances on one canvas: per row the wait in the queue
// (queued -> started, pale), the attempt (started -> ended, in its state's colour), and for
// retried tasks the earlier attempts with the retry gaps between them. Only the rows on
// screen are drawn (the canvas stays the viewport's size and redraws on scroll), so 10,000
// rows cost what 30 do.
import { useCallback, useEffect, useRef, useState } from "react";
import { useNavigate } from "react-router";
import type { TaskInstanceOut } from "../api/client";
import { fmtDuration } from "../format";
import { cssVar } from "../theme";
import { stateColour } from "./State";

export type AttemptSpan = { attempt: number; state: string; started_at?: string | null; ended_at?: string | null };

const ROW = 24;
const HEAD = 28;
const LABEL = 200;
const MIN_BAR = 3; // px: the narrowest bar an attempt gets

const t = (iso: string | null | undefined) => (iso ? Date.parse(iso) : NaN);

function niceStep(spanMs: number, px: number): number {
  const target = spanMs / Math.max(1, px / 110);
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 3e4, 6e4, 12e4, 3e5, 6e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5];
  return steps.find((s) => s >= target) ?? steps[steps.length - 1];
}

function fmtOffset(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export function Gantt({
  runId,
  rows,
  attempts,
  running,
  expanded,
  onToggle,
}: {
  runId: string;
  rows: TaskInstanceOut[];
  attempts: Map<string, AttemptSpan[]>;
  running: boolean;
  /** Mapped tasks shown with their instances' rows (click a mapped task's name). */
  expanded?: Set<string>;
  onToggle?: (task: string) => void;
}) {
  const wrap = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [width, setWidth] = useState(800);
  const [tip, setTip] = useState<{ x: number; y: number; text: string } | null>(null);
  const [now, setNow] = useState(Date.now());
  const navigate = useNavigate();

  const shown = rows.filter((r) => r.started_at || r.queued_at);
  const height = Math.min(HEAD + shown.length * ROW + 2, Math.max(240, window.innerHeight * 0.7));

  // The time range: first queue entry to the last end (now, while the run goes on).
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const r of shown) {
    const a = t(r.queued_at) || t(r.started_at);
    const s = Math.min(...[t(r.queued_at), t(r.started_at)].filter((x) => !Number.isNaN(x)));
    if (!Number.isNaN(a)) t0 = Math.min(t0, s);
    const e = t(r.ended_at);
    t1 = Math.max(t1, Number.isNaN(e) ? (r.started_at ? now : t1) : e);
    for (const at of attempts.get(r.task_id) ?? []) {
      if (at.started_at) t0 = Math.min(t0, t(at.started_at));
      if (at.ended_at) t1 = Math.max(t1, t(at.ended_at));
    }
  }
  if (!Number.isFinite(t0)) t0 = now;
  if (!Number.isFinite(t1) || t1 <= t0) t1 = t0 + 1000;

  useEffect(() => {
    if (!running) return;
    const timer = setInterval(() => setNow(Date.now()), 500); // the running bars grow
    return () => clearInterval(timer);
  }, [running]);

  useEffect(() => {
    const el = wrap.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setWidth(el.clientWidth));
    ro.observe(el);
    setWidth(el.clientWidth);
    return () => ro.disconnect();
  }, []);

  const draw = useCallback(() => {
    const c = canvas.current;
    const el = wrap.current;
    if (!c || !el) return;
    const dpr = window.devicePixelRatio || 1;
    const w = width;
    const h = height;
    if (c.width !== w * dpr || c.height !== h * dpr) {
      c.width = w * dpr;
      c.height = h * dpr;
      c.style.width = `${w}px`;
      c.style.height = `${h}px`;
    }
    const g = c.getContext("2d")!;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const text = cssVar("--text");
    const muted = cssVar("--muted");
    const line = cssVar("--grid-line");
    const plotW = w - LABEL - 16;
    const x = (ms: number) => LABEL + ((ms - t0) / (t1 - t0)) * plotW;
    const scroll = el.scrollTop;
    const first = Math.max(0, Math.floor(scroll / ROW));
    const last = Math.min(shown.length, first + Math.ceil((h - HEAD) / ROW) + 1);

    // Ticks
    const step = niceStep(t1 - t0, plotW);
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    for (let ms = 0; ms <= t1 - t0 + 1; ms += step) {
      const px = Math.round(x(t0 + ms)) + 0.5;
      g.strokeStyle = line;
      g.beginPath();
      g.moveTo(px, HEAD);
      g.lineTo(px, h);
      g.stroke();
      g.fillStyle = muted;
      if (px + 50 < w) g.fillText(`+${fmtOffset(ms)}`, px + 3, HEAD / 2);
    }
    g.strokeStyle = line;
    g.beginPath();
    g.moveTo(0, HEAD + 0.5);
    g.lineTo(w, HEAD + 0.5);
    g.stroke();

    for (let i = first; i < last; i++) {
      const r = shown[i];
      const y = HEAD + (i * ROW - scroll);
      if (y + ROW < HEAD) continue;
      g.save();
      g.beginPath();
      g.rect(0, HEAD, w, h - HEAD);
      g.clip();
      // label
      g.fillStyle = text;
      g.font = "12px system-ui, sans-serif";
      const mapped = r.map_summary ? ` ×${r.map_summary.count}` : "";
      const open = r.map_summary ? (expanded?.has(r.task_id) ? "▾ " : "▸ ") : "";
      let label = r.map_index >= 0 ? `   [${r.map_index}]` : open + r.task_id + mapped;
      while (g.measureText(label).width > LABEL - 16 && label.length > 4) label = label.slice(0, -2);
      g.fillText(label, 8, y + ROW / 2);
      // the wait in the queue (under the attempts: a bar drawn on top is never hidden by it)
      const q = t(r.queued_at);
      const s = t(r.started_at);
      const e = Number.isNaN(t(r.ended_at)) ? now : t(r.ended_at);
      if (!Number.isNaN(q)) {
        g.globalAlpha = 0.35;
        g.fillStyle = stateColour("queued");
        g.fillRect(x(q), y + 8, Math.max(1, x(Number.isNaN(s) ? now : s) - x(q)), ROW - 16);
        g.globalAlpha = 1;
      }
      // earlier attempts and the retry gaps between them. Every attempt keeps a bar of its
      // own (MIN_BAR px at least, on whole pixels): a quick failure retried at once in a long
      // run would otherwise sit under the next attempt's bar and the retry would not show.
      const spans = r.map_index >= 0 ? [] : attempts.get(r.task_id) ?? [];
      let drawnEnd = -Infinity;
      for (const a of spans) {
        const s = t(a.started_at);
        const e = Number.isNaN(t(a.ended_at)) ? now : t(a.ended_at);
        if (Number.isNaN(s)) continue;
        const x0 = Math.max(Math.round(x(s)), drawnEnd + 1);
        const x1 = Math.max(x0 + MIN_BAR, Math.round(x(e)));
        if (x0 > drawnEnd + 1 && Number.isFinite(drawnEnd)) {
          g.strokeStyle = stateColour("up_for_retry");
          g.setLineDash([3, 3]);
          g.beginPath();
          g.moveTo(drawnEnd, y + ROW / 2);
          g.lineTo(x0, y + ROW / 2);
          g.stroke();
          g.setLineDash([]);
        }
        g.fillStyle = stateColour(a.state);
        g.fillRect(x0, y + 5, x1 - x0, ROW - 10);
        drawnEnd = x1;
      }
      // the (latest) attempt, when the earlier ones are not drawn above
      if (!Number.isNaN(s) && spans.length === 0) {
        g.fillStyle = stateColour(r.state);
        g.fillRect(x(s), y + 5, Math.max(MIN_BAR, x(e) - x(s)), ROW - 10);
      }
      g.restore();
    }
  }, [width, height, shown, attempts, t0, t1, now]);

  useEffect(draw, [draw]);

  const rowAt = (clientY: number) => {
    const el = wrap.current!;
    const rect = el.getBoundingClientRect();
    const y = clientY - rect.top - HEAD + el.scrollTop;
    const i = Math.floor(y / ROW);
    return y >= 0 && i >= 0 && i < shown.length ? shown[i] : null;
  };

  return (
    <div
      className="canvas-wrap"
      ref={wrap}
      style={{ height }}
      data-testid="gantt"
      data-rows={shown.length}
      onScroll={draw}
      onMouseMove={(e) => {
        const r = rowAt(e.clientY);
        if (!r) return setTip(null);
        const wait = r.queued_at && r.started_at ? (t(r.started_at) - t(r.queued_at)) / 1000 : null;
        setTip({
          x: e.clientX + 12,
          y: e.clientY + 12,
          text: `${r.task_id}${r.map_index >= 0 ? `[${r.map_index}]` : ""} · ${r.state} · ran ${fmtDuration(r.duration_s)}${wait !== null ? ` · queued ${fmtDuration(wait)}` : ""}${r.attempts > 1 ? ` · ${r.attempts} attempts` : ""}`,
        });
      }}
      onMouseLeave={() => setTip(null)}
      onClick={(e) => {
        const r = rowAt(e.clientY);
        if (!r) return;
        const x = e.clientX - wrap.current!.getBoundingClientRect().left;
        if (r.map_summary && r.map_index < 0 && x < LABEL && onToggle) return onToggle(r.task_id);
        const at = r.map_index >= 0 ? `?map_index=${r.map_index}` : "";
        navigate(`/runs/${runId}/tasks/${encodeURIComponent(r.task_id)}${at}`);
      }}
    >
      <canvas ref={canvas} style={{ position: "sticky", top: 0, left: 0 }} />
      <div style={{ height: Math.max(0, HEAD + shown.length * ROW - height), pointerEvents: "none" }} />
      {tip && <div className="tooltip" style={{ left: tip.x, top: tip.y }}>{tip.text}</div>}
    </div>
  );
}
