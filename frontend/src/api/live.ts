// A run as the run page shows it: its detail from the API, kept current by the run's event
// stream (SSE; no polling). Events mutate plain maps and one animation frame repaints, so a
// burst of thousands of task instance events costs one render per frame.
import { useCallback, useEffect, useRef, useState } from "react";
import { api, type RunDetailOut, type TaskInstanceOut } from "./client";
import { follow } from "./sse";

export type TiEvent = {
  task_id: string;
  map_index: number;
  state: string;
  attempt: number;
  queued_at: string | null;
  started_at: string | null;
  ended_at: string | null;
  reason: string;
};
type RunEvent = { state: string; started_at: string | null; ended_at: string | null; error: string | null };

export const RUN_FINAL = new Set(["success", "failed", "cancelled"]);

export type LiveRun = {
  run: RunDetailOut | undefined;
  /** Summary rows (map index -1) with live states merged in, in graph order. */
  tasks: TaskInstanceOut[];
  /** For each mapped task: map index -> state, as far as events told. */
  mapStates: Map<string, Map<number, string>>;
  error: Error | undefined;
  live: boolean;
  events: number;
  reload: () => void;
};

export function useRunLive(runId: string): LiveRun {
  const [run, setRun] = useState<RunDetailOut>();
  const [error, setError] = useState<Error>();
  const [live, setLive] = useState(false);
  const [, setFrame] = useState(0);
  const [generation, setGeneration] = useState(0);
  const tis = useRef(new Map<string, TiEvent>());
  const maps = useRef(new Map<string, Map<number, string>>());
  const runEvent = useRef<RunEvent | null>(null);
  const events = useRef(0);
  const pending = useRef(false);

  const repaint = useCallback(() => {
    if (pending.current) return;
    pending.current = true;
    requestAnimationFrame(() => {
      pending.current = false;
      setFrame((f) => f + 1);
    });
  }, []);

  const reload = useCallback(() => setGeneration((g) => g + 1), []);

  useEffect(() => {
    const ctrl = new AbortController();
    tis.current = new Map();
    maps.current = new Map();
    runEvent.current = null;
    events.current = 0;
    let detailLoaded = false;
    let finalAtLoad = false;
    const loadDetail = () =>
      api<RunDetailOut>(`/runs/${runId}`).then(
        (d) => {
          if (ctrl.signal.aborted) return;
          if (!detailLoaded) finalAtLoad = RUN_FINAL.has(d.state);
          detailLoaded = true;
          setRun(d);
          setError(undefined);
        },
        (e: Error) => !ctrl.signal.aborted && setError(e),
      );
    loadDetail().then(() => {
      // A finished run's detail is final: only an unfinished one is followed.
      if (!detailLoaded || ctrl.signal.aborted || finalAtLoad) return;
      setLive(true);
      follow(`/runs/${runId}/events`, ctrl.signal, (e) => {
        events.current += 1;
        const data = JSON.parse(e.data);
        if (e.event === "task_instance") {
          const t = data as TiEvent;
          if (t.map_index < 0) tis.current.set(t.task_id, t);
          else {
            let m = maps.current.get(t.task_id);
            if (!m) maps.current.set(t.task_id, (m = new Map()));
            m.set(t.map_index, t.state);
          }
          repaint();
          return false;
        }
        if (e.event === "run") {
          runEvent.current = data as RunEvent;
          repaint();
          if (RUN_FINAL.has(data.state)) {
            loadDetail(); // durations, errors and counts as stored
            return true;
          }
        }
        return false;
      })
        .catch((e: Error) => !ctrl.signal.aborted && setError(e))
        .finally(() => !ctrl.signal.aborted && setLive(false));
    });
    return () => ctrl.abort();
  }, [runId, generation, repaint]);

  const merged = run ? mergeRun(run, runEvent.current, tis.current, maps.current) : undefined;
  return {
    run: merged?.run,
    tasks: merged?.tasks ?? [],
    mapStates: maps.current,
    error,
    live,
    events: events.current,
    reload,
  };
}

function mergeRun(
  run: RunDetailOut,
  runEvent: RunEvent | null,
  tis: Map<string, TiEvent>,
  maps: Map<string, Map<number, string>>,
): { run: RunDetailOut; tasks: TaskInstanceOut[] } {
  const r: RunDetailOut = runEvent
    ? { ...run, state: runEvent.state as RunDetailOut["state"], started_at: runEvent.started_at ?? run.started_at, ended_at: runEvent.ended_at ?? run.ended_at }
    : run;
  const tasks = run.task_instances.map((ti) => {
    const ev = tis.get(ti.task_id);
    let out: TaskInstanceOut = ti;
    if (ev) {
      out = {
        ...ti,
        state: ev.state as TaskInstanceOut["state"],
        attempts: ev.attempt,
        queued_at: ev.queued_at,
        started_at: ev.started_at,
        ended_at: ev.ended_at,
        reason: ev.reason,
        duration_s:
          ev.started_at && ev.ended_at ? (Date.parse(ev.ended_at) - Date.parse(ev.started_at)) / 1000 : ti.duration_s,
      };
    }
    const m = maps.get(ti.task_id);
    if (m && m.size) {
      const states: Record<string, number> = {};
      for (const s of m.values()) states[s] = (states[s] ?? 0) + 1;
      out = { ...out, map_summary: { count: Math.max(m.size, ti.map_summary?.count ?? 0), states } };
    }
    return out;
  });
  return { run: r, tasks };
}
