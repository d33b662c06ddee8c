import { Link } from "react-router";
import type { RunBriefOut } from "../api/client";
import { fmtDate } from "../format";
import { STATE_COLOURS } from "../states.gen";

export function stateColour(state: string): string {
  return STATE_COLOURS[state] ?? "#9ca3af";
}

export function StateBadge({ state }: { state: string }) {
  return (
    <span className="badge" data-state={state} style={{ background: stateColour(state) }}>
      {state.replace(/_/g, " ")}
    </span>
  );
}

/** A pipeline's newest runs as coloured squares, oldest on the left; each links to its run. */
export function RunSquares({ runs }: { runs: RunBriefOut[] }) {
  const ordered = [...runs].reverse();
  return (
    <span className="squares">
      {ordered.map((r) => (
        <Link
          key={r.run_id}
          to={`/runs/${r.run_id}`}
          className="square"
          data-state={r.state}
          title={`${r.state} · ${fmtDate(r.logical_date ?? r.created_at)} · ${r.run_id}`}
          style={{ background: stateColour(r.state) }}
        />
      ))}
    </span>
  );
}

export function Legend({ states }: { states: readonly string[] }) {
  return (
    <span className="legend">
      {states.map((s) => (
        <span key={s} className="legend-item">
          <span className="dot" style={{ background: stateColour(s) }} />
          {s.replace(/_/g, " ")}
        </span>
      ))}
    </span>
  );
}
