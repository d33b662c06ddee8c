// One pipeline: its graph (/pipelines/:name), its runs (/runs) and the trigger form
// (/trigger), each a URL. Mapped tasks are one stacked node.
import { useEffect, useState } from "react";
import { Link, NavLink, useNavigate, useParams, useSearchParams } from "react-router";
import { api, ApiError, enc, type PipelineDetailOut, type RunOut } from "../api/client";
import { useApi } from "../api/hooks";
import { ErrorBox } from "../components/ErrorBox";
import { Graph, type GEdge, type GNode } from "../components/Graph";
import { Grid, type GridData } from "../components/Grid";
import { Legend } from "../components/State";
import { TASK_STATES } from "../states.gen";
import { ParamForm, type FieldErrors, type ParamSchema } from "../components/ParamForm";
import { RunSquares } from "../components/State";
import { useCanOperate } from "../auth";
import { RunsTable } from "../components/RunsTable";
import { fmtDate, humanSchedule, nextRunText, triggerText } from "../format";

export function graphOf(p: PipelineDetailOut): { nodes: GNode[]; edges: GEdge[] } {
  const nodes = (p.nodes ?? []).map((n) => ({
    id: n.id,
    title: n.id,
    subtitle: n.mapped
      ? `mapped over ${(n.mapped_args ?? []).join(", ")}`
      : n.is_branch
        ? "branch"
        : n.function.split(":").pop() !== n.task
          ? n.function.split(":").pop()
          : "",
    mapped: n.mapped,
  }));
  const edges = (p.edges ?? []).map((e) => ({ from: e.upstream, to: e.downstream, kind: e.kind }));
  return { nodes, edges };
}

export function PipelinePage({ tab }: { tab: "graph" | "grid" | "runs" | "trigger" }) {
  const { name = "" } = useParams();
  const pipeline = useApi<PipelineDetailOut>(`/pipelines/${enc(name)}`, 5000);
  const p = pipeline.data;
  const base = `/pipelines/${enc(name)}`;
  const canOperate = useCanOperate();
  return (
    <div className="page">
      <div className="page-head">
        <h1>{name}</h1>
        {p?.paused && <span className="badge" style={{ background: "#6b7280" }}>paused</span>}
        {p && <RunSquares runs={p.last_runs} />}
        {canOperate && (
          <div className="toolbar">
            <Link to={`${base}/trigger`}><button className="primary">Trigger</button></Link>
          </div>
        )}
      </div>
      <ErrorBox error={pipeline.error} />
      {p && (
        <div className="panel">
          <dl className="kv">
            {p.description && (<><dt>About</dt><dd>{p.description}</dd></>)}
            <dt>Schedule</dt>
            <dd>
              {p.schedule ? (
                <>
                  {humanSchedule(p.schedule) ?? p.schedule} <code className="muted">{p.schedule}</code> {p.timezone}
                </>
              ) : (p.triggers ?? []).length ? (p.triggers ?? []).map(triggerText).join(", ") : "manual"}
            </dd>
            <dt>Next run</dt>
            <dd>{nextRunText(p.next_run_at, p.paused)}{p.next_run_at && !p.paused ? ` (${fmtDate(p.next_run_at)})` : ""}</dd>
            <dt>Defined in</dt>
            <dd><code>{p.file ?? p.source}</code></dd>
            {(p.tags ?? []).length > 0 && (<><dt>Tags</dt><dd>{(p.tags ?? []).join(", ")}</dd></>)}
          </dl>
        </div>
      )}
      <nav className="tabs">
        <NavLink to={base} end>Graph</NavLink>
        <NavLink to={`${base}/grid`}>Grid</NavLink>
        <NavLink to={`${base}/runs`}>Runs</NavLink>
        {canOperate && <NavLink to={`${base}/trigger`}>Trigger</NavLink>}
      </nav>
      {p && tab === "graph" && <Graph {...graphOf(p)} />}
      {tab === "grid" && <GridPanel name={name} />}
      {tab === "runs" && <RunsTable query={`pipeline=${enc(name)}`} showPipeline={false} />}
      {p && tab === "trigger" && (canOperate ? <TriggerPanel pipeline={p} /> : <p className="muted">Triggering a run needs the operator role.</p>)}
    </div>
  );
}

function fieldErrorsOf(e: ApiError, names: string[]): FieldErrors {
  const out: FieldErrors = {};
  for (const f of e.fields) {
    const hit = [...f.loc].reverse().find((l) => typeof l === "string" && (names.includes(l) || l === "logical_date"));
    if (typeof hit === "string") out[hit] = f.msg;
  }
  return out;
}

function TriggerPanel({ pipeline }: { pipeline: PipelineDetailOut }) {
  const navigate = useNavigate();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>({});
  const schema = (pipeline.params_schema ?? {}) as ParamSchema;
  const names = Object.keys(schema.properties ?? {});
  const trigger = async (params: Record<string, unknown>, extra: { logicalDate: string; tags: string[] }) => {
    setBusy(true);
    setError(null);
    setFieldErrors({});
    try {
      const run = await api<RunOut>(`/pipelines/${enc(pipeline.name)}/runs`, {
        method: "POST",
        json: { params, tags: extra.tags, ...(extra.logicalDate ? { logical_date: extra.logicalDate } : {}) },
      });
      navigate(`/runs/${run.run_id}`);
    } catch (e) {
      setError(e as Error);
      if (e instanceof ApiError) setFieldErrors(fieldErrorsOf(e, names));
      setBusy(false);
    }
  };
  return (
    <div className="panel">
      <ErrorBox error={error} />
      <ParamForm schema={schema} serverErrors={fieldErrors} busy={busy} onSubmit={trigger} />
    </div>
  );
}

type GridPage = GridData & { next_cursor?: string | null };

function GridPanel({ name }: { name: string }) {
  const [params] = useSearchParams();
  // Runs per page (?runs=, at most the API's 1,000).
  const perPage = Math.min(1000, Math.max(1, Number(params.get("runs")) || 200));
  const [data, setData] = useState<GridPage | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const load = (cursor: string | null) =>
    api<GridPage>(`/pipelines/${enc(name)}/grid?limit=${perPage}${cursor ? `&cursor=${enc(cursor)}` : ""}`).then(
      (page) =>
        setData((old) =>
          old && cursor
            ? { ...page, tasks: old.tasks, runs: [...old.runs, ...page.runs], cells: [...old.cells, ...regrid(old.tasks, page)] }
            : page,
        ),
      (e: Error) => setError(e),
    );
  useEffect(() => {
    setData(null);
    load(null);
  }, [name, perPage]); // eslint-disable-line react-hooks/exhaustive-deps
  return (
    <div>
      <ErrorBox error={error} />
      <div className="toolbar" style={{ marginBottom: 8 }}>
        <Legend states={TASK_STATES} />
        <span className="spacer" />
        {data?.next_cursor && <button onClick={() => load(data.next_cursor ?? null)}>Load older runs</button>}
      </div>
      {data && (data.runs.length ? <Grid data={data} /> : <p className="muted">No runs yet.</p>)}
    </div>
  );
}

/** A later page's rows laid out on the first page's task columns (tasks only older runs
 * had are appended to a page's list, so a later page can have more). */
function regrid(tasks: string[], page: GridPage): string[] {
  if (page.tasks.length === tasks.length && page.tasks.every((t, i) => t === tasks[i])) return page.cells;
  const at = new Map(page.tasks.map((t, i) => [t, i]));
  return page.cells.map((row) => tasks.map((t) => (at.has(t) ? row[at.get(t)!] : ".")).join(""));
}
