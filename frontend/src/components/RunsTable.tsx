import { useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import { api, type Page, type RunOut } from "../api/client";
import { useNewest } from "../api/hooks";
import { fmtDate, fmtDuration, shortId } from "../format";
import { ErrorBox } from "./ErrorBox";
import { StateBadge } from "./State";

/** Runs newest first from `/runs?<query>`, a page at a time ("Load more" follows the cursor). */
export function RunsTable({ query, showPipeline = true }: { query: string; showPipeline?: boolean }) {
  const [runs, setRuns] = useState<RunOut[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [loaded, setLoaded] = useState(false);

  // Answers are shown newest-sent first only, and only for the filter shown now: a refresh of
  // the unfiltered list answered after a filter was picked put every run back under it.
  const newest = useNewest();
  const shown = useRef(query);
  shown.current = query;
  const load = (after: string | null, reset: boolean) => {
    const sep = query ? "&" : "";
    const n = newest.next();
    const asked = query;
    api<Page<RunOut>>(`/runs?${query}${sep}limit=50${after ? `&cursor=${encodeURIComponent(after)}` : ""}`).then(
      (page) => {
        if (asked !== shown.current || !newest.take(n)) return;
        setRuns((old) => (reset ? page.items : [...old, ...page.items]));
        setCursor(page.next_cursor ?? null);
        setError(null);
        setLoaded(true);
      },
      (e: Error) => setError(e),
    );
  };
  useEffect(() => load(null, true), [query]); // eslint-disable-line react-hooks/exhaustive-deps
  // The first page stays current (new runs, changed states) until the user pages on.
  const paged = runs.length > 50;
  useEffect(() => {
    if (paged) return;
    const timer = setInterval(() => document.visibilityState === "visible" && load(null, true), 5000);
    return () => clearInterval(timer);
  }, [query, paged]); // eslint-disable-line react-hooks/exhaustive-deps

  return (
    <>
      <ErrorBox error={error} />
      <table className="table" data-testid="runs">
        <thead>
          <tr>
            <th>Run</th>
            {showPipeline && <th>Pipeline</th>}
            <th>State</th>
            <th>Trigger</th>
            <th>Created</th>
            <th>Logical date</th>
            <th className="num">Duration</th>
          </tr>
        </thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.run_id} data-run={r.run_id}>
              <td><Link className="mono" to={`/runs/${r.run_id}`}>{shortId(r.run_id)}</Link></td>
              {showPipeline && <td><Link to={`/pipelines/${encodeURIComponent(r.pipeline)}`}>{r.pipeline}</Link></td>}
              <td><StateBadge state={r.state} /></td>
              <td className="muted">{r.trigger}</td>
              <td className="nowrap">{fmtDate(r.created_at)}</td>
              <td>{r.logical_date ? fmtDate(r.logical_date) : <span className="muted">–</span>}</td>
              <td className="num">{fmtDuration(r.duration_s)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && runs.length === 0 && <p className="muted">{/state=/.test(query) ? "No run in this state." : "No runs yet."}</p>}
      {cursor && (
        <p><button onClick={() => load(cursor, false)}>Load more</button></p>
      )}
    </>
  );
}
