import { useEffect, useState } from "react";
import { NavLink, Outlet } from "react-router";
import { applyTheme, initialTheme, type Theme } from "./theme";

export function Layout() {
  const [theme, setTheme] = useState<Theme>(initialTheme);
  useEffect(() => applyTheme(theme), [theme]);
  return (
    <div className="app">
      <header className="topbar">
        <NavLink to="/" className="brand">Cadenza</NavLink>
        <nav>
          <NavLink to="/" end>Pipelines</NavLink>
          <NavLink to="/runs">Runs</NavLink>
        </nav>
        <span className="spacer" />
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
