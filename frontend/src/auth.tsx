// Who the user is (GET /me) and what they may do. When the server has users, every API call
// needs a token: the login page takes one (`cadenza tokens create --user NAME`), keeps it in
// localStorage and sends it as a bearer token; any 401 brings the login page back. Viewers
// see no action buttons (the API would refuse them with 403 anyway).
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { useLocation, useNavigate } from "react-router";
import { api, ApiError, setToken } from "./api/client";
import type { components } from "./api/schema";

export type Me = components["schemas"]["MeOut"];
type Auth = { me: Me | null; refresh: () => void; signOut: () => void };

const AuthContext = createContext<Auth>({ me: null, refresh: () => undefined, signOut: () => undefined });
export const UNAUTHORIZED = "cadenza:unauthorized";

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const navigate = useNavigate();
  const location = useLocation();
  const toLogin = useCallback(() => {
    if (location.pathname === "/login") return;
    const next = location.pathname + location.search;
    navigate(`/login?next=${encodeURIComponent(next)}`, { replace: true });
  }, [location.pathname, location.search, navigate]);

  const refresh = useCallback(() => {
    api<Me>("/me").then(setMe, (e) => {
      setMe(null);
      if (e instanceof ApiError && e.status === 401) toLogin();
    });
  }, [toLogin]);

  useEffect(refresh, []); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    const on = () => {
      setMe(null);
      toLogin();
    };
    window.addEventListener(UNAUTHORIZED, on);
    return () => window.removeEventListener(UNAUTHORIZED, on);
  }, [toLogin]);

  const signOut = useCallback(() => {
    setToken(null);
    setMe(null);
    navigate("/login");
  }, [navigate]);

  return <AuthContext.Provider value={{ me, refresh, signOut }}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  return useContext(AuthContext);
}

/** True when the user may trigger, cancel, retry and pause (operator or admin). */
export function useCanOperate(): boolean {
  const { me } = useAuth();
  return me !== null && (me.role === "operator" || me.role === "admin");
}
