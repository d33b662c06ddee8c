// Sign in with an API token (the server stores only its hash; `cadenza tokens create
// --user NAME` prints it once). The token is checked with GET /me before it is kept.
import { useState } from "react";
import { useNavigate, useSearchParams } from "react-router";
import { api, ApiError, getToken, setToken } from "../api/client";
import { useAuth, type Me } from "../auth";

export function LoginPage() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const { refresh } = useAuth();
  const [token, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const previous = getToken();
    setToken(token.trim());
    try {
      await api<Me>("/me");
      refresh();
      const next = params.get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("/login") ? next : "/", { replace: true });
    } catch (err) {
      setToken(previous);
      setError(err instanceof ApiError && err.status === 401 ? "This token is not valid (unknown, expired or revoked)." : (err as Error).message);
      setBusy(false);
    }
  };

  return (
    <div className="page login">
      <div className="panel">
        <h1>Sign in</h1>
        <p className="muted">
          This server has users: paste an API token. An admin creates one with{" "}
          <code>cadenza tokens create --user NAME</code>.
        </p>
        <form onSubmit={submit}>
          <label htmlFor="token" className="strong">API token</label>
          <input id="token" type="password" autoComplete="off" value={token} onChange={(e) => setValue(e.target.value)} style={{ width: "100%", margin: "6px 0 12px" }} />
          {error && <div className="error-box" role="alert">{error}</div>}
          <button className="primary" type="submit" disabled={busy || !token.trim()}>Sign in</button>
        </form>
      </div>
    </div>
  );
}
