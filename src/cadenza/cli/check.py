"""`cadenza pipelines check [PATHS...] [--json]`: every problem of every pipeline file, for CI.

What belongs here: importing each pipeline file in a process of its own, collecting every
problem found there, the checks that need all files at once (a pipeline name defined twice,
pools), and presenting the lot. What does not: the checks a definition runs by itself
(graph/validate.py, authoring/pipeline.py: cycles, trigger rules, cron, parameter defaults
that cannot be stored...) — they are collected here, not repeated.

1. One child process per file (`check_file_main`), `--jobs` at a time. A file whose import
   crashes the interpreter, calls `sys.exit`/`os._exit`, or hangs takes only itself down: a
   child that outlives `--timeout` is killed with its process group and reported.
2. In the child, `core.errors.collecting_definition_errors()` makes a @pipeline with problems
   record its DefinitionError instead of raising it, so every pipeline of a file is checked
   (not only the first broken one). Then, per pipeline: its triggers are sorted the way the
   scheduler sorts them (an unknown trigger, assets mixed with AnyOf), and its dates.
3. In the parent: pipeline names defined in two files, and pools no task can get (not in
   the store, not declared with `--pool`, not `default`).
Exit code 0 when there is no problem, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cadenza.core.errors import Problem
    from cadenza.core.settings import Settings
    from cadenza.graph.plan import Plan

DEFAULT_TIMEOUT_S = 60.0
_CHILD = "from cadenza.cli.check import check_file_main; check_file_main()"
_TAIL = 12


def _problem(kind: str, message: str, *, pipeline: str | None = None, task: str | None = None,
             hint: str | None = None, detail: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "pipeline": pipeline, "task": task, "message": message,
            "hint": hint, "detail": detail}


def _tail(text: str, lines: int = _TAIL) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


# -- in the child ---------------------------------------------------------------------------


def _definition_problems(pipeline: str | None, problems: list[Problem]) -> list[dict[str, Any]]:
    return [_problem("definition", p.message, pipeline=pipeline, task=p.task, hint=p.hint)
            for p in problems]


def _plan_problems(plan: Plan) -> list[dict[str, Any]]:
    from cadenza.core.errors import DefinitionError
    from cadenza.triggers.loop import trigger_spec

    found: list[dict[str, Any]] = []
    try:
        trigger_spec(plan)
    except DefinitionError as exc:
        found += _definition_problems(plan.name, exc.problems)
    if plan.start_date and plan.end_date and plan.start_date > plan.end_date:
        found.append(_problem(
            "schedule", f"start_date {plan.start_date:%Y-%m-%d %H:%M} is after end_date "
            f"{plan.end_date:%Y-%m-%d %H:%M}: the schedule never fires", pipeline=plan.name,
            hint="swap them, or drop end_date"))
    return found


def _user_traceback(exc: BaseException) -> str:
    """The traceback without Cadenza's and importlib's frames: where the user's code failed."""
    import traceback

    own = str(Path(__file__).resolve().parents[1])
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(("<frozen", own))]
    text = "".join(traceback.format_list(frames)) + "".join(
        traceback.format_exception_only(type(exc), exc))
    return _tail(text)


def check_file(path: Path) -> dict[str, Any]:
    """Import `path` and report its pipelines and every problem found (see the docstring)."""
    from cadenza.cli.discovery import display_path
    from cadenza.core.errors import CadenzaError, DefinitionError, collecting_definition_errors
    from cadenza.engine.loading import load_file

    problems: list[dict[str, Any]] = []
    with collecting_definition_errors() as errors:
        loaded = load_file(path)
    for err in errors:
        problems += _definition_problems(err.pipeline, err.problems)
    exc = loaded.exception
    if isinstance(exc, DefinitionError):  # raised outside a @pipeline (a sensor, a trigger)
        problems += _definition_problems(exc.pipeline, exc.problems)
    elif isinstance(exc, CadenzaError):
        problems.append(_problem("import", exc.message, pipeline=exc.pipeline, task=exc.task,
                                 hint=exc.hint))
    elif loaded.error is not None:
        problems.append(_problem(
            "import", f"importing the file raised {loaded.error}",
            hint=f"`python {display_path(path)}` shows the whole traceback",
            detail=_user_traceback(exc) if exc is not None else None))
    pipelines = []
    for name, plan in loaded.pipelines.items():
        pools: dict[str, list[str]] = {}
        for node in plan.graph:
            pools.setdefault(node.options.pool, []).append(node.id)
        pipelines.append({"name": name, "tasks": len(plan.graph), "pools": pools})
        problems += _plan_problems(plan)
    return {"file": str(path), "pipelines": pipelines, "problems": problems}


def check_file_main() -> None:
    """The child's entry point: `python -c _CHILD FILE REPORT_PATH`."""
    path, out = Path(sys.argv[1]), Path(sys.argv[2])
    report = check_file(path)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, default=str))
    tmp.replace(out)
    sys.stdout.flush()
    os._exit(0)  # no atexit hooks or non-daemon threads of the user's module


