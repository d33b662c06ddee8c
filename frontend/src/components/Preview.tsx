// A bounded preview of a value: a table for DataFrames, shape and first values for arrays,
// JSON otherwise; opaque (pickled) values only by type and size.
import type { components } from "../api/schema";

type PreviewOut = components["schemas"]["PreviewOut"];

function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function Preview({ p }: { p: PreviewOut }) {
  const meta = [p.type_name, p.shape ? `shape ${p.shape.join(" × ")}` : "", p.dtype ? `dtype ${p.dtype}` : "", bytes(p.size_bytes), p.truncated ? "truncated" : ""]
    .filter(Boolean)
    .join(" · ");
  return (
    <div className="preview" data-kind={p.kind}>
      <div className="muted small">{meta}</div>
      {(p.kind === "dataframe" || p.kind === "table") && (
        <div className="table-scroll">
          <table className="table compact" data-testid="preview-table">
            <thead>
              <tr>
                {(p.columns ?? []).map((c) => (
                  <th key={c.name} title={c.dtype}>{c.name}<div className="muted small">{c.dtype}</div></th>
                ))}
              </tr>
            </thead>
            <tbody>
              {(p.rows ?? []).map((r, i) => (
                <tr key={i}>
                  {(p.columns ?? []).map((c) => (
                    <td key={c.name} className="mono">{String(r[c.name])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {p.kind === "array" && <pre className="log">{JSON.stringify(p.values ?? [])}</pre>}
      {p.kind === "json" && <pre className="log">{p.text ?? JSON.stringify(p.value, null, 2)}</pre>}
      {p.kind === "opaque" && <p className="muted">Not shown: {p.note || "a pickled value is never loaded by the server"}.</p>}
      {p.kind === "missing" && <p className="error-text">{p.note || "The artifact is gone from the artifact store."}</p>}
      {p.note && p.kind !== "opaque" && p.kind !== "missing" && <div className="muted small">{p.note}</div>}
    </div>
  );
}
