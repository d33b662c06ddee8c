// Assets (/assets), one asset's versions with the lineage of one both ways
// (/assets/NAME?version=N; names may contain '/'), pools (/pools; admins set slots) and SLA
// misses (/sla-misses).
import { useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api, enc, type Page } from "../api/client";
import type { components } from "../api/schema";
import { useApi } from "../api/hooks";
import { useAuth } from "../auth";
import { ErrorBox } from "../components/ErrorBox";
import { StateBadge } from "../components/State";
import { fmtDate, fmtDuration, shortId } from "../format";
import { LineageGraph } from "../components/LineageGraph";

type S = components["schemas"];

const assetPath = (name: string) => `/assets/${name.split("/").map(enc).join("/")}`;

export function AssetsPage() {
  const page = useApi<Page<S["AssetOut"]>>("/assets?limit=500");
  return (
    <div className="page">
      <div className="page-head"><h1>Assets</h1></div>
      <ErrorBox error={page.error} />
      <table className="table" data-testid="assets">
        <thead><tr><th>Asset</th><th className="num">Latest version</th><th className="num">Versions</th><th>Updated</th></tr></thead>
        <tbody>
          {(page.data?.items ?? []).map((a) => (
            <tr key={a.name} data-asset={a.name}>
              <td><Link to={assetPath(a.name)}>{a.name}</Link></td>
              <td className="num">{a.latest_version}</td>
              <td className="num">{a.versions}</td>
              <td>{fmtDate(a.updated_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {page.data && page.data.items.length === 0 && <p className="muted">No asset has a version yet.</p>}
    </div>
  );
}

export function AssetPage() {
  const name = useParams()["*"] ?? "";
  const [params, setParams] = useSearchParams();
  const versions = useApi<Page<S["AssetVersionOut"]>>(`${assetPath(name)}/versions?limit=200`);
  const latest = versions.data?.items[0]?.version;
  const chosen = Number(params.get("version") ?? latest ?? 0);
  const lineage = useApi<S["AssetLineageOut"]>(chosen ? `${assetPath(name)}/versions/${chosen}/lineage?depth=4` : null);
  const l = lineage.data;
  return (
    <div className="page">
      <div className="page-head"><h1>{name}</h1><span className="muted">asset</span></div>
      <ErrorBox error={versions.error ?? lineage.error} />
      <div className="cols">
        <div>
          {l && (
            <div className="panel" data-testid="asset-lineage">
              <h2 style={{ marginTop: 0 }}>Version {l.version.version}</h2>
              <p>
                made by <Link to={`/runs/${l.version.run_id}/tasks/${enc(l.version.task_id)}${l.version.map_index >= 0 ? `?map_index=${l.version.map_index}` : ""}`}>{l.version.task_id}</Link>{" "}
                in run <Link className="mono" to={`/runs/${l.version.run_id}`}>{shortId(l.version.run_id)}</Link>, {fmtDate(l.version.created_at)}
              </p>
              <LineageGraph
                center={{ id: "asset", title: `${name} v${l.version.version}`, subtitle: l.version.task_id, state: "success" }}
                upstream={l.produced_by ? [l.produced_by] : []}
                downstream={l.consumed_by}
              />
              <h2>Runs it triggered</h2>
              {l.triggered_runs.items.length ? (
                <table className="table compact" data-testid="triggered-runs">
                  <tbody>
                    {l.triggered_runs.items.map((r) => (
                      <tr key={r.run_id}>
                        <td><Link className="mono" to={`/runs/${r.run_id}`}>{shortId(r.run_id)}</Link></td>
                        <td><Link to={`/pipelines/${enc(r.pipeline)}`}>{r.pipeline}</Link></td>
                        <td><StateBadge state={r.state} /></td>
                        <td>{fmtDate(r.created_at)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              ) : <p className="muted">none</p>}
            </div>
          )}
        </div>
        <div className="panel">
          <h2 style={{ marginTop: 0 }}>Versions</h2>
          <table className="table compact" data-testid="asset-versions">
            <tbody>
              {(versions.data?.items ?? []).map((v) => (
                <tr key={v.version} className={v.version === chosen ? "selected" : ""}>
                  <td><button className="link" onClick={() => setParams({ version: String(v.version) })}>v{v.version}</button></td>
                  <td>{v.task_id}</td>
                  <td className="small">{fmtDate(v.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </div>
    </div>
  );
}

export function PoolsPage() {
  const pools = useApi<Page<S["PoolOut"]>>("/pools?limit=500");
  const { me } = useAuth();
  const admin = me?.role === "admin";
  const [error, setError] = useState<Error | null>(null);
  const [newName, setNewName] = useState("");
  const [newSlots, setNewSlots] = useState("1");
  const put = async (name: string, slots: string, description: string) => {
    setError(null);
    try {
      await api(`/pools/${name.split("/").map(enc).join("/")}`, { method: "PUT", json: { slots: Number(slots), description } });
      pools.reload();
      return true;
    } catch (e) {
      setError(e as Error);
      return false;
    }
  };
  const setSlots = (p: S["PoolOut"], value: string) => put(p.name, value, p.description ?? "");
  return (
    <div className="page">
      <div className="page-head"><h1>Pools</h1></div>
      <ErrorBox error={pools.error ?? error} />
      <table className="table" data-testid="pools">
        <thead><tr><th>Pool</th><th className="num">Slots</th><th>Description</th></tr></thead>
        <tbody>
          {(pools.data?.items ?? []).map((p) => (
            <tr key={p.name} data-pool={p.name}>
              <td>{p.name}</td>
              <td className="num">
                {admin ? (
                  <input type="number" min={0} aria-label={`${p.name} slots`} defaultValue={p.slots} style={{ width: 90 }}
                    onBlur={(e) => e.target.value !== String(p.slots) && setSlots(p, e.target.value)}
                    onKeyDown={(e) => e.key === "Enter" && (e.target as HTMLInputElement).blur()} />
                ) : p.slots}
                {p.slots === 0 && <span className="muted small"> paused</span>}
              </td>
              <td className="muted">{p.description}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {pools.data && pools.data.items.length === 0 && <p className="muted">No pools: every task runs in the unlimited default pool.</p>}
      {admin && (
        <form
          className="toolbar"
          style={{ marginTop: 12 }}
          onSubmit={async (e) => {
            e.preventDefault();
            if (await put(newName.trim(), newSlots, "")) setNewName("");
          }}
        >
          <input type="text" placeholder="new pool name" aria-label="New pool name" value={newName} onChange={(e) => setNewName(e.target.value)} />
          <input type="number" min={0} aria-label="New pool slots" value={newSlots} onChange={(e) => setNewSlots(e.target.value)} style={{ width: 90 }} />
          <button type="submit" disabled={!newName.trim()}>Add pool</button>
        </form>
      )}
    </div>
  );
}

export function SlaMissesPage() {
  const misses = useApi<Page<S["SlaMissOut"]>>("/sla-misses?limit=200");
  return (
    <div className="page">
      <div className="page-head"><h1>SLA misses</h1></div>
      <ErrorBox error={misses.error} />
      <table className="table" data-testid="sla-misses">
        <thead><tr><th>Run</th><th>Pipeline</th><th>SLA</th><th>Deadline</th><th>Detected</th></tr></thead>
        <tbody>
          {(misses.data?.items ?? []).map((m) => (
            <tr key={`${m.run_id}-${m.deadline_at}`}>
              <td><Link className="mono" to={`/runs/${m.run_id}`}>{shortId(m.run_id)}</Link></td>
              <td><Link to={`/pipelines/${enc(m.pipeline)}`}>{m.pipeline}</Link></td>
              <td>{fmtDuration(m.sla_s)}</td>
              <td>{fmtDate(m.deadline_at)}</td>
              <td>{fmtDate(m.detected_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {misses.data && misses.data.items.length === 0 && <p className="muted">No run has missed its SLA.</p>}
    </div>
  );
}
