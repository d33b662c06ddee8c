// Pipelines: schedule (human-readable and cron), paused toggle, next run, last runs as
// coloured squares; search and a tag filter kept in the URL (?q=, ?tag=).
import { useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api, enc, type PipelineOut, type PipelinePage } from "../api/client";
import { useApi } from "../api/hooks";
import { ErrorBox } from "../components/ErrorBox";
import { RunSquares } from "../components/State";
import { useCanOperate } from "../auth";
import { fmtDate, humanSchedule, nextRunText, triggerText } from "../format";

export function PipelinesPage() {
  const [params, setParams] = useSearchParams();
  const q = params.get("q") ?? "";
  const tag = params.get("tag");
  const path = `/pipelines?limit=500&last_runs=20${tag ? `&tag=${enc(tag)}` : ""}`;
  const page = useApi<PipelinePage>(path, 5000);
  const [actionError, setActionError] = useState<Error | null>(null);
  const canOperate = useCanOperate();

  const items = useMemo(() => {
    const needle = q.trim().toLowerCase();
    const all = page.data?.items ?? [];
    if (!needle) return all;
    return all.filter((p) =>
      [p.name, p.description ?? "", ...(p.tags ?? [])].some((t) => t.toLowerCase().includes(needle)),
    );
  }, [page.data, q]);

  const setParam = (key: string, value: string | null) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next, { replace: key === "q" });
  };

  const togglePaused = async (p: PipelineOut) => {
    setActionError(null);
    try {
      await api(`/pipelines/${enc(p.name)}/${p.paused ? "unpause" : "pause"}`, { method: "POST" });
      page.reload();
    } catch (e) {
      setActionError(e as Error);
    }
  };

  return (
    <div className="page">
      <div className="page-head">
        <h1>Pipelines</h1>
        <div className="toolbar">
          <input
            type="search"
            className="search"
            placeholder="Search pipelines"
            aria-label="Search pipelines"
            value={q}
            onChange={(e) => setParam("q", e.target.value)}
          />
          {tag && (
            <button className="chip active" onClick={() => setParam("tag", null)} title="Clear the tag filter">
              tag: {tag} ✕
            </button>
          )}
        </div>
      </div>
      <ErrorBox error={page.error ?? actionError} />
      {page.data?.import_errors?.map((e) => (
        <div className="error-box" key={e.file} data-testid="import-error">
          <strong>{e.file}</strong> failed to import: {e.error}
        </div>
      ))}
      <table className="table" data-testid="pipelines">
        <thead>
          <tr>
            <th>Pipeline</th>
            <th>Schedule</th>
            <th>Active</th>
            <th>Next run</th>
            <th>Last runs</th>
            <th className="num">Tasks</th>
          </tr>
        </thead>
        <tbody>
          {items.map((p) => {
            const human = humanSchedule(p.schedule);
            return (
              <tr key={p.name} data-pipeline={p.name}>
                <td>
                  <Link className="strong" to={`/pipelines/${enc(p.name)}`}>{p.name}</Link>
                  {p.description && <div className="muted small">{p.description}</div>}
                  <div>
                    {(p.tags ?? []).map((t) => (
                      <button key={t} className={`chip ${t === tag ? "active" : ""}`} onClick={() => setParam("tag", t)}>
                        {t}
                      </button>
                    ))}
                  </div>
                </td>
                <td className="schedule">
                  {p.schedule ? (
                    <>
                      <div>{human ?? p.schedule}</div>
                      <code className="muted small">{p.schedule}</code>
                      {p.timezone && p.timezone !== "UTC" && <span className="muted small"> {p.timezone}</span>}
                    </>
                  ) : (p.triggers ?? []).length ? (
                    <span className="muted">{(p.triggers ?? []).map(triggerText).join(", ")}</span>
                  ) : (
                    <span className="muted">manual</span>
                  )}
                </td>
                <td>
                  <label className="switch" title={p.paused ? "Paused: click to unpause" : "Active: click to pause"}>
                    <input
                      type="checkbox"
                      role="switch"
                      aria-label={`${p.name} active`}
                      checked={!p.paused}
                      disabled={!canOperate}
                      onChange={() => togglePaused(p)}
                    />
                    <span className="slider" />
                  </label>
                </td>
                <td title={fmtDate(p.next_run_at)} className={p.paused || !p.next_run_at ? "muted" : ""} data-testid="next-run">
                  {nextRunText(p.next_run_at, p.paused)}
                </td>
                <td>
                  {p.last_runs.length ? <RunSquares runs={p.last_runs} /> : <span className="muted">no runs</span>}
                </td>
                <td className="num">{p.task_count}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {!page.loading && items.length === 0 && !page.error && (
        <p className="muted">{q || tag ? "No pipeline matches." : "No pipelines in this project."}</p>
      )}
    </div>
  );
}
