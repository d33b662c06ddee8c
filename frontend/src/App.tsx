import { useEffect, useState } from "react";
import { NavLink, Outlet } from "react-router";
import { AuthProvider, useAuth } from "./auth";
import { applyTheme, initialTheme, type Theme } from "./theme";

export function Layout() {
  return (
    <AuthProvider>
      <Shell />
    </AuthProvider>
  );
}

function UserMenu() {
  const { me, signOut } = useAuth();
  if (!me || me.anonymous) return null;
  return (
    <span className="user" data-testid="user">
      {me.name} <span className="muted">({me.role})</span>{" "}
      <button className="ghost" onClick={signOut}>Sign out</button>
    </span>
  );
}

function Shell() {
  const [theme, setTheme] = useState<Theme>(initialTheme);
  useEffect(() => applyTheme(theme), [theme]);
  return (
    <div className="app">
      <header className="topbar">
        <NavLink to="/" className="brand">Cadenza</NavLink>
        <nav>
          <NavLink to="/" end>Pipelines</NavLink>
          <NavLink to="/runs">Runs</NavLink>
          <NavLink to="/assets">Assets</NavLink>
          <NavLink to="/pools">Pools</NavLink>
          <NavLink to="/sla-misses">SLA misses</NavLink>
        </nav>
        <span className="spacer" />
        <UserMenu />
        <button
          className="ghost"
          aria-label="Toggle theme"
          title={`Switch to the ${theme === "dark" ? "light" : "dark"} theme`}
          onClick={() => setTheme(theme === "dark" ? "light" : "dark")}
        >
          {theme === "dark" ? "☀ Light" : "☾ Dark"}
        </button>
      </header>
      <main>
        <Outlet />
      </main>
    </div>
  );
}

export function NotFoundPage() {
  return (
    <div className="page">
      <h1>Not found</h1>
      <p className="muted">No page at this address.</p>
    </div>
  );
}
