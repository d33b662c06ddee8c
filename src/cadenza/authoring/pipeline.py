"""`@pipeline`: trace the body into a graph, validate it, and build the parameter model.

Defining a pipeline validates it at once: cycles, unknown branch targets, duplicate names,
option mistakes, bad schedules, parameter defaults that do not match their type hints or
cannot be stored with a run. Every problem is reported in one DefinitionError.

A pipeline's `Plan` (graph/plan.py), built once on first use, is the typed, frozen view
that the engine, triggers and surfaces read instead of this object. Running (`.run()`) is
the engine's job: `cadenza/__init__.py` wires the engine's entry point in (`use_runner`), so
authoring never imports the engine, and the engine is imported only on the first run.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from cadenza.authoring.builder import GraphBuilder
from cadenza.authoring.refs import ParamRef
from cadenza.core import hooks
from cadenza.core.cron import PRESETS, expand_preset, is_unknown_preset
from cadenza.core.errors import (
    CadenzaError,
    DefinitionError,
    ParameterError,
    Problem,
    UsageError,
    definition_error_collector,
)
from cadenza.core.importing import file_being_imported
from cadenza.graph.model import ParamSpec as GraphParam
from cadenza.graph.model import PipelineGraph
from cadenza.graph.validate import validate_graph

if TYPE_CHECKING:
    from cadenza.graph.plan import HasPlan, Plan

P = ParamSpec("P")
R = TypeVar("R")

def _check_schedule(schedule: Any) -> Problem | None:
    if schedule is None or isinstance(schedule, timedelta):
        if isinstance(schedule, timedelta) and schedule.total_seconds() <= 0:
            return Problem(message=f"schedule interval must be positive, got {schedule}",
                           hint="schedule=timedelta(hours=1)")
        return None
    if not isinstance(schedule, str):
        return Problem(message=f"schedule must be a cron string, a preset or a timedelta, "
                       f"got {type(schedule).__name__}", hint='schedule="0 2 * * *"')
    expr = expand_preset(schedule)
    if is_unknown_preset(schedule):
        return Problem(
            message=f"unknown schedule preset '{schedule}'",
            hint=f"use one of {', '.join(p for p in PRESETS if p != '@midnight')} or a cron expression",
        )
    fields = expr.split()
    if len(fields) != 5:
        return Problem(
            message=f"schedule '{schedule}' has {len(fields)} fields; cron needs 5 "
            "(minute hour day-of-month month day-of-week)",
            hint='schedule="0 2 * * *" runs daily at 02:00',
        )
    from croniter import croniter

    if not croniter.is_valid(expr):
        return Problem(message=f"schedule '{schedule}' is not a valid cron expression",
                       hint='schedule="0 2 * * *" runs daily at 02:00; see crontab.guru')
    return None


def _check_timezone(tz: Any) -> Problem | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(tz, str):
        return Problem(message=f"timezone must be a name like \"UTC\", got {tz!r}",
                       hint='timezone="Europe/Paris"')
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return Problem(message=f"unknown timezone '{tz}'",
                       hint='use an IANA name such as "UTC" or "Europe/Paris"')
    return None


def _to_datetime(value: Any, field: str, problems: list[Problem]) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem(message=f"{field} '{value}' is not a date",
                                hint=f'{field}="2026-01-01"'))
        return None


class PipelineDef(Generic[P, R]):
    """What `@pipeline` makes: a validated graph plus its parameters and options."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, **options: Any) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.options = options
        self.description = str(options.get("description") or (fn.__doc__ or "")).strip()
        self.schedule = options.get("schedule")
        self.timezone = options.get("timezone", "UTC")
        self.catchup = bool(options.get("catchup", False))
        self.max_active_runs = options.get("max_active_runs")
        self.sla = options.get("sla")
        self.tags = tuple(options.get("tags") or ())
        self.triggers = options.get("triggers")
        self.tracking = options.get("tracking")
        self.module = getattr(fn, "__module__", "")
        self.source_file = inspect.getsourcefile(fn) if hasattr(fn, "__code__") else None
        problems: list[Problem] = []
        unknown = set(options) - _PIPELINE_OPTIONS
        for key in sorted(unknown):
            from cadenza.core.suggest import did_you_mean

            problems.append(Problem(message=f"unknown option '{key}'."
                                    + did_you_mean(key, sorted(_PIPELINE_OPTIONS)),
                                    hint=f"valid options: {', '.join(sorted(_PIPELINE_OPTIONS))}"))
        sched_problem = _check_schedule(self.schedule)
        if sched_problem:
            problems.append(sched_problem)
        tz_problem = _check_timezone(self.timezone)
        if tz_problem:
            problems.append(tz_problem)
        self.start_date = _to_datetime(options.get("start_date"), "start_date", problems)
        self.end_date = _to_datetime(options.get("end_date"), "end_date", problems)
        if self.max_active_runs is not None and (
            not isinstance(self.max_active_runs, int) or self.max_active_runs < 1
        ):
            problems.append(Problem(message=f"max_active_runs must be >= 1, got "
                                    f"{self.max_active_runs!r}", hint="max_active_runs=1"))
        self.sla = _to_timedelta(self.sla, problems)
        self.params = self._read_params(problems)
        self.graph = self._trace(problems)
        self._options = options
        self._plan: Plan | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = self.name
        self.__wrapped__ = fn

    @property
    def plan(self) -> Plan:
        """The typed, frozen view of this pipeline that the engine, triggers and surfaces
        read (graph/plan.py). Built on first use and kept: `import cadenza` and defining a
        pipeline do not import graph/plan.py (~1 ms of a cold start)."""
        if self._plan is None:
            from cadenza.graph.params import Parameters
            from cadenza.graph.plan import PipelineCallbacks, Plan

            options = self._options
            self._plan = Plan(
                name=self.name,
                graph=self.graph,
                parameters=Parameters(pipeline=self.name, specs=self.params),
                description=self.description,
                tags=tuple(str(t) for t in self.tags),
                source=f"{self.source_file}:{self.name}" if self.source_file else self.graph.source,
                source_file=self.source_file,
                module=self.module,
                schedule=self.schedule,
                timezone=self.timezone,
                start_date=self.start_date,
                end_date=self.end_date,
                catchup=self.catchup,
                max_active_runs=self.max_active_runs,
                triggers=_as_tuple(self.triggers),
                tracking=self.tracking,
                sla=self.sla,
                callbacks=PipelineCallbacks(on_success=_as_tuple(options.get("on_success")),
                                            on_failure=_as_tuple(options.get("on_failure")),
                                            on_sla_miss=_as_tuple(options.get("on_sla_miss"))),
            )
        return self._plan

    def __repr__(self) -> str:
        return f"<pipeline '{self.name}' ({len(self.graph)} tasks)>"

    # -- parameters ---------------------------------------------------------------------------
    def _read_params(self, problems: list[Problem]) -> tuple[GraphParam, ...]:
        out: list[GraphParam] = []
        hints = _type_hints(self.fn)
        for p in inspect.signature(self.fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                problems.append(Problem(message=f"parameter *{p.name} is not supported",
                                        hint="declare each pipeline parameter by name"))
                continue
            ann = hints.get(p.name, Any)
            has_default = p.default is not inspect.Parameter.empty
            if has_default and callable(p.default) and not isinstance(p.default, type):
                problems.append(Problem(
                    message=f"default for parameter '{p.name}' is "
                    f"{'a lambda' if getattr(p.default, '__name__', '') == '<lambda>' else 'a function'}"
                    ", which cannot be stored with the run",
                    hint="use a JSON-serialisable default (dict, list, str, number) or make "
                    "the parameter required"))
            elif has_default and _plain_default_ok(ann, p.default):
                pass  # a str/int/float/bool default of its own type: no pydantic needed
            elif has_default:
                from pydantic import TypeAdapter, ValidationError  # ~0.1 s the first time
                
                from cadenza.graph.params import type_label

                default = p.default
                try:
                    adapter = TypeAdapter(ann)
                    adapter.validate_python(default, strict=False)
                except ValidationError as exc:
                    problems.append(Problem(
                        message=f"default for parameter '{p.name}' ({default!r}) does not match "
                        f"its type {type_label(ann)}: {exc.errors()[0]['msg']}",
                        hint=f"make the default of type {type_label(ann)}, or fix the annotation"))
                except Exception as exc:  # noqa: BLE001 - pydantic cannot build a schema
                    problems.append(Problem(
                        message=f"parameter '{p.name}' has a type pydantic cannot validate: {exc}",
                        hint="annotate it with a JSON-friendly type (int, str, list[float], ...)"))
                    adapter = None
                if adapter is not None and not _is_storable(default, adapter):
                    what = f"of type {type(default).__name__}"
                    problems.append(Problem(
                        message=f"default for parameter '{p.name}' is {what}, which cannot be "
                        "stored with the run",
                        hint="use a JSON-serialisable default (dict, list, str, number) or make "
                        "the parameter required"))
            out.append(GraphParam(name=p.name, annotation=ann, has_default=has_default,
                                  default=p.default if has_default else None))
        return tuple(out)

    @property
    def param_model(self) -> Any:
        """The pydantic model of the parameters (built on first use)."""
        return self.plan.parameters.model

    def validate_params(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(python values, JSON form to store). Raises ParameterError naming each problem."""
        return self.plan.parameters.validate(params)

    # -- tracing ------------------------------------------------------------------------------
    def _trace(self, problems: list[Problem]) -> PipelineGraph:
        builder = GraphBuilder(self.name)
        refs = {p.name: ParamRef(p.name, self.name) for p in self.params}
        with builder.active():
            try:
                self.fn(**refs)  # type: ignore[arg-type, call-arg]
            except DefinitionError as exc:
                builder.problems.extend(exc.problems)
            except CadenzaError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as a definition problem
                builder.problems.append(Problem(
                    message=f"the pipeline body raised {type(exc).__name__}: {exc}",
                    hint="a pipeline body only calls tasks and wires them with >>; compute "
                    "values inside tasks"))
        problems = problems + builder.problems
        if not builder.nodes and not problems:
            problems.append(Problem(message="the pipeline body calls no task",
                                    hint="call at least one @task inside the @pipeline body"))
        source = f"{self.module}:{self.name}"
        graph = PipelineGraph(name=self.name, nodes=builder.build_nodes(), params=self.params,
                              source=source)
        validate_graph(graph, problems)
        return graph

    # -- running ------------------------------------------------------------------------------
    def run(self, *, executor: str | None = None, **params: Any) -> Any:
        """Run the pipeline now and wait for it; returns a RunResult.

        Example:
            result = fraud_training.run(n=500, executor="inline")
            assert result.state == "success"; result.outputs["select_best"]
        """
        importing = file_being_imported()
        if importing is not None:
            raise DefinitionError(self.name, [Problem(
                message=f"{importing.name} starts a run when it is imported, and Cadenza "
                "imports it to find its pipelines",
                hint=f'put the call under `if __name__ == "__main__":` in {importing}, so that '
                "`python` runs it and `cadenza` commands only read the pipeline")])
        runner = hooks.runner
        if runner is None:  # `import cadenza` wires it; only a half-imported package lacks it
            raise UsageError("the engine is not wired: import cadenza first",
                             pipeline=self.name, hint="import cadenza")
        # The pipeline itself, not its Plan: the runner builds the Plan after it has started
        # what can start at once (the processes executor's forkserver).
        return runner(self, params, executor)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        if args:
            raise ParameterError("pass pipeline parameters by name", pipeline=self.name,
                                 hint=f"{self.name}(n=500)")
        return self.run(**kwargs)  # type: ignore[arg-type]


_PIPELINE_OPTIONS = {
    "schedule", "timezone", "start_date", "end_date", "catchup", "max_active_runs", "sla",
    "tags", "triggers", "tracking", "on_success", "on_failure", "on_sla_miss", "description",
    "params",
}


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: fall back to Any
        return {}


_PLAIN = (str, int, float, bool, type(None))


def _plain_default_ok(ann: Any, default: Any) -> bool:
    """True for the common case (`n: int = 5`), checked without building a pydantic
    TypeAdapter (~10-40 ms per parameter on the 2-core CI machine)."""
    if type(default) not in _PLAIN:
        return False
    if ann is Any:
        return True
    if ann is float:
        return type(default) in (int, float)
    return ann in _PLAIN and type(default) is ann


def _is_storable(value: Any, adapter: Any) -> bool:
    try:
        data = adapter.dump_python(value, mode="json", warnings=False)
        json.dumps(data)
    except Exception:  # noqa: BLE001 - anything that cannot be stored
        return False
    return True


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """An option that takes one item or several, as a tuple (None: empty)."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    return (value,)


def _to_timedelta(value: Any, problems: list[Problem]) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    problems.append(Problem(message=f"sla must be a timedelta or a number of seconds, got {value!r}",
                            hint="sla=timedelta(hours=4)"))
    return None


# How `PipelineDef.run` reaches the engine. Authoring sits below the engine and must not
# import it; the top-level package (`cadenza/__init__.py`) wires the engine's entry point
# in (`core.hooks.runner`), so the edge is an ordinary import that import-linter sees, and
# the engine's modules are still only imported on the first run.
Runner = Callable[["HasPlan", Mapping[str, Any], "str | None"], Any]


def use_runner(runner: Runner) -> None:
    """Set the function `PipelineDef.run` hands itself (its `.plan`), parameters and
    executor to."""
    hooks.runner = runner


class BrokenPipeline:
    """What @pipeline returns for a pipeline with problems while they are collected
    (`core.errors.collecting_definition_errors`, for `cadenza pipelines check`): it has
    no Plan (loaders skip it), and using it raises its DefinitionError."""

    plan = None  # loaders look for a Plan: there is none

    def __init__(self, name: str, error: DefinitionError) -> None:
        self.name = name
        self.error = error

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise self.error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def _define(f: Callable[P, R], name: str | None, options: dict[str, Any]) -> Any:
    collected = definition_error_collector()
    if collected is None:
        return PipelineDef(f, name=name, **options)
    try:
        return PipelineDef(f, name=name, **options)
    except DefinitionError as exc:
        label = str(name or getattr(f, "__name__", "?"))
        if exc.pipeline is None:  # a problem found without the pipeline's name: add it
            exc = DefinitionError(label, list(exc.problems))
        collected.append(exc)
        return BrokenPipeline(label, exc)


def pipeline(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Declare a pipeline: the body calls tasks and wires them; nothing runs until `.run()`.

    Example:
        @pipeline(schedule="0 2 * * *", tags=["training"])
        def fraud_training(n: int = 1000):
            df = build_features(n)
            train(df)
    """
    if fn is not None:
        return _define(fn, name, options)

    def wrap(f: Callable[P, R]) -> PipelineDef[P, R]:
        defined: PipelineDef[P, R] = _define(f, name, options)
        return defined

    return wrap
