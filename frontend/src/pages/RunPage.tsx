// One run, live: /runs/:id (graph), /runs/:id/gantt, /runs/:id/tasks?state=failed. The
// run's event stream keeps every view current without polling; actions (cancel, resume,
// retry failed, clear a task and its downstream) go through the API.
import { useEffect, useMemo, useState } from "react";
import { Link, NavLink, useParams, useSearchParams } from "react-router";
import { api, enc, type Page, type PipelineDetailOut, type TaskInstanceOut } from "../api/client";
import { useApi } from "../api/hooks";
import { RUN_FINAL, useRunLive } from "../api/live";
import { ErrorBox } from "../components/ErrorBox";
import { Gantt, type AttemptSpan } from "../components/Gantt";
import { Graph, type GNode } from "../components/Graph";
import { Legend, StateBadge, stateColour } from "../components/State";
import { fmtDate, fmtDuration } from "../format";
import { useCanOperate } from "../auth";
import { TASK_STATES } from "../states.gen";

type Tab = "graph" | "gantt" | "tasks";

export function RunPage({ tab }: { tab: Tab }) {
  const { runId = "" } = useParams();
  const live = useRunLive(runId);
  const run = live.run;
  const pipeline = useApi<PipelineDetailOut>(run ? `/pipelines/${enc(run.pipeline)}` : null);
  const [actionError, setActionError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const base = `/runs/${runId}`;

  const act = async (path: string, body?: unknown) => {
    setBusy(true);
    setActionError(null);
    try {
      await api(`/runs/${runId}/${path}`, { method: "POST", json: body ?? {} });
      live.reload();
    } catch (e) {
      setActionError(e as Error);
    } finally {
      setBusy(false);
    }
  };

  const canOperate = useCanOperate();
  const final = run ? RUN_FINAL.has(run.state) : false;
  const anyFailed = live.tasks.some((t) => ["failed", "upstream_failed", "cancelled"].includes(t.state));

  return (
    <div className="page">
      <div className="page-head">
        <h1>
          {run ? <Link to={`/pipelines/${enc(run.pipeline)}`}>{run.pipeline}</Link> : "Run"}{" "}
          <span className="mono muted small">{runId}</span>
        </h1>
        {run && <StateBadge state={run.state} />}
        {live.live && <span className="live-dot" title="Following the run's events">live</span>}
        <div className="toolbar" data-testid="run-actions">
          {canOperate && run && !final && (
            <button className="danger" disabled={busy || Boolean(run.cancel_requested_at)} onClick={() => act("cancel")}>
              {run.cancel_requested_at ? "Cancelling…" : "Cancel run"}
            </button>
          )}
          {canOperate && run && final && run.state !== "success" && (
            <button disabled={busy} onClick={() => act("resume")}>Resume</button>
          )}
          {canOperate && run && final && anyFailed && (
            <button className="primary" disabled={busy} onClick={() => act("retry", {})}>Retry failed</button>
          )}
        </div>
      </div>
      <ErrorBox error={live.error ?? actionError} />
      {run && (
        <div className="panel">
          <dl className="kv run-kv">
            <dt>Trigger</dt><dd>{run.trigger}</dd>
            <dt>Created</dt><dd>{fmtDate(run.created_at)}</dd>
            <dt>Duration</dt>
            <dd>{fmtDuration(run.duration_s ?? (run.started_at && run.ended_at ? (Date.parse(run.ended_at) - Date.parse(run.started_at)) / 1000 : null))}</dd>
            {run.logical_date && (<><dt>Logical date</dt><dd>{fmtDate(run.logical_date)}</dd></>)}
            {run.data_interval_start && (
              <><dt>Data interval</dt><dd>{fmtDate(run.data_interval_start)} → {fmtDate(run.data_interval_end)}</dd></>
            )}
            <dt>Parameters</dt>
            <dd><code data-testid="run-params">{JSON.stringify(run.params ?? {})}</code></dd>
            {run.error && (<><dt>Error</dt><dd className="error-text">{run.error}</dd></>)}
          </dl>
        </div>
      )}
      <nav className="tabs">
        <NavLink to={base} end>Graph</NavLink>
        <NavLink to={`${base}/gantt`}>Gantt</NavLink>
        <NavLink to={`${base}/tasks`}>Tasks</NavLink>
        <span className="spacer" />
        <Legend states={TASK_STATES} />
      </nav>
      {run && tab === "graph" && pipeline.data && <RunGraph runId={runId} pipeline={pipeline.data} tasks={live.tasks} />}
      {run && tab === "gantt" && <RunGantt runId={runId} tasks={live.tasks} running={!final} />}
      {run && tab === "tasks" && (
        <TaskList runId={runId} tasks={live.tasks} final={final && canOperate} onClear={(task, downstream) => act("retry", { task_id: task, downstream })} busy={busy} />
      )}
    </div>
  );
}

function RunGraph({ runId, pipeline, tasks }: { runId: string; pipeline: PipelineDetailOut; tasks: TaskInstanceOut[] }) {
  const byTask = new Map(tasks.map((t) => [t.task_id, t]));
  const nodes: GNode[] = (pipeline.nodes ?? []).map((n) => {
    const ti = byTask.get(n.id);
    const state = ti?.state ?? "pending";
    return {
      id: n.id,
      title: n.id,
      mapped: n.mapped,
      state,
      counts: ti?.map_summary?.states,
      total: n.mapped ? ti?.map_summary?.count ?? 0 : undefined,
      subtitle: `${state.replace(/_/g, " ")}${ti?.duration_s != null ? ` · ${fmtDuration(ti.duration_s)}` : ""}${ti && ti.attempts > 1 ? ` · try ${ti.attempts}` : ""}`,
      href: `/runs/${runId}/tasks/${enc(n.id)}`,
    };
  });
  const edges = (pipeline.edges ?? []).map((e) => ({ from: e.upstream, to: e.downstream, kind: e.kind }));
  return <Graph nodes={nodes} edges={edges} />;
}

function RunGantt({ runId, tasks, running }: { runId: string; tasks: TaskInstanceOut[]; running: boolean }) {
  // Earlier attempts of retried tasks (a bounded number of requests: the first 50).
  const retried = tasks.filter((t) => t.attempts > 1 && t.map_index < 0).slice(0, 50).map((t) => `${t.task_id}:${t.attempts}`).join(",");
  const [attempts, setAttempts] = useState(new Map<string, AttemptSpan[]>());
  useEffect(() => {
    if (!retried) return;
    let alive = true;
    Promise.all(
      retried.split(",").map((key) => {
        const task = key.slice(0, key.lastIndexOf(":"));
        return api<Page<AttemptSpan>>(`/runs/${runId}/tasks/${enc(task)}/attempts?limit=100`).then(
          (p) => [task, p.items] as const,
          () => [task, [] as AttemptSpan[]] as const,
        );
      }),
    ).then((pairs) => alive && setAttempts(new Map(pairs)));
    return () => {
      alive = false;
    };
  }, [runId, retried]);
  // Mapped tasks opened into their instances (?open=task,task), the first 500 of each.
  const [params, setParams] = useSearchParams();
  const open = useMemo(() => new Set((params.get("open") ?? "").split(",").filter(Boolean)), [params]);
  const [instances, setInstances] = useState(new Map<string, TaskInstanceOut[]>());
  const openKey = [...open].sort().join(",");
  useEffect(() => {
    let alive = true;
    const want = openKey.split(",").filter(Boolean);
    Promise.all(
      want.map((task) =>
        api<Page<TaskInstanceOut>>(`/runs/${runId}/tasks/${enc(task)}/instances?limit=500`).then(
          (p) => [task, p.items] as const,
          () => [task, [] as TaskInstanceOut[]] as const,
        ),
      ),
    ).then((pairs) => alive && setInstances(new Map(pairs)));
    return () => {
      alive = false;
    };
  }, [runId, openKey, running]); // instance rows: read when opened and when the run ends
  const rows = tasks.flatMap((t) => (open.has(t.task_id) ? [t, ...(instances.get(t.task_id) ?? [])] : [t]));
  const toggle = (task: string) => {
    const next = new Set(open);
    if (next.has(task)) next.delete(task);
    else next.add(task);
    const p = new URLSearchParams(params);
    if (next.size) p.set("open", [...next].join(","));
    else p.delete("open");
    setParams(p, { replace: true });
  };
  return <Gantt runId={runId} rows={rows} attempts={attempts} running={running} expanded={open} onToggle={toggle} />;
}

function TaskList({
  runId,
  tasks,
  final,
  busy,
  onClear,
}: {
  runId: string;
  tasks: TaskInstanceOut[];
  final: boolean;
  busy: boolean;
  onClear: (task: string, downstream: boolean) => void;
}) {
  const [params, setParams] = useSearchParams();
  const picked = new Set((params.get("state") ?? "").split(",").filter(Boolean));
  const counts = useMemo(() => {
    const c: Record<string, number> = {};
    for (const t of tasks) c[t.state] = (c[t.state] ?? 0) + 1;
    return c;
  }, [tasks]);
  const shown = picked.size ? tasks.filter((t) => picked.has(t.state)) : tasks;
  const toggle = (s: string) => {
    const next = new Set(picked);
    if (next.has(s)) next.delete(s);
    else next.add(s);
    const p = new URLSearchParams(params);
    if (next.size) p.set("state", [...next].join(","));
    else p.delete("state");
    setParams(p);
  };
  return (
    <>
      <div className="toolbar state-filter" data-testid="state-filter">
        {TASK_STATES.filter((s) => counts[s]).map((s) => (
          <button key={s} className={`chip ${picked.has(s) ? "active" : ""}`} data-filter={s} onClick={() => toggle(s)}>
            <span className="dot" style={{ background: stateColour(s) }} /> {s.replace(/_/g, " ")} {counts[s]}
          </button>
        ))}
      </div>
      <table className="table" data-testid="task-list">
        <thead>
          <tr>
            <th>Task</th>
            <th>State</th>
            <th className="num">Attempts</th>
            <th>Started</th>
            <th className="num">Duration</th>
            <th>Note</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {shown.map((t) => (
            <tr key={t.task_id} data-task={t.task_id} data-state={t.state}>
              <td>
                <Link to={`/runs/${runId}/tasks/${enc(t.task_id)}`}>{t.task_id}</Link>
                {t.map_summary && (
                  <div className="map-states small">
                    ×{t.map_summary.count}{" "}
                    {Object.entries(t.map_summary.states ?? {}).map(([s, n]) => (
                      <span key={s} className="map-count" style={{ color: stateColour(s) }}>{n} {s.replace(/_/g, " ")} </span>
                    ))}
                  </div>
                )}
              </td>
              <td><StateBadge state={t.state} /></td>
              <td className="num">{t.attempts}</td>
              <td className="nowrap">{fmtDate(t.started_at)}</td>
              <td className="num">{fmtDuration(t.duration_s)}</td>
              <td className="small">
                {t.error ? <span className="error-text">{t.error.type}: {t.error.message}</span> : t.cache_origin ? <CacheOrigin origin={t.cache_origin} /> : <span className="muted">{t.reason}</span>}
              </td>
              <td>
                {final && (
                  <button className="small-btn" disabled={busy} title="Run this task and its downstream tasks again" onClick={() => onClear(t.task_id, true)}>
                    Clear ↓
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

export function CacheOrigin({ origin }: { origin: Record<string, unknown> }) {
  const run = typeof origin.run_id === "string" ? origin.run_id : null;
  const task = typeof origin.task_id === "string" ? origin.task_id : null;
  if (!run) return <span className="muted">cached</span>;
  return (
    <span>
      cached from <Link to={`/runs/${run}${task ? `/tasks/${enc(task)}` : ""}`} className="mono">{run.slice(0, 8)}</Link>
    </span>
  );
}
