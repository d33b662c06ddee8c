// All runs, newest first, filtered by state (?state=failed) and pipeline (?pipeline=).
import { useSearchParams } from "react-router";
import { Legend } from "../components/State";
import { RunsTable } from "../components/RunsTable";
import { RUN_STATES } from "../states.gen";

export function RunsPage() {
  const [params, setParams] = useSearchParams();
  const state = params.get("state");
  const pipeline = params.get("pipeline");
  const query = new URLSearchParams();
  if (state) query.set("state", state);
  if (pipeline) query.set("pipeline", pipeline);
  return (
    <div className="page">
      <div className="page-head">
        <h1>Runs{pipeline ? ` of ${pipeline}` : ""}</h1>
        <div className="toolbar">
          <select
            aria-label="Run state"
            value={state ?? ""}
            onChange={(e) => {
              const next = new URLSearchParams(params);
              if (e.target.value) next.set("state", e.target.value);
              else next.delete("state");
              setParams(next);
            }}
          >
            <option value="">all states</option>
            {RUN_STATES.map((s) => (
              <option key={s} value={s}>{s}</option>
            ))}
          </select>
          <Legend states={RUN_STATES} />
        </div>
      </div>
      <RunsTable query={query.toString()} />
    </div>
  );
}
