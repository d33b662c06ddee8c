"""The one pipeline loader: import a pipeline file or module and return its Plans.

What belongs here: importing user files and modules to find their pipelines, once per
process, for every caller (the CLI's targets and project, the scheduler's module targets,
resume and `RunResult.resume()` reloading a run's `source`). What does not: what the user
typed (cli/discovery.py), or running anything.

A file is imported under a module name its worker processes can import again: the file's
dotted name from the top of its package (`pipelines/x.py` in a folder without `__init__.py`
is module `x`, with that folder put on `sys.path`, as `python pipelines/x.py` would). When
that name is taken by another module, the file gets a private name and its functions are
pickled by value instead. The import is marked (`core.importing`), so that a file calling
`p.run()` at its top level is refused instead of running as a side effect of being read.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cadenza.core.errors import PipelineNotFound
from cadenza.core.importing import importing_file
from cadenza.graph.plan import Plan, find_plan

if TYPE_CHECKING:
    from cadenza.core.settings import Settings


@dataclass(slots=True)
class LoadedFile:
    """One imported pipeline file: its pipelines by name, or why it could not be imported."""

    path: Path
    pipelines: dict[str, Plan] = field(default_factory=dict)
    imported: dict[str, Plan] = field(default_factory=dict)  # from elsewhere
    error: str | None = None  # one line: "NameError: name 'x' is not defined (line 3)"
    detail: str | None = None  # the full text (a DefinitionError's problem list)
    exception: BaseException | None = None
    plans: ModulePlans | None = None  # every pipeline the module holds (None: not imported)


_loaded: dict[Path, LoadedFile] = {}

# Where a project keeps its pipelines when cadenza.toml does not say (`pipelines = [...]`).
DEFAULT_PIPELINES_DIR = "pipelines/"


def project_paths(settings: Settings) -> list[Path]:
    """The files and folders cadenza.toml's `pipelines` lists (default: pipelines/)."""
    root = settings.project_root
    entries = list(settings.pipelines) or [DEFAULT_PIPELINES_DIR]
    return [(root / e).resolve() if not Path(e).is_absolute() else Path(e) for e in entries]


def pipeline_files(paths: list[Path]) -> list[Path]:
    """Every .py file under `paths` (folders searched recursively), sorted, without
    `_private.py`, `__init__.py`, hidden folders and `__pycache__`."""
    files: list[Path] = []
    for p in paths:
        if p.is_file():
            files.append(p.resolve())
            continue
        if not p.is_dir():
            continue
        for f in sorted(p.rglob("*.py")):
            rel = f.relative_to(p).parts
            if any(part.startswith((".", "_")) for part in rel[:-1]):
                continue
            if f.name.startswith("_"):
                continue
            files.append(f.resolve())
    seen: dict[Path, None] = dict.fromkeys(files)
    return list(seen)


def _module_name_for(path: Path) -> tuple[str, Path]:
    """(dotted module name, folder to put on sys.path) for a .py file."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), folder


def _is_free(name: str, root: Path, path: Path) -> bool:
    """True if `import name` (with `root` first on sys.path) gives this very file."""
    existing = sys.modules.get(name)
    if existing is not None:
        return Path(getattr(existing, "__file__", "") or "").resolve() == path
    top = name.partition(".")[0]
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return False
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if "." in name:
        expected = (root / top).resolve()
        return any(Path(loc).resolve() == expected for loc in spec.submodule_search_locations or [])
    return bool(spec.origin) and Path(spec.origin or "").resolve() == path


def _first_line(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return f"SyntaxError: {exc.msg}{where}"
    from cadenza.core.errors import DefinitionError

    if isinstance(exc, DefinitionError) and exc.is_listing:
        text = exc._render().splitlines()
        return f"DefinitionError: {text[0].rstrip(':')}: {text[1].strip() if len(text) > 1 else ''}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and Path(frame.filename).resolve() == path:
            line = frame.lineno
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    head = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return head + (f" (line {line})" if line else "")


def load_file(path: Path) -> LoadedFile:
    """Import a pipeline file once per process; errors are kept, never raised."""
    path = path.resolve()
    cached = _loaded.get(path)
    if cached is not None:
        return cached
    loaded = LoadedFile(path=path)
    _loaded[path] = loaded
    name, root = _module_name_for(path)
    by_value = False
    root_str = str(root)
    if root_str not in sys.path:
        sys.path.insert(0, root_str)
    if not _is_free(name, root, path):
        name = f"cadenza_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
        by_value = True
    try:
        module = sys.modules.get(name)
        if module is None:
            if "." in name and not by_value:
                with importing_file(path):
                    module = importlib.import_module(name)
            else:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    with importing_file(path):
                        spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)
                    raise
        if by_value:
            import cloudpickle  # type: ignore[import-untyped,unused-ignore]

            cloudpickle.register_pickle_by_value(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a broken user file is reported, not raised
        loaded.exception = exc
        loaded.error = _first_line(exc, path)
        from cadenza.core.errors import DefinitionError

        if isinstance(exc, DefinitionError) and exc.is_listing:
            loaded.detail = exc._render()
        else:
            loaded.detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return loaded
    loaded.plans = plans_of(module)
    for plan in loaded.plans.by_attribute.values():
        # Pipelines imported from another file are that file's: listed once, there.
        target = loaded.pipelines if plan.module == module.__name__ else loaded.imported
        target.setdefault(plan.name, plan)
    return loaded


@dataclass(frozen=True, slots=True)
class ModulePlans:
    """The pipelines a module holds: by the variable they are bound to, and by name."""

    by_attribute: dict[str, Plan]
    by_name: dict[str, Plan]

    def get(self, name: str) -> Plan | None:
        """The pipeline bound to `name`, else the one named `name`."""
        return self.by_attribute.get(name) or self.by_name.get(name)


def plans_of(module: object) -> ModulePlans:
    by_attribute: dict[str, Plan] = {}
    by_name: dict[str, Plan] = {}
    for attr, value in list(vars(module).items()):
        plan = find_plan(value)
        if plan is not None:
            by_attribute[attr] = plan
            by_name.setdefault(plan.name, plan)
    return ModulePlans(by_attribute=by_attribute, by_name=by_name)


def load_module(module_name: str) -> ModulePlans:
    """The pipelines an importable module defines or imports. Modules of the current
    folder are importable, as with `python -m`. Import errors are raised as is."""
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    return plans_of(importlib.import_module(module_name))


def load_source(source: str) -> Plan:
    """The Plan a run's `source` names ("path/to/file.py:name" or "module:name").

    Raises CadenzaError when the source names nothing loadable; a file that fails to
    import raises its own error."""
    target, _, name = source.rpartition(":")
    if not target:
        raise PipelineNotFound(f"cannot locate the pipeline of this run (source {source!r})",
                               hint="resume it from Python: pipeline_def.resume(run_id)")
    if target.endswith(".py") or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise PipelineNotFound(f"the pipeline file {target} no longer exists",
                                   pipeline=name, hint="restore the file, then resume again")
        loaded = load_file(path)
        if loaded.exception is not None:
            raise loaded.exception
        plan = loaded.plans.get(name) if loaded.plans is not None else None
    else:
        plan = load_module(target).get(name)
    if plan is None:
        raise PipelineNotFound(f"{target} has no pipeline named '{name}'", pipeline=name,
                               hint="was the pipeline renamed? resume needs its original name")
    return plan


__all__ = ["DEFAULT_PIPELINES_DIR", "LoadedFile", "ModulePlans", "load_file", "load_module", "load_source", "pipeline_files", "plans_of",
           "project_paths"]
