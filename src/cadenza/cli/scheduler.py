"""`cadenza scheduler [TARGETS...] [--once]`: the scheduler service of SPEC §4.

What belongs here: finding the pipelines to watch (the project's, or the TARGETS named),
printing what is watched, running `triggers.loop.Scheduler` until SIGINT/SIGTERM (or one
tick with `--once`) and summarising what a tick did. What does not: what a tick does
(`triggers/loop.py`), creating runs exactly once (`store/scheduling.py`), driving runs.

Stopping, by case:
  1. first SIGINT (Ctrl-C) or SIGTERM -> `Scheduler.shutdown()`: the loop returns, event
     consumers close, and the command exits 0 with one line. Runs being driven are left
     to their leases: a scheduler (this one restarted, or another) resumes them.
  2. a second signal while shutting down -> stop at once (exit 130).
  SIGHUP (what `cadenza server --scheduler` has the kernel send its child when the server
  dies) is case 1, never case 2: the kernel may send it more than once for one death.
  With runs still being driven, the process ends at once after its line (`os._exit`), as
  a killed one would: letting the interpreter shut down around the runs' daemon threads
  removed multiprocessing's folder (the forkserver's socket) under a driver still
  dispatching, a FileNotFoundError traceback per run (issue 18's scheduler campaign).
  3. `--once` -> one tick, then every run it could start is driven to its end; exit 1
     when one of them failed, else 0.
  4. SIGINT or SIGTERM during `--once` -> the scheduler stops and closes, one line says
     which runs are left `running` to their leases and how to finish them (`cadenza
     scheduler`, `cadenza resume RUN_ID`), exit 130.

Exit codes: 0 stopped cleanly (or `--once` and every run succeeded), 1 `--once` drove a
run that failed, 2 no pipelines found or a bad target (one line naming the fix; a pipeline
without a schedule is watched, not an error), 130 interrupted (`--once`, or the service
twice).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cadenza.cli.console import err, escape, note, out, print_json, styled_state
from cadenza.core.states import RunState
from cadenza.core.suggest import did_you_mean
from cadenza.graph.plan import Plan

if TYPE_CHECKING:
    from cadenza.core.records import RunRecord
    from cadenza.core.settings import Settings
    from cadenza.triggers.loop import Scheduler, TickReport, TriggerSpec

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

TARGET_HINT = ("name them: cadenza scheduler path/to/file.py[:PIPELINE] or module:pipeline, "
               "or list pipeline folders in cadenza.toml (pipelines = [\"pipelines/\"])")


# --- which pipelines -----------------------------------------------------------------------------


def _warn_broken(broken: list[Any]) -> None:
    from cadenza.cli.discovery import display_path

    console = err()
    console.print(f"[bold yellow]warning:[/] {len(broken)} file(s) failed to import; their "
                  "pipelines are not watched:")
    for f in broken:
        console.print(f"  [bold]{escape(display_path(f.path))}[/]: {escape(f.error or '')}")
    console.print("  fix: `python FILE` shows the full error; `cadenza pipelines list` "
                  "lists every broken file")


def _project_pipelines(settings: Settings) -> list[Plan]:
    from cadenza.cli.discovery import display_path, load_project
    from cadenza.core.errors import ConfigError, PipelineNotFound
    from cadenza.engine.loading import project_paths

    if settings.config_file is None:
        raise ConfigError(f"no pipelines to watch: no TARGETS given and no cadenza.toml in "
                          f"{Path.cwd()} or its parents",
                          hint="name them: cadenza scheduler path/to/file.py[:PIPELINE] or "
                          "module:pipeline, or create a project with `cadenza init`")
    files = load_project(settings)
    broken = [f for f in files if f.error is not None]
    pipes = [p for f in files for p in f.pipelines.values()]
    if not pipes:
        where = ", ".join(display_path(p) for p in project_paths(settings))
        extra = (f" ({len(broken)} file(s) failed to import; `cadenza pipelines list` shows "
                 "why)") if broken else ""
        raise PipelineNotFound(f"no pipelines found in {where}{extra}",
                               hint="define one with @pipeline in a file there, or " + TARGET_HINT)
    if broken:
        _warn_broken(broken)
    return pipes


def _from_folder(path: Path) -> list[Plan]:
    from cadenza.core.errors import PipelineNotFound
    from cadenza.engine.loading import load_file, pipeline_files

    files = [load_file(f) for f in pipeline_files([path])]
    pipes = [p for f in files for p in f.pipelines.values()]
    broken = [f for f in files if f.error is not None]
    if not pipes:
        extra = f" ({len(broken)} file(s) failed to import)" if broken else ""
        raise PipelineNotFound(f"no pipelines found in {path}{extra}",
                               hint="define one with @pipeline in a file there, or " + TARGET_HINT)
    if broken:
        _warn_broken(broken)
    return pipes


def _from_file(path: Path, target: str) -> list[Plan]:
    """Every pipeline a file defines (`file.py` without `:PIPELINE`)."""
    from cadenza.cli.discovery import load_file_or_raise
    from cadenza.core.errors import PipelineNotFound

    loaded = load_file_or_raise(path, target)
    pipes = loaded.pipelines or loaded.imported
    if not pipes:
        raise PipelineNotFound(f"{target} defines no pipeline",
                               hint="decorate a function with @pipeline in that file "
                               "(from cadenza import pipeline)")
    return list(pipes.values())


def _from_module(module_name: str, name: str, target: str) -> Plan:
    """The pipeline `name` of an importable module (`module:pipeline`)."""
    from cadenza.core.errors import CadenzaError, PipelineNotFound, UserCodeError
    from cadenza.engine.loading import load_module

    try:
        plans = load_module(module_name)
    except CadenzaError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise PipelineNotFound(
                f"target '{target}': no module named '{module_name}', and no file of that name",
                hint="name a file (path/to/file.py:PIPELINE), or run from the folder the module "
                "is importable from (or set PYTHONPATH)") from None
        raise UserCodeError(f"cannot import {module_name}: {exc}",
                            hint=f"install '{missing}' in this environment") from exc
    except Exception as exc:  # a broken user module is a usage error here
        raise UserCodeError(f"cannot import {module_name}: {type(exc).__name__}: {exc}",
                            hint="fix the module; `cadenza --debug scheduler ...` shows the "
                            "traceback") from exc
    value = plans.get(name)
    if value is not None:
        return value
    found = plans.by_name
    raise PipelineNotFound(
        f"module {module_name} has no pipeline named '{name}'." + did_you_mean(name, sorted(found)),
        hint=f"pipelines in that module: {', '.join(sorted(found)) or '(none)'}")


def _load_target(target: str, settings: Settings) -> list[Plan]:
    from cadenza.cli.discovery import resolve_pipeline, split_target

    file_part, name = split_target(target)
    path = Path(file_part)
    if file_part.endswith(".py") or os.sep in file_part or path.exists():
        if name is None and path.is_dir():
            return _from_folder(path)
        if name is None and path.is_file():
            return _from_file(path, target)
        return [resolve_pipeline(target, settings)]  # file.py:name, or a clear "no such file"
    if name is not None:
        return [_from_module(file_part, name, target)]
    return [resolve_pipeline(target, settings)]  # a pipeline name of the project


def find_pipelines(targets: list[str], settings: Settings) -> list[Plan]:
    """The pipelines to watch: those TARGETS name, else every pipeline of the project."""
    if not targets:
        return _project_pipelines(settings)
    pipes: dict[int, Plan] = {}
    for target in targets:
        for pipe in _load_target(target, settings):
            pipes.setdefault(id(pipe), pipe)
    return list(pipes.values())


# --- what is watched ------------------------------------------------------------------------


def _triggers_text(spec: TriggerSpec) -> str:
    parts = []
    if spec.assets:
        parts.append(("any of " if spec.any_of else "assets ") + ", ".join(spec.assets))
    parts.extend(f"sensor {s.name}" for s in spec.sensors)
    parts.extend(f"events {e.source}" for e in spec.events)
    return "; ".join(parts)


def _timezone_of(scheduler: Scheduler, name: str) -> str:
    plan = scheduler.pipelines.get(name)
    return plan.timezone if plan is not None else "UTC"


def _schedule_text(pipe: Plan) -> str:
    from cadenza.cli.discovery import schedule_text

    text = schedule_text(pipe)
    if text is None:
        return ""
    tz = pipe.timezone
    return text if tz == "UTC" else f"{text} ({tz})"


def watched_rows(scheduler: Scheduler) -> list[dict[str, Any]]:
    """Each watched pipeline: name, schedule, triggers (text) and whether it is paused."""
    states = scheduler.sched.list_states()
    rows = []
    for name, pipe in scheduler.pipelines.items():
        spec = scheduler.specs[name]
        state = states.get(name)
        rows.append({
            "name": name,
            "schedule": _schedule_text(pipe) or None,
            "triggers": _triggers_text(spec) or None,
            "paused": bool(state is not None and state.paused),
        })
    return rows


def print_watched(scheduler: Scheduler, *, executor: str, once: bool) -> None:
    from rich.table import Table

    from cadenza.cli.db import mask_url

    console = out()
    n = len(scheduler.pipelines)
    mode = "one tick" if once else f"up to {scheduler.max_runs} runs at once"
    console.print(f"Scheduler {escape(scheduler.id)} watching {n} pipeline{'s' if n != 1 else ''}"
                  f" (store {escape(mask_url(scheduler.store.url))}, executor "
                  f"{escape(executor)}, {mode})")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("PIPELINE", "SCHEDULE", "TRIGGERS", "STATE"):
        table.add_column(col, no_wrap=True)
    for row in watched_rows(scheduler):
        table.add_row(escape(row["name"]), escape(row["schedule"] or "-"),
                      escape(row["triggers"] or "-"),
                      "[yellow]paused[/]" if row["paused"] else "active")
    console.print(table)
    if not scheduler.timetables and not any(s.assets or s.sensors or s.events
                                            for s in scheduler.specs.values()):
        note("None of these pipelines has a schedule or triggers: the scheduler only drives "
             "their queued runs (e.g. from `cadenza backfill --no-run` or the API).")


# --- --once: what the tick did ---------------------------------------------------------------


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _when(at: datetime | None, tz: str) -> str:
    if at is None:
        return "-"
    from zoneinfo import ZoneInfo

    local = at.astimezone(ZoneInfo(tz))
    text = local.strftime("%Y-%m-%d %H:%M")
    return text if tz == "UTC" else f"{text} {tz}"


def _why(trigger: str, runs: list[RunRecord], tz: str) -> str:
    """Why these runs (one pipeline, one trigger) were created, in a few words."""
    n = len(runs)
    what = f"{n} run{'s' if n != 1 else ''}"
    if trigger in ("schedule", "backfill"):
        dates = sorted(r.logical_date for r in runs if r.logical_date is not None)
        if not dates:
            return f"{what} ({trigger})"
        span = (_when(dates[0], tz) if len(dates) == 1
                else f"{_when(dates[0], tz)} .. {_when(dates[-1], tz)}")
        kind = "scheduled" if trigger == "schedule" else "backfill"
        return f"{what} {kind}, logical date{'s' if n != 1 else ''} {span}"
    infos = [r.extra.get("trigger") or {} for r in runs]
    if trigger == "asset":
        versions = ", ".join(f"{a} v{v}" for info in infos
                             for a, v in (info.get("assets") or {}).items())
        return f"{what}: assets updated ({versions})"
    if trigger == "sensor":
        sensors = ", ".join(sorted({str(info.get("sensor")) for info in infos}))
        return f"{what}: sensor {sensors} fired"
    if trigger == "event":
        return f"{what} from events"
    return f"{what} ({trigger})"


def _events_since(scheduler: Scheduler, since: datetime) -> list[Any]:
    from cadenza.triggers.events import list_events

    events: list[Any] = []
    for name, spec in scheduler.specs.items():
        if not spec.events:
            continue
        for e in list_events(pipeline=name, limit=1000, settings=scheduler.settings):
            at = e.received_at
            if at is not None and at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            if at is not None and at >= since:
                events.append(e)
    return events


def summarise_tick(scheduler: Scheduler, report: TickReport, *, since: datetime,
                   elapsed_s: float, json_out: bool) -> int:
    """Print what `run_once` did; returns the exit code (1 when a run it drove failed)."""
    from cadenza.cli.console import format_duration
    from cadenza.cli.events import event_to_json
    from cadenza.cli.runs import run_to_json

    store = scheduler.store
    ids = list(dict.fromkeys([*report.created, *report.started, *report.taken_over]))
    runs: dict[str, RunRecord] = {rid: store.get_run(rid) for rid in ids}
    events = _events_since(scheduler, since)
    driven = [runs[r] for r in dict.fromkeys([*report.started, *report.taken_over])]
    failed = [r for r in driven if r.state is not RunState.SUCCESS]
    code = EXIT_FAILED if failed else EXIT_OK
    if json_out:
        print_json({
            "pipelines": watched_rows(scheduler),
            "created": [run_to_json(runs[r]) for r in report.created],
            "started": [run_to_json(runs[r]) for r in report.started],
            "taken_over": [run_to_json(runs[r]) for r in report.taken_over],
            "sla_missed": list(report.sla_missed),
            "events": [event_to_json(e) for e in events],
            "ok": not failed,
        })
        return code

    console = out()
    created = [runs[r] for r in report.created]
    parts = [_count(len(created), "run") + " created", f"{len(report.started)} started"]
    if report.taken_over:
        parts.append(f"{len(report.taken_over)} taken over")
    if report.sla_missed:
        parts.append(_count(len(report.sla_missed), "SLA miss", "SLA misses"))
    if events:
        parts.append(_count(len(events), "message"))
    console.print(f"Tick done in {format_duration(elapsed_s)}: {', '.join(parts)}.")
    by_pipeline: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in created:
        by_pipeline[r.pipeline][r.trigger].append(r)
    for name in sorted(by_pipeline):
        tz = _timezone_of(scheduler, name)
        for trigger, group in by_pipeline[name].items():
            console.print(f"  created  {escape(name)}: {escape(_why(trigger, group, tz))}")
    if events:
        counts = Counter(e.status for e in events)
        console.print("  messages " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for e in events:
            if e.status != "run":
                console.print(f"           {escape(e.pipeline)}: message {escape(e.message_id)}"
                              f" from {escape(e.source)} [bold red]{escape(e.status)}[/]: "
                              f"{escape(e.error or '')}")
    for rid in report.sla_missed:
        console.print(f"  [yellow]SLA miss[/] run {escape(rid)}")
    if driven:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("RUN ID", "PIPELINE", "TRIGGER", "LOGICAL DATE", "STATE"):
            table.add_column(col, no_wrap=True)
        for r in driven:
            tz = _timezone_of(scheduler, r.pipeline)
            table.add_row(escape(r.run_id), escape(r.pipeline), escape(r.trigger),
                          _when(r.logical_date, tz), styled_state(r.state))
        console.print(table)
    if failed:
        console.print(f"[bold red]{_count(len(failed), 'run')} did not succeed.[/] See why: "
                      f"cadenza runs show {escape(failed[0].run_id)}")
    elif not created and not driven and not events and not report.sla_missed:
        console.print("Nothing was due.")
    return code


# --- the command ----------------------------------------------------------------------------


def _service_logging() -> None:
    """The service logs what it creates and how runs end (INFO, with timestamps) on stderr."""
    import logging

    from cadenza.cli.console import DEBUG

    root = logging.getLogger("cadenza")
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not DEBUG["enabled"]:
        for name in ("cadenza.triggers", "cadenza.engine.api"):
            logging.getLogger(name).setLevel(logging.INFO)


def _serve(scheduler: Scheduler) -> None:
    import signal
    import threading

    stopping: dict[str, str | None] = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        if stopping["signal"] is not None:
            if signum == signal.SIGHUP:
                return  # the server's death told again (PR_SET_PDEATHSIG, per thread)
            if not scheduler.running:
                raise KeyboardInterrupt  # case 2
            out().print(f"Scheduler {escape(scheduler.id)} stopped at once "
                        f"({signal.Signals(signum).name}); runs in flight left to their "
                        "leases.")
            _leave_runs_to_their_leases(EXIT_INTERRUPTED)  # case 2
        stopping["signal"] = signal.Signals(signum).name
        scheduler.shutdown()  # case 1

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_signal)
    note("Running; Ctrl-C or SIGTERM stops it.")
    try:
        scheduler.run_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    running = len(scheduler.running)
    left = ""
    if running:
        left = (f"; {running} run{'s' if running != 1 else ''} in flight left to "
                f"{'their leases' if running != 1 else 'its lease'} (a scheduler resumes "
                f"{'them' if running != 1 else 'it'} after {scheduler.lease_s:g} s)")
    out().print(f"Scheduler {escape(scheduler.id)} stopped"
                f"{' (' + stopping['signal'] + ')' if stopping['signal'] else ''}{escape(left)}.")
    if running and in_main:  # the process is `cadenza scheduler`'s own
        _leave_runs_to_their_leases(EXIT_OK)


def _leave_runs_to_their_leases(code: int) -> None:
    """End the process now, as a killed one would, with runs still driven by its threads
    (the module docstring says why). Another scheduler resumes them once their leases
    expire; their workers die with this process (executors/processes/lifeline.py); an open
    transaction is rolled back by the database; every commit is fenced on its driver
    (WriteBatch.fence)."""
    import logging
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue
    os._exit(code)


class _Interrupted(Exception):
    """SIGINT or SIGTERM arrived while `--once` ticked or drove its runs."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _tick_once(scheduler: Scheduler) -> TickReport:
    """`run_once`; on SIGINT/SIGTERM: stop the scheduler, say what is left, exit 130 (case 4)."""
    import signal
    import threading

    def on_signal(signum: int, frame: Any) -> None:
        for sig, handler in previous.items():  # a second signal stops at once (case 2)
            signal.signal(sig, handler)
        raise _Interrupted(signal.Signals(signum).name)

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            return scheduler.run_once()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except _Interrupted as exc:
        # The Scheduler has no way to cancel the runs it drives: they keep their state and
        # the lease of this process, which dies now; `cadenza resume` takes a dead
        # process's lease at once, another scheduler after the lease expires.
        left = scheduler.running
        scheduler.shutdown()
        if left:
            n = len(left)
            them = "them" if n != 1 else "it"
            resume = f"cadenza resume {left[0]}" if n == 1 else "cadenza resume RUN_ID"
            ids = f" ({', '.join(left)})" if 1 < n <= 5 else ""
            text = (f"{_count(n, 'run')} left running until "
                    f"{'their leases expire' if n != 1 else 'its lease expires'} "
                    f"({scheduler.lease_s:g} s){ids}: `cadenza scheduler` or `{resume}` "
                    f"finishes {them}")
        else:
            text = "no run was left running"
        err().print(f"Scheduler {escape(scheduler.id)} interrupted ({exc.signal_name}); "
                    f"{escape(text)}.", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        scheduler.close()


def scheduler_command(
    targets: Annotated[list[str] | None, typer.Argument(
        metavar="TARGETS",
        help="Pipelines to watch: file.py (all its pipelines), file.py:PIPELINE, "
        "module:PIPELINE, a folder, or a pipeline name of the project. Default: every "
        "pipeline of the project (cadenza.toml), as `cadenza pipelines list` finds them.",
        show_default=False)] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Do one tick, drive the runs it could start to their end, print "
        "what it did and exit (1 if a run failed).")] = False,
    executor: Annotated[str | None, typer.Option(
        "--executor", "-e", help="inline, threads, processes or ray (default: from "
        "cadenza.toml, else processes).")] = None,
    max_runs: Annotated[int, typer.Option(
        "--max-runs", min=0, help="Runs driven at once by this scheduler (0: only create "
        "runs, never drive them).")] = 16,
    json_out: Annotated[bool, typer.Option(
        "--json", help="With --once: print what the tick did as JSON.")] = False,
    lease: Annotated[float | None, typer.Option(
        "--lease", min=0.5, help="Seconds without a heartbeat after which another "
        "scheduler takes over this one's runs (default 30).", show_default=False)] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on "
        "127.0.0.1:PORT/metrics (runs created, SLA misses, events, tick durations).",
        show_default=False)] = None,
    claim_idle: Annotated[float, typer.Option(
        "--claim-idle", min=0.1, hidden=True, help="Seconds after which an event another "
        "consumer received but never acknowledged is claimed here.")] = 30.0,
) -> None:
    """Run the scheduler until Ctrl-C or SIGTERM: create due runs, drive queued ones.

    It handles the schedules, asset, sensor and event triggers and SLAs of the pipelines.

    Several schedulers may share one PostgreSQL store: each interval still makes one run.

    Exit code: 0 stopped cleanly, 1 a run driven by --once failed, 2 no pipelines found,
    a bad target or a bad option (nothing was run; pipelines without a schedule are
    watched, not an error), 130 interrupted (--once: Ctrl-C or SIGTERM; the service: a
    second signal).
    """
    import time

    from cadenza.cli.run import check_executor
    from cadenza.core import clock
    from cadenza.core.errors import UsageError
    from cadenza.core.settings import get_settings

    if json_out and not once:
        raise UsageError("--json only goes with --once (the service logs on stderr)",
                         hint="cadenza scheduler --once --json")
    settings = get_settings()
    check_executor(executor)
    pipes = find_pipelines(list(targets or []), settings)
    from cadenza.triggers.loop import Scheduler

    scheduler = Scheduler(pipes, settings=settings, executor=executor, max_runs=max_runs,
                          lease_s=lease, claim_idle_ms=int(claim_idle * 1000))
    import gc

    # The pipelines, their graphs and the imported modules live as long as the service:
    # keep them out of every later collection (a full one cost ~36 ms of a busy tick).
    gc.freeze()
    if metrics_port is not None:
        from cadenza.triggers.metrics import serve_metrics

        try:
            serve_metrics(metrics_port)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on 127.0.0.1:{metrics_port}: {exc}",
                             hint="choose a free port: --metrics-port 9464") from exc
    if not json_out:
        print_watched(scheduler, executor=executor or settings.executor, once=once)
    if not once:
        _service_logging()
        _serve(scheduler)
        raise typer.Exit(EXIT_OK)
    since = clock.now()
    started = time.monotonic()
    report = _tick_once(scheduler)
    code = summarise_tick(scheduler, report, since=since, elapsed_s=time.monotonic() - started,
                          json_out=json_out)
    raise typer.Exit(code)
