"""`@task`, `@task.branch`, `TaskDef`, `.partial().expand()`, `.with_options()`.

A TaskDef wraps a plain function. Called inside a `@pipeline` body it adds a node and
returns an `OutputRef`; called anywhere else it simply calls the function, so tasks stay
unit-testable. Option mistakes are collected as problems and reported by the pipeline that
uses the task, all at once, with the pipeline's name.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from cadenza.authoring.builder import current_builder
from cadenza.authoring.refs import OutputRef, _Wirable
from cadenza.core import hooks
from cadenza.core.errors import ConfigError, DefinitionError, Problem
from cadenza.graph.envspec import check_python, check_requirements
from cadenza.graph.model import Resources, TaskOptions, TriggerRule
from cadenza.graph.validate import check_trigger_rule

P = ParamSpec("P")
R = TypeVar("R")

_UNSET: Any = object()


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _memory_bytes(value: Any) -> int:
    from cadenza.core.units import parse_memory

    return parse_memory(value)  # ConfigError: reported with the task's other problems


def _callbacks(value: Any) -> tuple[Callable[..., Any], ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _asset_name(value: Any) -> str:
    name = getattr(value, "name", value)
    return str(name)


def build_options(name: str, raw: dict[str, Any]) -> tuple[TaskOptions, list[Problem]]:
    """Turn @task keyword options into TaskOptions, collecting every problem."""
    problems: list[Problem] = []

    def bad(message: str, hint: str) -> None:
        problems.append(Problem(message=message, task=name, hint=hint))

    from cadenza.core.suggest import did_you_mean

    for key in sorted(set(raw) - TASK_OPTIONS):
        bad(f"unknown option '{key}'." + did_you_mean(key, sorted(TASK_OPTIONS)),
            f"valid options: {', '.join(sorted(TASK_OPTIONS - {'is_branch', 'sensor'}))}")

    def number(key: str, default: float, example: str) -> float:
        value = raw.get(key, default)
        if value is None:
            return default
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad(f"{key} must be a number, got {value!r}", f"@task({key}={example})")
            return default
        return float(value)

    retries = raw.get("retries", 0)
    if not isinstance(retries, int) or retries < 0:
        bad(f"retries must be a whole number >= 0, got {retries!r}", "@task(retries=3)")
        retries = 0
    delay = number("retry_delay", 0.0, "2.0")
    if delay < 0:
        bad(f"retry_delay must be >= 0 seconds, got {delay}", "@task(retry_delay=2.0)")
    backoff = number("retry_backoff", 1.0, "2.0")
    if backoff < 1:
        bad(f"retry_backoff must be >= 1, got {backoff}", "@task(retry_backoff=2.0)")
    jitter = 0.1 if raw.get("retry_jitter") is True else number("retry_jitter", 0.0, "0.1")
    if jitter < 0:
        bad(f"retry_jitter must be >= 0, got {jitter}", "@task(retry_jitter=0.1)")
    retry_on_raw = raw.get("retry_on", ())
    if isinstance(retry_on_raw, type):
        retry_on_raw = (retry_on_raw,)
    retry_on = tuple(retry_on_raw or ())
    for exc_type in retry_on:
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            bad(
                f"retry_on must list exception classes, got {exc_type!r}",
                "@task(retry_on=(ConnectionError, TimeoutError))",
            )
    timeout = number("timeout", 0.0, "600") if raw.get("timeout") is not None else None
    if timeout is not None and timeout <= 0:
        bad(f"timeout must be > 0 seconds, got {timeout}", "@task(timeout=600)")
    rule = str(raw.get("trigger_rule", "all_success"))
    problem = check_trigger_rule(rule, name)
    if problem:
        problems.append(problem)
        rule = "all_success"
    res_raw = raw.get("resources") or {}
    resources = Resources()
    if not isinstance(res_raw, dict):
        bad("resources must be a dict", '@task(resources={"cpu": 2, "memory": "4GiB", "gpu": 1})')
    else:
        try:
            custom = {
                str(k): float(v) for k, v in res_raw.items()
                if k not in ("cpu", "memory", "gpu", "gpu_type")
            }
            gpu_type = res_raw.get("gpu_type")
            if gpu_type is not None and not (isinstance(gpu_type, str) and gpu_type):
                raise ValueError(f"gpu_type must be an accelerator name, got {gpu_type!r}")
            resources = Resources(
                cpu=float(res_raw.get("cpu", 0) or 0),
                memory_bytes=_memory_bytes(res_raw.get("memory", 0) or 0),
                gpu=int(res_raw.get("gpu", 0) or 0),
                gpu_type=gpu_type,
                custom=custom,
            )
        except (TypeError, ValueError, ConfigError) as exc:
            bad(f"resources are not valid: {getattr(exc, 'message', exc)}",
                '@task(resources={"cpu": 2, "memory": "4GiB", "gpu": 1})')
    requirements, req_problems = check_requirements(raw.get("requirements"))
    python, py_problems = check_python(raw.get("python"))
    for message, hint in req_problems + py_problems:
        bad(message, hint)
    pool = raw.get("pool") or "default"
    if not isinstance(pool, str):
        bad(f"pool must be a pool name, got {pool!r}", '@task(pool="gpu")')
        pool = "default"
    options = TaskOptions(
        retries=retries,
        retry_delay_s=delay,
        retry_backoff=backoff,
        max_retry_delay_s=(number("max_retry_delay", 0.0, "60")
                           if raw.get("max_retry_delay") is not None else None),
        retry_jitter=jitter,
        retry_on=retry_on,
        timeout_s=timeout,
        cache=bool(raw.get("cache", False)),
        cache_expiration_s=(number("cache_expiration", 0.0, "timedelta(days=1)")
                            if raw.get("cache_expiration") is not None else None),
        version=None if raw.get("version") is None else str(raw.get("version")),
        resources=resources,
        pool=pool,
        outlets=tuple(_asset_name(a) for a in raw.get("outlets") or ()),
        trigger_rule=TriggerRule(rule),
        is_branch=bool(raw.get("is_branch", False)),
        requirements=requirements,
        python=python,
        on_success=_callbacks(raw.get("on_success")),
        on_failure=_callbacks(raw.get("on_failure")),
        on_retry=_callbacks(raw.get("on_retry")),
        sensor=raw.get("sensor"),
    )
    return options, problems


TASK_OPTIONS = frozenset({
    "retries", "retry_delay", "retry_backoff", "max_retry_delay", "retry_jitter", "retry_on",
    "timeout", "cache", "cache_expiration", "version", "resources", "pool", "outlets",
    "trigger_rule", "is_branch", "requirements", "python", "on_success", "on_failure", "on_retry",
    "sensor",
})


def branch_literals(fn: Callable[..., Any]) -> tuple[str, ...]:
    """String literals a branch function may return, read from its source (best effort)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return ()
    found: list[str] = []

    def collect(node: ast.AST | None) -> None:
        if node is None:
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
        elif isinstance(node, ast.IfExp):
            collect(node.body)
            collect(node.orelse)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            for elt in node.elts:
                collect(elt)

    func = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if func is None:
        return ()
    for node in ast.walk(func):
        if isinstance(node, ast.Return):
            collect(node.value)
    return tuple(dict.fromkeys(found))