# -- in the parent --------------------------------------------------------------------------


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def check_in_child(path: Path, *, timeout_s: float) -> dict[str, Any]:
    """`check_file(path)` in a process of its own, time-bound; a crash or a hang becomes a
    problem of that file."""
    from cadenza.cli.discovery import display_path

    with tempfile.TemporaryDirectory(prefix="cadenza-check-") as tmp:
        out = Path(tmp) / "report.json"
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(out)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return {"file": str(path), "pipelines": [], "problems": [_problem(
                "timeout", f"importing the file took longer than {timeout_s:g} s and was "
                "stopped", hint="a pipeline file should only define pipelines and tasks: move "
                "work done at import time (downloads, training, waiting on a service) into a "
                "task; or raise --timeout")]}
        if out.exists():
            report: dict[str, Any] = json.loads(out.read_text())
            return report
        text = stderr.decode("utf-8", "replace")
        return {"file": str(path), "pipelines": [], "problems": [_problem(
            "import", f"importing the file {_exit_text(proc.returncode)} before it could be "
            "checked" + (f": {_tail(text, 1)}" if text.strip() else ""),
            hint=f"`python {display_path(path)}` reproduces it; a pipeline file should not "
            "exit or crash "
            "when imported", detail=_tail(text) or None)]}


def _known_pools(settings: Settings) -> set[str] | None:
    """Pool names in the store, or None when there is no store to read (not created)."""
    from cadenza.core.errors import StoreError

    if settings.is_sqlite:
        from sqlalchemy.engine import make_url

        database = make_url(settings.database_url).database
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    try:
        from cadenza.store import open_store

        return {p.name for p in open_store(settings.database_url).list_pools()}
    except StoreError:
        return None


def cross_file_problems(reports: list[dict[str, Any]], *, known_pools: set[str] | None,
                        declared_pools: set[str]) -> None:
    """Add to each report the problems that need every file: names defined twice, pools."""
    from cadenza.cli.discovery import display_path
    from cadenza.core.suggest import did_you_mean

    where: dict[str, list[str]] = {}
    for report in reports:
        for p in report["pipelines"]:
            where.setdefault(p["name"], []).append(display_path(Path(report["file"])))
    available = {"default"} | declared_pools | (known_pools or set())
    for report in reports:
        for p in report["pipelines"]:
            files = where[p["name"]]
            if len(files) > 1:
                report["problems"].append(_problem(
                    "duplicate", f"a pipeline named '{p['name']}' is also defined in "
                    f"{', '.join(f for f in files if f != display_path(Path(report['file'])))}",
                    pipeline=p["name"],
                    hint="give one of them another name: @pipeline(name=...)"))
            for pool, tasks in sorted(p["pools"].items()):
                if pool in available:
                    continue
                there = "the store" if known_pools is not None else "any store (none found)"
                report["problems"].append(_problem(
                    "pool", f"pool '{pool}' does not exist in {there} and is not declared, so "
                    f"{'task' if len(tasks) == 1 else 'tasks'} "
                    f"{', '.join(repr(t) for t in tasks)} could never "
                    "start." + did_you_mean(pool, sorted(available)),
                    pipeline=p["name"], task=tasks[0] if len(tasks) == 1 else None,
                    hint=f"cadenza pools set {pool} 4 on the deployment's store, or declare it "
                    f"for this check: cadenza pipelines check --pool {pool}"))


def run_check(files: list[Path], *, settings: Settings, timeout_s: float, jobs: int,
              declared_pools: set[str]) -> list[dict[str, Any]]:
    """Every file's report (in the order given), with the cross-file problems added."""
    if not files:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(files)))) as pool:
        reports = list(pool.map(lambda f: check_in_child(f, timeout_s=timeout_s), files))
    known = _known_pools(settings) if any(
        set(p["pools"]) - {"default"} - declared_pools
        for r in reports for p in r["pipelines"]) else set()
    cross_file_problems(reports, known_pools=known, declared_pools=declared_pools)
    return reports


def render(reports: list[dict[str, Any]], console: Any) -> None:
    from cadenza.cli.console import escape
    from cadenza.cli.discovery import display_path

    count = sum(len(r["problems"]) for r in reports)
    pipes = sum(len(r["pipelines"]) for r in reports)
    for report in reports:
        name = escape(display_path(Path(report["file"])))
        if not report["problems"]:
            console.print(f"[green]ok[/]   {name} ({len(report['pipelines'])} pipeline(s))")
            continue
        n = len(report["problems"])
        console.print(f"[bold red]FAIL[/] {name}: {n} problem{'s' if n > 1 else ''}")
        for p in report["problems"]:
            where = ", ".join(x for x in (f"pipeline '{p['pipeline']}'" if p["pipeline"] else "",
                                          f"task '{p['task']}'" if p["task"] else "") if x)
            console.print(f"  {escape(where + ': ' if where else '')}{escape(p['message'])}")
            if p.get("detail"):
                for line in str(p["detail"]).splitlines():
                    console.print(f"      [dim]{escape(line)}[/]")
            if p["hint"]:
                console.print(f"    [cyan]Fix:[/] {escape(p['hint'])}")
    bad = sum(1 for r in reports if r["problems"])
    summary = f"{len(reports)} file(s), {pipes} pipeline(s) checked: "
    if count:
        console.print(f"\n[bold red]{summary}{count} problem(s) in {bad} file(s)[/]")
    else:
        console.print(f"\n[green]{summary}no problems[/]")


def to_json(reports: list[dict[str, Any]]) -> dict[str, Any]:
    from cadenza.cli.discovery import display_path

    problems = [{"file": display_path(Path(r["file"])), **p}
                for r in reports for p in r["problems"]]
    return {
        "ok": not problems,
        "files": [{"file": display_path(Path(r["file"])),
                   "pipelines": [p["name"] for p in r["pipelines"]],
                   "problems": len(r["problems"])} for r in reports],
        "problems": problems,
    }
