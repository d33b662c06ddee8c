"""The project's pipelines as the API serves them: Plans by name, and the files that broke.

Pipelines come from `cadenza.toml`'s `pipelines` (or the paths the server is given) through
the one loader, `engine/loading.py`: a file is imported once per process; a broken file is
kept with its error and the others still load. Nothing here runs anything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from cadenza.core.errors import PipelineNotFound
from cadenza.core.settings import Settings
from cadenza.core.suggest import did_you_mean
from cadenza.engine.loading import load_file, pipeline_files, project_paths
from cadenza.graph.plan import Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokenFile:
    file: str
    error: str
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """Plans by name (sorted), where each is defined, and the files that failed to import."""

    plans: dict[str, Plan] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    broken: tuple[BrokenFile, ...] = ()

    def get(self, name: str) -> Plan:
        """The pipeline named `name`; PipelineNotFound naming the known ones otherwise."""
        plan = self.plans.get(name)
        if plan is not None:
            return plan
        extra = ""
        if self.broken:
            extra = (f" ({len(self.broken)} file(s) failed to import; GET /api/v1/pipelines "
                     "lists why)")
        raise PipelineNotFound(
            f"no pipeline named '{name}' in the project{extra}."
            + did_you_mean(name, sorted(self.plans)),
            pipeline=name,
            hint=f"pipelines: {', '.join(sorted(self.plans)) or '(none)'}",
        )


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def load_catalog(settings: Settings, paths: list[Path] | None = None) -> Catalog:
    """Import the project's pipeline files (or `paths`). Without a cadenza.toml and
    without `paths` there is no project: the catalog is empty."""
    if paths is None:
        if settings.config_file is None:
            return Catalog()
        paths = project_paths(settings)
    plans: dict[str, Plan] = {}
    files: dict[str, str] = {}
    broken: list[BrokenFile] = []
    for path in pipeline_files(paths):
        loaded = load_file(path)
        shown = _shown(loaded.path, settings.project_root)
        if loaded.error is not None:
            broken.append(BrokenFile(file=shown, error=loaded.error, detail=loaded.detail))
            continue
        for name, plan in loaded.pipelines.items():
            if name in plans:
                broken.append(BrokenFile(
                    file=shown, error=f"pipeline '{name}' is also defined in {files[name]}; "
                    "the first one is served"))
                continue
            plans[name] = plan
            files[name] = shown
    return Catalog(plans=dict(sorted(plans.items())), files=files, broken=tuple(broken))


class CatalogHolder:
    """The catalog, loaded on first use (not at import or app creation: importing user code
    can be slow, and /healthz must answer before it is done)."""

    def __init__(self, settings: Settings, paths: list[Path] | None = None) -> None:
        self._settings = settings
        self._paths = paths
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None

    @property
    def loaded(self) -> Catalog | None:
        """The catalog if it has been loaded (never blocks)."""
        return self._catalog

    def get(self) -> Catalog:
        with self._lock:
            if self._catalog is None:
                self._catalog = load_catalog(self._settings, self._paths)
            return self._catalog