class TaskDef(_Wirable, Generic[P, R]):
    """What `@task` makes. Call it in a pipeline body to add a task to the graph."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        explicit: bool = False,
        **options: Any,
    ) -> None:
        if not callable(fn):
            raise DefinitionError(
                None,
                [Problem(message=f"@task needs a function, got {type(fn).__name__}",
                         hint="put @task on a def")],
            )
        self.fn = fn
        # A name given per use (with_options(name=...)) must be unique in a pipeline; a name
        # given to @task(name=...) is a base name like the function's: name, name__1, ...
        self.explicit_name = explicit
        self.name: str = name or str(getattr(fn, "__name__", "task"))
        self.raw_options = options
        self.options, self.problems = build_options(self.name, options)
        self.signature = inspect.signature(fn)
        module = getattr(fn, "__module__", "") or ""
        self.fn_key = f"{module}:{getattr(fn, '__qualname__', self.name)}"
        self.branch_targets = branch_literals(fn) if self.options.is_branch else ()
        self.__doc__ = fn.__doc__
        self.__name__ = self.name
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<task '{self.name}'>"

    # Calling ---------------------------------------------------------------------------------
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> OutputRef[R]: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        self._report_problems(builder)
        return builder.add(self, args, kwargs)

    def _report_problems(self, builder: Any) -> None:
        for p in self.problems:
            if p not in builder.problems:
                builder.problems.append(p)

    # Variants -------------------------------------------------------------------------------
    def with_options(self, *, name: str | None = None, **changes: Any) -> TaskDef[P, R]:
        """A copy with some options changed, e.g. `train.with_options(name="train_big", retries=5)`."""
        merged = {**self.raw_options, **changes}
        if name is not None:
            return TaskDef(self.fn, name=name, explicit=True, **merged)
        return TaskDef(self.fn, name=self.name, explicit=self.explicit_name, **merged)

    def partial(self, **fixed: Any) -> PartialTask[R]:
        """Bind arguments shared by every mapped instance: `train.partial(df=df).expand(...)`."""
        return PartialTask(self, fixed)

    def expand(self, **lists: Any) -> OutputRef[list[R]]:
        """Map over lists (cartesian product when several): one task instance per element."""
        return PartialTask(self, {}).expand(**lists)

    # >> support ------------------------------------------------------------------------------
    def _builder(self) -> Any:
        builder = current_builder()
        if builder is None:
            raise DefinitionError(
                None,
                [Problem(message=">> is only meaningful inside a @pipeline body", task=self.name,
                         hint="wire tasks inside the function decorated with @pipeline")],
            )
        return builder

    def _wire_ids(self) -> list[str]:
        ids: list[str] = self._builder().resolve_ids(self)
        return ids


class PartialTask(Generic[R]):
    def __init__(self, task: TaskDef[Any, R], fixed: dict[str, Any]) -> None:
        self.task = task
        self.fixed = fixed

    def partial(self, **more: Any) -> PartialTask[R]:
        return PartialTask(self.task, {**self.fixed, **more})

    def expand(self, **lists: Any) -> OutputRef[list[R]]:
        builder = current_builder()
        if builder is None:
            raise DefinitionError(
                None,
                [Problem(message="expand() is only meaningful inside a @pipeline body",
                         task=self.task.name,
                         hint="call it inside the function decorated with @pipeline")],
            )
        self.task._report_problems(builder)
        if not lists:
            builder.problems.append(
                Problem(message="expand() needs at least one list to map over",
                        task=self.task.name, hint=".expand(config=[...])")
            )
        unnamed = _unnamed_mapped(self.task, lists)
        mapped = {k: v for k, v in lists.items() if k not in unnamed}
        ref = builder.add(self.task, (), dict(self.fixed), mapped=mapped)
        for problem in unnamed.values():
            builder.problems.append(Problem(message=problem.message, task=ref.task_id,
                                            hint=problem.hint))
        if unnamed and not mapped:  # still a list to its downstreams, like a good expand
            return OutputRef(ref.task_id, builder, is_mapped=True)
        return ref


def _unnamed_mapped(task: TaskDef[Any, Any], lists: dict[str, Any]) -> dict[str, Problem]:
    """The expand() names that match no named parameter and would slip into *args or
    **kwargs. The engine maps over named parameters only: say so now, not at run time."""
    params = task.signature.parameters
    var = [p for p in params.values()
           if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if not var:
        return {}  # an unknown name is reported by binding the call (unexpected keyword)
    takes = " and ".join(("*" if p.kind is inspect.Parameter.VAR_POSITIONAL else "**") + p.name
                         for p in var)
    found: dict[str, Problem] = {}
    for name in lists:
        if name in params:
            continue  # named (fine), or *args/**kwargs itself (reported when binding)
        found[name] = Problem(
            message=f"expand() maps over named parameters; '{task.name}' takes {takes} "
            f"and has no parameter '{name}'",
            task=task.name,
            hint=(f"write a @sensor function with a named parameter {name} and expand that"
                  if task.options.sensor is not None
                  else f"give it a named parameter {name}: def {task.name}({name}, ...)"),
        )
    return found


class _TaskDecorator:
    """`@task`, `@task(...)` and `@task.branch`."""

    @overload
    def __call__(self, fn: Callable[P, R], /) -> TaskDef[P, R]: ...
    @overload
    def __call__(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], TaskDef[P, R]]: ...
    def __call__(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        if fn is not None:
            return TaskDef(fn, name=name, **options)

        def wrap(f: Callable[P, R]) -> TaskDef[P, R]:
            return TaskDef(f, name=name, **options)

        return wrap

    def branch(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        """A task that returns the id (or list of ids) of the direct downstreams to run."""
        options["is_branch"] = True
        return self(fn, name=name, **options)

    def spark(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        """A task whose function gets a SparkSession as `spark=` (SPEC §9; built in
        cadenza.integrations.spark). `master=` (default "local[*]"), `config=`, `app_name=`.

        Example:
            @task.spark(timeout=600)
            def totals(spark, path: str):
                return spark.read.parquet(path).groupBy("customer_id").count()
        """
        return _task_kind("spark")(fn, name=name, **options)


    def shell(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        """A task whose function returns a command to run (SPEC §9); see authoring/kinds.py.

        Example:
            @task.shell(env={"MODE": "fast"}, cwd="jobs/", timeout=600, retries=2)
            def export(day: str) -> str:
                return f"./export.sh --day {day}"
        """
        from cadenza.authoring.kinds import shell

        return shell(fn, name=name, **options)

    def sql(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        """A task whose function returns a SQL query, run on `url=` (SPEC §9).

        Example:
            @task.sql(url="secret://WAREHOUSE_URL")
            def daily_users(day: str):
                return "SELECT * FROM users WHERE day = :day", {"day": day}
        """
        from cadenza.authoring.kinds import sql

        return sql(fn, name=name, **options)

    def http(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        """A task whose function returns a URL or request fields, fetched with httpx (SPEC §9).

        Example:
            @task.http(method="POST", retries=3)
            def score(rows: list) -> dict:
                return {"url": "http://scorer:8000/score", "json": {"rows": rows}}
        """
        from cadenza.authoring.kinds import http

        return http(fn, name=name, **options)


task = _TaskDecorator()

# Task kinds defined outside authoring (which may not import integrations: STYLE §1) are
# handed in by `cadenza/__init__.py` (`core.hooks.task_kinds`), as the engine is.


def use_task_kind(name: str, factory: Callable[..., Any]) -> None:
    """`task.<name>(...)` calls `factory` (`cadenza/__init__.py` sets @task.spark's)."""
    hooks.task_kinds[name] = factory


def _task_kind(name: str) -> Callable[..., Any]:
    factory = hooks.task_kinds.get(name)
    if factory is None:
        from cadenza.core.errors import InternalError

        raise InternalError(f"no factory for @task.{name}",
                            hint="import cadenza (its __init__ wires the task kinds)")
    return factory


def iter_task_defs(values: Iterable[Any]) -> Sequence[TaskDef[Any, Any]]:
    return [v for v in values if isinstance(v, TaskDef)]
