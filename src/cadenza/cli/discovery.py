"""Finding pipelines: a `FILE[:PIPELINE]` argument, or the project's `cadenza.toml`.

What belongs here: turning what the user typed into a pipeline's `Plan` (one failing file
never stops the others from loading), and the project's list of pipeline files. What does
not: running anything, or the store.

Importing a file (once per process, under a module name its workers can import again) is
`engine/loading.py`'s, the one loader that the CLI, the scheduler and resume share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadenza.core.errors import (
    CadenzaError,
    ConfigError,
    PipelineNotFound,
    UsageError,
    UserCodeError,
)
from cadenza.core.suggest import did_you_mean
from cadenza.engine.loading import (
    LoadedFile,
    load_file,
    pipeline_files,
    project_paths,
)
from cadenza.graph.plan import Plan

if TYPE_CHECKING:
    from cadenza.core.settings import Settings

def display_path(path: Path) -> str:
    """`path` relative to the current folder when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def split_target(target: str) -> tuple[str, str | None]:
    """"path/x.py:train" -> ("path/x.py", "train"); "path/x.py" -> ("path/x.py", None)."""
    if ":" in target:
        head, _, tail = target.rpartition(":")
        if head and tail and "/" not in tail and os.sep not in tail:
            return head, tail
    return target, None


def require_project(settings: Settings) -> list[Path]:
    """The project's pipeline files; a clear error when there is no project to search."""
    if settings.config_file is None:
        raise ConfigError(
            f"no cadenza.toml in {Path.cwd()} or its parents",
            hint="create a project with `cadenza init`, or name a file: "
            "cadenza run path/to/file.py[:PIPELINE]",
        )
    paths = project_paths(settings)
    missing = [p for p in paths if not p.exists()]
    if missing and len(missing) == len(paths):
        raise ConfigError(
            f"{settings.config_file} lists pipelines in {', '.join(display_path(m) for m in missing)}, "
            "which does not exist",
            hint='create that folder, or set pipelines = ["path/to/pipelines/"] in cadenza.toml',
        )
    return pipeline_files(paths)


def load_project(settings: Settings, paths: list[Path] | None = None) -> list[LoadedFile]:
    """Import every pipeline file of the project (or of `paths`); broken files included."""
    files = pipeline_files(paths) if paths else require_project(settings)
    return [load_file(f) for f in files]


def load_file_or_raise(path: Path, target: str) -> Any:
    """`load_file(path)`, raising the file's error (naming `target` and the fix) if any."""
    loaded = load_file(path)
    if loaded.error is not None:
        error = _file_error(loaded, target)
        if error is loaded.exception:
            raise error
        raise error from loaded.exception
    return loaded


def _file_error(loaded: LoadedFile, target: str) -> CadenzaError:
    from cadenza.core.errors import DefinitionError

    if isinstance(loaded.exception, DefinitionError):
        return loaded.exception
    if isinstance(loaded.exception, CadenzaError):
        return loaded.exception
    return UserCodeError(
        f"cannot import {display_path(loaded.path)}: {loaded.error}",
        hint=f"fix the file and try again; `cadenza --debug ...` shows the traceback "
        f"(python {display_path(loaded.path)} reproduces it)",
    )


def user_path(text: str | Path) -> Path:
    """A path the user typed, refused (UsageError) when no file could have it: empty, with
    a NUL character, or a name the OS rejects (too long)."""
    shown = str(text)
    if not shown.strip() or "\x00" in shown:
        raise UsageError(f"{shown!r} is not a file name",
                         hint="name a pipeline file: path/to/file.py[:PIPELINE], or a "
                         "pipeline of the project (`cadenza pipelines list`)")
    path = Path(text)
    try:
        path.exists()
    except OSError as exc:  # ENAMETOOLONG, ELOOP, ...
        short = shown if len(shown) <= 60 else shown[:57] + "..."
        raise UsageError(f"{short} is not a usable path: {exc.strerror or exc}",
                         hint="check the path") from None
    return path


