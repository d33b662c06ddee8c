// One task instance: /runs/:runId/tasks/:taskId?map_index=&attempt=&q= . Its attempts, the
// chosen attempt's log (tail, then followed live over SSE while it runs; search; ANSI
// colours; secrets arrive masked), output and input previews, cache origin, error with
// traceback, lineage of its output, and a mapped task's instances.
import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api, ApiError, enc, type Page, type TaskInstanceOut } from "../api/client";
import type { components } from "../api/schema";
import { useApi } from "../api/hooks";
import { follow } from "../api/sse";
import { AnsiLine } from "../components/Ansi";
import { ErrorBox } from "../components/ErrorBox";
import { LineageGraph } from "../components/LineageGraph";
import { Preview } from "../components/Preview";
import { StateBadge, stateColour } from "../components/State";
import { fmtDate, fmtDuration, shortId } from "../format";
import { CacheOrigin } from "./RunPage";

type S = components["schemas"];
type Detail = S["TaskInstanceDetailOut"];
type LogChunk = S["LogChunkOut"];
type LineageNode = S["LineageNodeOut"];
type PreviewOut = S["PreviewOut"];

const TAIL = 65536;

export function TaskInstancePage() {
  const { runId = "", taskId = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const mapIndex = Number(params.get("map_index") ?? -1);
  const q = `map_index=${mapIndex}`;
  const base = `/runs/${runId}/tasks/${enc(taskId)}`;
  const detail = useApi<Detail>(`${base}?${q}`);
  const d = detail.data;
  const attemptParam = params.get("attempt");
  const attempt = attemptParam ? Number(attemptParam) : d?.attempts.length ? d.attempts[d.attempts.length - 1].attempt : null;
  const setParam = (k: string, v: string | null) => {
    const next = new URLSearchParams(params);
    if (v === null) next.delete(k);
    else next.set(k, v);
    setParams(next, { replace: k === "q" });
  };

  return (
    <div className="page">
      <div className="page-head">
        <h1>
          {taskId}
          {mapIndex >= 0 && <span className="muted"> [{mapIndex}]</span>}
        </h1>
        {d && <StateBadge state={d.state} />}
        <span className="muted">
          of <Link to={`/runs/${runId}`} className="mono">{shortId(runId)}</Link>
          {d && <> · <Link to={`/pipelines/${enc(d.pipeline)}`}>{d.pipeline}</Link></>}
          {mapIndex >= 0 && <> · <Link to={base}>all instances</Link></>}
        </span>
      </div>
      <ErrorBox error={detail.error} />
      {d && (
        <div className="cols">
          <div>
            {d.error && (
              <div className="panel" data-testid="ti-error">
                <h2 className="error-text" style={{ marginTop: 0 }}>{d.error.type}: {d.error.message}</h2>
                {d.error.traceback && <pre className="log">{d.error.traceback}</pre>}
              </div>
            )}
            {d.map_count !== null && d.map_count !== undefined && mapIndex < 0 && (
              <Instances runId={runId} taskId={taskId} count={d.map_count} />
            )}
            {(d.attempts.length > 0 || d.state === "running") && (
              <div className="panel">
                <h2 style={{ marginTop: 0 }}>Attempts</h2>
                <table className="table compact" data-testid="attempts">
                  <thead><tr><th>#</th><th>State</th><th>Started</th><th className="num">Duration</th><th>Worker</th><th>Error</th></tr></thead>
                  <tbody>
                    {d.attempts.map((a) => (
                      <tr key={a.attempt} className={a.attempt === attempt ? "selected" : ""} data-attempt={a.attempt}>
                        <td><button className="link" onClick={() => setParam("attempt", String(a.attempt))}>{a.attempt}</button></td>
                        <td><StateBadge state={a.state} />{a.live && <span className="live-dot"> live</span>}</td>
                        <td className="nowrap">{fmtDate(a.started_at)}</td>
                        <td className="num">{fmtDuration(a.duration_s)}</td>
                        <td className="muted small">{a.worker}</td>
                        <td className="small error-text">{a.error ? `${a.error.type}: ${a.error.message}` : ""}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                {attempt !== null && (
                  <Log base={base} mapIndex={mapIndex} attempt={attempt} search={params.get("q") ?? ""} onSearch={(v) => setParam("q", v || null)} />
                )}
              </div>
            )}
            {d.output && <OutputPanel base={base} q={q} />}
            {d.inputs.length > 0 && <InputsPanel base={base} mapIndex={mapIndex} inputs={d.inputs} runId={runId} />}
            {d.output?.kind === "artifact" && <LineagePanel base={base} q={q} />}
          </div>
          <div className="panel">
            <dl className="kv">
              <dt>State</dt><dd><StateBadge state={d.state} /></dd>
              <dt>Attempts</dt><dd>{d.attempt}</dd>
              <dt>Pool</dt><dd>{d.pool}</dd>
              {d.worker && (<><dt>Worker</dt><dd className="small">{d.worker}</dd></>)}
              <dt>Queued</dt><dd>{fmtDate(d.queued_at)}</dd>
              <dt>Started</dt><dd>{fmtDate(d.started_at)}</dd>
              <dt>Ended</dt><dd>{fmtDate(d.ended_at)}</dd>
              <dt>Duration</dt><dd>{fmtDuration(d.duration_s)}</dd>
              {d.next_retry_at && (<><dt>Next retry</dt><dd>{fmtDate(d.next_retry_at)}</dd></>)}
              {d.cache_origin && (<><dt>Cache origin</dt><dd data-testid="cache-origin"><CacheOrigin origin={d.cache_origin} /></dd></>)}
              {d.cache_key && (<><dt>Cache key</dt><dd className="mono small">{d.cache_key.slice(0, 16)}</dd></>)}
              {d.reason && (<><dt>Note</dt><dd>{d.reason}</dd></>)}
            </dl>
          </div>
        </div>
      )}
    </div>
  );
}

function Instances({ runId, taskId, count }: { runId: string; taskId: string; count: number }) {
  const [state, setState] = useState("");
  const page = useApi<Page<TaskInstanceOut>>(`/runs/${runId}/tasks/${enc(taskId)}/instances?limit=200${state ? `&state=${state}` : ""}`);
  const states = ["", "failed", "running", "success", "upstream_failed", "cancelled", "cached", "skipped"];
  return (
    <div className="panel">
      <h2 style={{ marginTop: 0 }}>
        Instances <span className="muted">×{count}</span>{" "}
        <select aria-label="Instance state" value={state} onChange={(e) => setState(e.target.value)}>
          {states.map((s) => <option key={s} value={s}>{s || "all states"}</option>)}
        </select>
      </h2>
      <div className="instances" data-testid="instances">
        {(page.data?.items ?? []).map((t) => (
          <Link
            key={t.map_index}
            to={`/runs/${runId}/tasks/${enc(taskId)}?map_index=${t.map_index}`}
            className="instance"
            data-state={t.state}
            title={`[${t.map_index}] ${t.state} · ${fmtDuration(t.duration_s)}`}
            style={{ borderColor: stateColour(t.state) }}
          >
            {t.map_index}
          </Link>
        ))}
      </div>
      {page.data?.next_cursor && <p className="muted small">The first 200 are shown; filter by state to find others.</p>}
    </div>
  );
}

function Log({ base, mapIndex, attempt, search, onSearch }: { base: string; mapIndex: number; attempt: number; search: string; onSearch: (v: string) => void }) {
  const [text, setText] = useState("");
  const [info, setInfo] = useState<{ live: boolean; start: number; size: number } | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [following, setFollowing] = useState(false);
  const box = useRef<HTMLPreElement>(null);

  useEffect(() => {
    const ctrl = new AbortController();
    setText("");
    setError(null);
    api<LogChunk>(`${base}/logs?map_index=${mapIndex}&attempt=${attempt}&offset=-${TAIL}&limit=${TAIL}`).then(
      (c) => {
        if (ctrl.signal.aborted) return;
        setText(c.text);
        setInfo({ live: c.live, start: c.offset, size: c.size });
        if (!c.live) return;
        setFollowing(true);
        follow(`${base}/logs/follow?map_index=${mapIndex}&attempt=${attempt}&offset=${c.next_offset}`, ctrl.signal, (e) => {
          const data = JSON.parse(e.data);
          if (e.event === "log") setText((t) => t + data.text);
          return e.event === "end";
        }).finally(() => !ctrl.signal.aborted && setFollowing(false));
      },
      (e: Error) => !ctrl.signal.aborted && setError(e instanceof ApiError && e.status === 404 ? new Error("No log for this attempt.") : e),
    );
    return () => ctrl.abort();
  }, [base, mapIndex, attempt]);

  useEffect(() => {
    const el = box.current;
    if (el && following) el.scrollTop = el.scrollHeight;
  }, [text, following]);

  const needle = search.trim().toLowerCase();
  const lines = useMemo(() => {
    const all = text.replace(/\n$/, "").split("\n");
    return all.map((l, i) => ({ l, i })).filter(({ l }) => !needle || l.toLowerCase().includes(needle));
  }, [text, needle]);

  return (
    <div className="log-panel">
      <div className="toolbar" style={{ margin: "12px 0 6px" }}>
        <strong>Log of attempt {attempt}</strong>
        {following && <span className="live-dot">following</span>}
        {info && info.start > 0 && <span className="muted small">the last {Math.round(TAIL / 1024)} KiB of {Math.round(info.size / 1024)} KiB</span>}
        <span className="spacer" />
        <input type="search" placeholder="Search the log" aria-label="Search the log" value={search} onChange={(e) => onSearch(e.target.value)} />
        {needle && <span className="muted small">{lines.length} {lines.length === 1 ? "line" : "lines"}</span>}
      </div>
      {error ? (
        <p className="muted">{error.message}</p>
      ) : (
        <pre className="log" ref={box} data-testid="log">
          {lines.map(({ l, i }) => <AnsiLine key={i} line={l} search={needle} index={i} />)}
        </pre>
      )}
    </div>
  );
}

function OutputPanel({ base, q }: { base: string; q: string }) {
  const p = useApi<PreviewOut>(`${base}/output/preview?${q}`);
  return (
    <div className="panel" data-testid="output">
      <h2 style={{ marginTop: 0 }}>Output</h2>
      <ErrorBox error={p.error} />
      {p.data && <Preview p={p.data} />}
    </div>
  );
}

function InputsPanel({ base, mapIndex, inputs, runId }: { base: string; mapIndex: number; inputs: S["InputOut"][]; runId: string }) {
  const [open, setOpen] = useState<string | null>(null);
  const key = (i: S["InputOut"]) => `${i.name}:${i.index}`;
  const chosen = inputs.find((i) => key(i) === open);
  const p = useApi<PreviewOut>(chosen ? `${base}/inputs/${enc(chosen.name)}/preview?map_index=${mapIndex}&index=${chosen.index}` : null);
  return (
    <div className="panel" data-testid="inputs">
      <h2 style={{ marginTop: 0 }}>Inputs</h2>
      <table className="table compact">
        <tbody>
          {inputs.map((i) => (
            <tr key={key(i)}>
              <td className="strong">{i.name}{i.index > 0 ? ` [${i.index}]` : ""}</td>
              <td className="muted">
                {i.source === "task" && i.task_id ? (
                  <>from <Link to={`/runs/${runId}/tasks/${enc(i.task_id)}${i.map_index >= 0 ? `?map_index=${i.map_index}` : ""}`}>{i.task_id}</Link></>
                ) : i.source === "param" ? `parameter ${i.param}` : i.source}
                {i.element !== null && i.element !== undefined ? ` · element ${i.element}` : ""}
              </td>
              <td className="mono small">{i.ref?.kind === "json" ? JSON.stringify(i.ref.value).slice(0, 80) : i.ref?.type_name ?? ""}</td>
              <td>{i.ref && <button className="small-btn" onClick={() => setOpen(open === key(i) ? null : key(i))}>{open === key(i) ? "Hide" : "Preview"}</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {chosen && p.data && <Preview p={p.data} />}
      <ErrorBox error={chosen ? p.error : null} />
    </div>
  );
}

function LineagePanel({ base, q }: { base: string; q: string }) {
  const l = useApi<LineageNode>(`${base}/lineage?${q}&depth=4`);
  return (
    <div className="panel" data-testid="lineage">
      <h2 style={{ marginTop: 0 }}>Lineage</h2>
      <ErrorBox error={l.error} />
      {l.data && (
        <>
          <div className="muted small">computed from (left) · this output · used by (right)</div>
          <LineageGraph
            center={{ id: l.data.sha256 ?? "this", title: "this output", subtitle: (l.data.sha256 ?? "").slice(0, 12), state: "success" }}
            upstream={l.data.upstream ?? []}
            downstream={l.data.downstream ?? []}
          />
        </>
      )}
    </div>
  );
}
