import { ApiError } from "../api/client";

export function ErrorBox({ error }: { error: Error | undefined | null }) {
  if (!error) return null;
  const hint = error instanceof ApiError ? error.hint : null;
  const status = error instanceof ApiError ? error.status : null;
  return (
    <div className="error-box" role="alert">
      <strong>{status ? `${status}: ` : ""}</strong>
      {error.message}
      {hint && <div className="hint">{hint}</div>}
    </div>
  );
}