def resolve_pipeline(target: str, settings: Settings) -> Plan:
    """The pipeline named by `FILE[:PIPELINE]`, or by a bare pipeline name in the project."""
    file_part, name = split_target(target)
    path = user_path(file_part)
    looks_like_file = file_part.endswith(".py") or os.sep in file_part or path.exists()
    if looks_like_file:
        if not path.is_file():
            hint = "check the path"
            if path.with_suffix(".py").is_file() and not file_part.endswith(".py"):
                hint = f"did you mean {file_part}.py?"
            elif settings.config_file is not None:
                hint = "check the path, or list the project's pipelines with `cadenza pipelines list`"
            raise PipelineNotFound(f"no such file: {file_part}", hint=hint)
        return _pick(load_file_or_raise(path, target), name, file_part)
    # A bare name: a pipeline of the project.
    wanted = name or file_part
    if name is not None:
        raise PipelineNotFound(f"no such file: {file_part}", hint="check the path")
    if settings.config_file is None:
        raise PipelineNotFound(
            f"'{wanted}' is not a file, and there is no cadenza.toml to look up a pipeline "
            "of that name",
            hint="name a file: cadenza run path/to/file.py[:PIPELINE], or create a project "
            "with `cadenza init`",
        )
    files = load_project(settings)
    matches = [(f, f.pipelines[wanted]) for f in files if wanted in f.pipelines]
    if len(matches) == 1:
        return matches[0][1]
    if len(matches) > 1:
        where = ", ".join(display_path(f.path) for f, _ in matches)
        raise UsageError(
            f"pipeline '{wanted}' is defined in several files: {where}",
            hint=f"name the file: cadenza run {display_path(matches[0][0].path)}:{wanted}",
        )
    known = sorted({n for f in files for n in f.pipelines})
    broken = [f for f in files if f.error]
    extra = ""
    if broken:
        extra = (f" ({len(broken)} file(s) failed to import; `cadenza pipelines list` shows "
                 "why)")
    raise PipelineNotFound(
        f"no pipeline named '{wanted}' in the project{extra}." + did_you_mean(wanted, known),
        hint=f"pipelines: {', '.join(known) or '(none)'}; or name a file: "
        "cadenza run path/to/file.py[:PIPELINE]",
    )


def _pick(loaded: LoadedFile, name: str | None, file_part: str) -> Plan:
    # A file that only imports pipelines (a "main" script) can run them too.
    pipes = loaded.pipelines or loaded.imported
    if name is not None and name not in pipes and name in loaded.imported:
        return loaded.imported[name]
    if not pipes:
        raise PipelineNotFound(
            f"{file_part} defines no pipeline",
            hint="decorate a function with @pipeline in that file (from cadenza import pipeline)",
        )
    if name is None:
        if len(pipes) == 1:
            return next(iter(pipes.values()))
        names = sorted(pipes)
        raise UsageError(
            f"{file_part} defines {len(pipes)} pipelines: {', '.join(names)}",
            hint=f"pick one: {file_part}:{names[0]}",
        )
    if name in pipes:
        return pipes[name]
    raise PipelineNotFound(
        f"{file_part} has no pipeline named '{name}'." + did_you_mean(name, sorted(pipes)),
        hint=f"pipelines in that file: {', '.join(sorted(pipes))}",
    )


def schedule_text(pipe: Plan) -> str | None:
    """How a pipeline's schedule reads in a table: cron/preset text, "every 1:00:00", None."""
    schedule = pipe.schedule
    if schedule is None:
        return None
    from datetime import timedelta

    if isinstance(schedule, timedelta):
        return f"every {schedule}"
    return str(schedule)


__all__ = ["LoadedFile", "display_path", "load_file", "load_project", "resolve_pipeline",
           "schedule_text", "split_target"]
