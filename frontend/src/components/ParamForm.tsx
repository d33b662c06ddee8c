// The trigger form, generated from a pipeline's parameter JSON schema (pydantic's): one
// field per property with its type, default and required mark; values are checked here
// first (types, required) and the server's 422 field errors are shown on their fields.
import { useMemo, useState } from "react";

type Prop = {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  format?: string;
  anyOf?: Prop[];
  items?: Prop;
  minimum?: number;
  maximum?: number;
};
export type ParamSchema = { properties?: Record<string, Prop>; required?: string[] };

function baseType(p: Prop): string {
  if (p.enum) return "enum";
  const t = Array.isArray(p.type) ? p.type.find((x) => x !== "null") : p.type;
  if (t) return t;
  const alt = p.anyOf?.find((a) => a.type && a.type !== "null");
  return alt ? baseType(alt) : "json";
}

function initialText(p: Prop): string {
  if (p.default === undefined || p.default === null) return "";
  const t = baseType(p);
  if (t === "array" || t === "object" || t === "json") return JSON.stringify(p.default);
  return String(p.default);
}

export type FieldErrors = Record<string, string>;

/** The values to send, or the field errors that stop it. */
export function parseValues(schema: ParamSchema, text: Record<string, string>, checks: Record<string, boolean>) {
  const values: Record<string, unknown> = {};
  const errors: FieldErrors = {};
  const required = new Set(schema.required ?? []);
  for (const [name, p] of Object.entries(schema.properties ?? {})) {
    const t = baseType(p);
    if (t === "boolean") {
      values[name] = checks[name] ?? Boolean(p.default);
      continue;
    }
    const raw = (text[name] ?? "").trim();
    if (raw === "") {
      if (required.has(name)) errors[name] = "required";
      continue; // the server applies the default
    }
    if (t === "integer") {
      if (!/^-?\d+$/.test(raw)) errors[name] = "must be a whole number";
      else values[name] = Number(raw);
    } else if (t === "number") {
      const n = Number(raw);
      if (Number.isNaN(n)) errors[name] = "must be a number";
      else values[name] = n;
    } else if (t === "array" || t === "object" || t === "json") {
      try {
        values[name] = JSON.parse(raw);
      } catch {
        errors[name] = t === "array" ? "must be a JSON list, e.g. [1, 2]" : "must be JSON";
      }
    } else if (t === "enum") {
      const match = (p.enum ?? []).find((v) => String(v) === raw);
      values[name] = match ?? raw;
    } else {
      values[name] = raw;
    }
    if (typeof values[name] === "number") {
      const v = values[name] as number;
      if (p.minimum !== undefined && v < p.minimum) errors[name] = `must be ≥ ${p.minimum}`;
      if (p.maximum !== undefined && v > p.maximum) errors[name] = `must be ≤ ${p.maximum}`;
    }
  }
  return { values, errors };
}

export function ParamForm({
  schema,
  serverErrors,
  busy,
  onSubmit,
}: {
  schema: ParamSchema;
  serverErrors: FieldErrors;
  busy: boolean;
  onSubmit: (values: Record<string, unknown>, extra: { logicalDate: string; tags: string[] }) => void;
}) {
  const props = useMemo(() => Object.entries(schema.properties ?? {}), [schema]);
  const required = new Set(schema.required ?? []);
  const [text, setText] = useState<Record<string, string>>(() =>
    Object.fromEntries(props.map(([n, p]) => [n, initialText(p)])),
  );
  const [checks, setChecks] = useState<Record<string, boolean>>(() =>
    Object.fromEntries(props.filter(([, p]) => baseType(p) === "boolean").map(([n, p]) => [n, Boolean(p.default)])),
  );
  const [logicalDate, setLogicalDate] = useState("");
  const [tags, setTags] = useState("");
  const [errors, setErrors] = useState<FieldErrors>({});
  const shown = { ...errors, ...serverErrors };

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    const { values, errors: found } = parseValues(schema, text, checks);
    setErrors(found);
    if (Object.keys(found).length) return;
    onSubmit(values, { logicalDate, tags: tags.split(",").map((t) => t.trim()).filter(Boolean) });
  };

  return (
    <form onSubmit={submit} noValidate data-testid="trigger-form">
      {props.length === 0 && <p className="muted">This pipeline takes no parameters.</p>}
      {props.map(([name, p]) => {
        const t = baseType(p);
        const id = `param-${name}`;
        return (
          <div className="form-row" key={name}>
            <label htmlFor={id}>
              {name}
              {required.has(name) && <span title="required"> *</span>}
            </label>
            <div>
              {t === "boolean" ? (
                <input
                  id={id}
                  type="checkbox"
                  checked={checks[name] ?? false}
                  onChange={(e) => setChecks({ ...checks, [name]: e.target.checked })}
                />
              ) : t === "enum" ? (
                <select id={id} value={text[name]} onChange={(e) => setText({ ...text, [name]: e.target.value })}>
                  {!required.has(name) && <option value="">(default)</option>}
                  {(p.enum ?? []).map((v) => (
                    <option key={String(v)} value={String(v)}>{String(v)}</option>
                  ))}
                </select>
              ) : t === "array" || t === "object" || t === "json" ? (
                <textarea id={id} rows={2} value={text[name]} onChange={(e) => setText({ ...text, [name]: e.target.value })} />
              ) : (
                <input
                  id={id}
                  type={t === "integer" || t === "number" ? "number" : "text"}
                  step={t === "integer" ? 1 : "any"}
                  value={text[name]}
                  placeholder={required.has(name) ? "required" : ""}
                  aria-invalid={Boolean(shown[name])}
                  onChange={(e) => setText({ ...text, [name]: e.target.value })}
                />
              )}
              <div className="desc">
                {t === "json" ? "JSON" : t === "array" ? "list, as JSON" : t === "object" ? "object, as JSON" : t}
                {p.default !== undefined && p.default !== null ? ` · default ${JSON.stringify(p.default)}` : ""}
                {p.description ? ` · ${p.description}` : ""}
              </div>
              {shown[name] && <div className="field-error" data-field-error={name}>{shown[name]}</div>}
            </div>
          </div>
        );
      })}
      <div className="form-row">
        <label htmlFor="logical-date">logical date</label>
        <div>
          <input id="logical-date" type="text" placeholder="optional, e.g. 2026-01-31T00:00:00Z" value={logicalDate} onChange={(e) => setLogicalDate(e.target.value)} />
          {shown["logical_date"] && <div className="field-error" data-field-error="logical_date">{shown["logical_date"]}</div>}
        </div>
      </div>
      <div className="form-row">
        <label htmlFor="run-tags">tags</label>
        <div>
          <input id="run-tags" type="text" placeholder="optional, comma separated" value={tags} onChange={(e) => setTags(e.target.value)} />
        </div>
      </div>
      <button className="primary" type="submit" disabled={busy}>
        {busy ? "Triggering…" : "Trigger run"}
      </button>
    </form>
  );
}
