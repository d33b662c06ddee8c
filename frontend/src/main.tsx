import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { createBrowserRouter, RouterProvider } from "react-router";
import { Layout, NotFoundPage } from "./App";
import { AssetPage, AssetsPage, PoolsPage, SlaMissesPage } from "./pages/AssetsPages";
import { LoginPage } from "./pages/LoginPage";
import { PipelinePage } from "./pages/PipelinePage";
import { PipelinesPage } from "./pages/PipelinesPage";
import { RunPage } from "./pages/RunPage";
import { RunsPage } from "./pages/RunsPage";
import { TaskInstancePage } from "./pages/TaskInstancePage";
import "./styles.css";
import { applyTheme, initialTheme } from "./theme";

applyTheme(initialTheme());

// Every view has a URL (STYLE §11): the server answers any non-API path with index.html.
const router = createBrowserRouter([
  {
    path: "/",
    element: <Layout />,
    children: [
      { index: true, element: <PipelinesPage /> },
      { path: "login", element: <LoginPage /> },
      { path: "assets", element: <AssetsPage /> },
      { path: "assets/*", element: <AssetPage /> },
      { path: "pools", element: <PoolsPage /> },
      { path: "sla-misses", element: <SlaMissesPage /> },
      { path: "pipelines/:name", element: <PipelinePage tab="graph" /> },
      { path: "pipelines/:name/grid", element: <PipelinePage tab="grid" /> },
      { path: "pipelines/:name/runs", element: <PipelinePage tab="runs" /> },
      { path: "pipelines/:name/trigger", element: <PipelinePage tab="trigger" /> },
      { path: "runs", element: <RunsPage /> },
      { path: "runs/:runId", element: <RunPage tab="graph" /> },
      { path: "runs/:runId/gantt", element: <RunPage tab="gantt" /> },
      { path: "runs/:runId/tasks", element: <RunPage tab="tasks" /> },
      { path: "runs/:runId/tasks/:taskId", element: <TaskInstancePage /> },
      { path: "*", element: <NotFoundPage /> },
    ],
  },
]);

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <RouterProvider router={router} />
  </StrictMode>,
);
