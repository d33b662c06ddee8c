"""The `cadenza` command: a typer app with one module per noun.

What belongs here: the app, its global options (`--debug`, `--version`), wiring the
commands of the noun modules, and the one place where errors become exit codes:

  0    success
  1    a run (or task test) failed; `pipelines list` found files that fail to import
  2    a usage, definition or configuration error: nothing was run. One readable line
       naming what was wrong, then the fix; `--debug` adds the traceback.
  130  interrupted (Ctrl-C)

Startup speed: only typer and the CLI's own light modules are imported here. Each command
imports the engine, the store (SQLAlchemy) or rich tables inside its function, so
`cadenza --help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from cadenza.cli import console as cli_console
from cadenza.cli import db, events, pipelines, pools, runs, secrets, tasks, tokens, users
from cadenza.cli.backfill import backfill_command
from cadenza.cli.compile import compile_command
from cadenza.cli.gc import gc_command, runs_delete_command
from cadenza.cli.init import init_command
from cadenza.cli.lineage import lineage_command
from cadenza.cli.logs import logs_command
from cadenza.cli.plan import plan_command
from cadenza.cli.run import resume_command, run_command
from cadenza.cli.scheduler import scheduler_command
from cadenza.cli.server import server_command
from cadenza.cli.task_run import runs_import_command, task_run_command

app = typer.Typer(
    name="cadenza",
    help="Cadenza: run ML pipelines reliably, from a laptop to a cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_text() -> str:
    import platform

    from cadenza import __version__

    return (f"cadenza {__version__} (Python {platform.python_version()}, "
            f"{platform.system().lower()}-{platform.machine()})")


def _print_version(value: bool) -> None:
    if value:
        cli_console.out().print(_version_text())
        raise typer.Exit(0)


class _ConsoleLogHandler(logging.Handler):
    """Library warnings on stderr, one dim line each (CLI output itself is not logging)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            # soft_wrap: a warning stays one line (the terminal wraps it, not rich).
            cli_console.err().print(f"[dim]{cli_console.escape(text)}[/]", soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("cadenza")
    if any(isinstance(h, _ConsoleLogHandler) for h in logger.handlers):
        return
    handler = _ConsoleLogHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False


@app.callback()
def root(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the traceback of errors (also CADENZA_DEBUG=1).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True,
        callback=_print_version)] = False,
) -> None:
    """Cadenza: run ML pipelines reliably, from a laptop to a cluster.

    Pipelines are found from cadenza.toml (`cadenza init` makes one) or a FILE argument.
    """
    if debug:
        cli_console.DEBUG["enabled"] = True
    _configure_logging(cli_console.DEBUG["enabled"])


app.command("init")(init_command)
app.command("run")(run_command)
app.command("resume")(resume_command)
app.command("logs")(logs_command)
app.command("plan")(plan_command)
app.command("lineage")(lineage_command)
app.command("backfill")(backfill_command)
app.command("scheduler")(scheduler_command)
app.command("server")(server_command)
app.command("gc")(gc_command)
app.command("compile")(compile_command)
app.command("task-run")(task_run_command)
app.add_typer(pipelines.app, name="pipelines")
runs.app.command("delete")(runs_delete_command)  # kept in cli/gc.py with `gc`
runs.app.command("import")(runs_import_command)  # kept in cli/task_run.py with `task-run`
app.add_typer(runs.app, name="runs")
app.add_typer(tasks.app, name="tasks")
app.add_typer(pools.app, name="pools")
app.add_typer(events.app, name="events")
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(secrets.app, name="secrets")


@app.command("version")
def version_command() -> None:
    """Print the version of Cadenza and Python."""
    cli_console.out().print(_version_text())


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _error_exit_code(exc: Exception) -> int:
    """2 for a usage error: what the command asked cannot be done as asked (an argument, a
    definition, a parameter, a setting, a name that does not exist, a state or another
    driver that refuses it, credentials): the API's 4xx. 1 for what failed while doing it:
    the metadata store or the artifact store did not answer (the API's 503), an environment
    could not be built, the run was taken over, a task or a Cadenza bug."""
    from cadenza.core.errors import (
        AuthError,
        ConfigError,
        DefinitionError,
        NotFound,
        ParameterError,
        RunConflict,
        RunTakenOver,
        StateConflict,
        UsageError,
        UserCodeError,
    )

    usage = (UsageError, DefinitionError, ParameterError, NotFound, ConfigError,
             StateConflict, RunConflict, UserCodeError, AuthError)
    return 2 if isinstance(exc, usage) and not isinstance(exc, RunTakenOver) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cadenza` executable; returns the exit code."""
    from cadenza.core.errors import CadenzaError

    try:
        app(args=argv, prog_name="cadenza", standalone_mode=True)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except CadenzaError as exc:
        if cli_console.DEBUG["enabled"]:
            _print_traceback(exc)
        cli_console.render_error(exc)
        return _error_exit_code(exc)
    except KeyboardInterrupt:
        cli_console.err().print("Interrupted.")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no raw traceback
        if cli_console.DEBUG["enabled"]:
            _print_traceback(exc)
        console = cli_console.err()
        console.print(f"[bold red]error:[/] {cli_console.escape(type(exc).__name__)}: "
                      f"{cli_console.escape(exc)}")
        console.print("  this is probably a bug in Cadenza; run again with "
                      "`cadenza --debug ...` for the traceback and report it")
        return 1
    return 0


def _print_traceback(exc: BaseException) -> None:
    import traceback

    cli_console._STDERR.write("".join(traceback.format_exception(type(exc), exc,
                                                                 exc.__traceback__)))
    cli_console._STDERR.flush()


if __name__ == "__main__":
    sys.exit(main())
