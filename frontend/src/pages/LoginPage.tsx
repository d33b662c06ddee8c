// Sign in with a user name and password (POST /auth/login hands back an expiring token) or
// with an API token (`cadenza tokens create --user NAME` prints one). Either way the token
// is checked with GET /me before it is kept, then sent as a bearer token.
import { useState } from "react";
import { useNavigate, useSearchParams } from "react-router";
import { api, ApiError, getToken, setToken } from "../api/client";
import type { components } from "../api/schema";
import { useAuth, type Me } from "../auth";

type TokenCreated = components["schemas"]["TokenCreatedOut"];

export function LoginPage() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const { refresh } = useAuth();
  const [mode, setMode] = useState<"password" | "token">("password");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [token, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const previous = getToken();
    try {
      let value = token.trim();
      if (mode === "password") {
        setToken(null);
        const made = await api<TokenCreated>("/auth/login", { method: "POST", json: { name, password } });
        value = made.token;
      }
      setToken(value);
      await api<Me>("/me");
      refresh();
      const next = params.get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("/login") ? next : "/", { replace: true });
    } catch (err) {
      setToken(previous);
      const unauthorized = err instanceof ApiError && err.status === 401;
      setError(
        unauthorized
          ? mode === "password"
            ? "Wrong user name or password (or the user is disabled)."
            : "This token is not valid (unknown, expired or revoked)."
          : (err as Error).message,
      );
      setBusy(false);
    }
  };

  return (
    <div className="page login">
      <div className="panel">
        <h1>Sign in</h1>
        <nav className="tabs">
          <a href="#password" className={mode === "password" ? "active" : ""} onClick={(e) => { e.preventDefault(); setMode("password"); setError(null); }}>Password</a>
          <a href="#token" className={mode === "token" ? "active" : ""} onClick={(e) => { e.preventDefault(); setMode("token"); setError(null); }}>API token</a>
        </nav>
        <form onSubmit={submit}>
          {mode === "password" ? (
            <>
              <label htmlFor="user" className="strong">User</label>
              <input id="user" type="text" autoComplete="username" value={name} onChange={(e) => setName(e.target.value)} className="wide" />
              <label htmlFor="password" className="strong">Password</label>
              <input id="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} className="wide" />
            </>
          ) : (
            <>
              <p className="muted small">
                An admin creates one with <code>cadenza tokens create --user NAME</code>.
              </p>
              <label htmlFor="token" className="strong">API token</label>
              <input id="token" type="password" autoComplete="off" value={token} onChange={(e) => setValue(e.target.value)} className="wide" />
            </>
          )}
          {error && <div className="error-box" role="alert">{error}</div>}
          <button className="primary" type="submit" disabled={busy || (mode === "token" ? !token.trim() : !name || !password)}>
            Sign in
          </button>
        </form>
      </div>
    </div>
  );
}
