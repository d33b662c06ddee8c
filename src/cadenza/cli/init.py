"""`cadenza init [DIR]`: a new project with cadenza.toml and an example pipeline.

What belongs here: the project template (kept as strings, so it ships inside the wheel
without package-data rules) and the next-steps text. Existing files are never overwritten
without `--force`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cadenza.cli.console import escape, out

CONFIG_TEMPLATE = '''\
# Cadenza project settings. Paths are relative to this file.
# Environment variables (CADENZA_HOME, CADENZA_DATABASE_URL, ...) override these keys.

# Folders (or files) holding pipelines: `cadenza pipelines list` searches them, and
# `cadenza run NAME` finds a pipeline by name in them.
pipelines = ["pipelines/"]

# How tasks run unless `--executor` says otherwise: inline | threads | processes
executor = "processes"

# Runs, artifacts and task logs live in .cadenza/ next to this file. To change that:
# home = ".cadenza"
# A shared PostgreSQL metadata store instead of SQLite:
# database_url = "postgresql+psycopg://user:password@localhost:5432/cadenza"
# Task outputs in object storage instead of .cadenza/artifacts:
# artifact_root = "s3://my-bucket/cadenza"
'''

EXAMPLE_TEMPLATE = '''\
"""An example pipeline: make the numbers 1..n, square each in parallel, add them up.

    cadenza run pipelines/example.py --param n=5
"""

from cadenza import get_context, pipeline, task


@task
def numbers(n: int) -> list[int]:
    """The numbers 1..n."""
    return list(range(1, n + 1))


@task(retries=2, retry_delay=1.0)
def square(x: int) -> int:
    """One mapped instance per number; print() output is kept in the task's log."""
    print(f"squaring {x}")
    return x * x


@task
def total(squares: list[int]) -> int:
    """Fan-in: the squares arrive as a list, in map order."""
    result = sum(squares)
    get_context().log_metric("total", result)
    print(f"the sum of {len(squares)} squares is {result}")
    return result


@pipeline(tags=["example"])
def example(n: int = 4):
    total(square.expand(x=numbers(n)))
'''

GITIGNORE_LINE = ".cadenza/"


def init_command(
    directory: Annotated[Path, typer.Argument(
        metavar="[DIR]", help="Project folder (created if missing; default: here).")] = Path("."),
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite cadenza.toml and pipelines/example.py if they exist.")] = False,
) -> None:
    """Create a project: cadenza.toml, pipelines/example.py, and what to type next."""
    from cadenza.core.errors import UsageError

    root = directory
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder",
                         hint="pick another folder: cadenza init my-project")
    config = root / "cadenza.toml"
    example = root / "pipelines" / "example.py"
    existing = [p for p in (config, example) if p.exists()]
    if existing and not force:
        raise UsageError(
            f"{' and '.join(str(p) for p in existing)} already exist"
            if len(existing) > 1 else f"{existing[0]} already exists",
            hint="keep your files, or overwrite them: cadenza init "
            f"{'' if str(directory) == '.' else str(directory) + ' '}--force",
        )
    try:
        example.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        example.write_text(EXAMPLE_TEMPLATE, encoding="utf-8")
        gitignore = root / ".gitignore"
        lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.exists() else []
        if GITIGNORE_LINE not in lines and ".cadenza" not in lines:
            with gitignore.open("a", encoding="utf-8") as fh:
                if lines and lines[-1] != "":
                    fh.write("\n")
                fh.write(GITIGNORE_LINE + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the project in {root}: {exc}",
                         hint="pick a folder you can write to") from exc
    console = out()
    where = "this folder" if str(directory) == "." else str(directory)
    console.print(f"Created a Cadenza project in [bold]{escape(where)}[/]:")
    console.print("  cadenza.toml            settings: where pipelines are, the executor, the store")
    console.print("  pipelines/example.py    an example pipeline (fan-out, fan-in, retries)")
    console.print("Next steps:")
    if str(directory) != ".":
        console.print(f"  [cyan]cd {escape(str(directory))}[/]")
    console.print("  [cyan]cadenza pipelines list[/]                            what the project defines")
    console.print("  [cyan]cadenza run pipelines/example.py --param n=5[/]      run it, with live progress")
    console.print("  [cyan]cadenza runs list[/]                                 past runs; then "
                  "`cadenza runs show RUN_ID`")
