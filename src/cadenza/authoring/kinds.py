"""Task kinds beyond Python functions (SPEC §9): `@task.shell`, `@task.sql`, `@task.http`,
`sql_task(...)` and `http_task(...)`.

What belongs here: the definition side. Each kind builds an ordinary `TaskDef` whose function
(the "runner") calls the user's function, if there is one, and hands what it returned (a
command, a query, a request) to the kind's runtime, which runs inside the worker like any task
body: retries, timeouts, pools, resources, caching and resume are the engine's, unchanged.
What does not: the runtimes themselves (`cadenza.integrations.shell`, `.sql`, `.http`: they
start processes, open connections, import third-party libraries). Authoring may not import
integrations (STYLE §1), so `cadenza/__init__.py` hands them in with `use_runtimes`, the way it
hands `PipelineDef.run` its engine.

Cache keys. The runner reads the kind's settings as one closure value, a dict of plain values
(`config`), and the code fingerprint hashes closure values by content (graph/fingerprint.py):
so the query text of `sql_task`, a shell task's `env`/`cwd`/`output`, an HTTP task's method and
headers are part of the key, and so is the user's function, reached through the closure as
project code. What the user's function returns is known only when it runs: it is covered by
that function's code and inputs, like any task's result.

Example:
    @task.shell(env={"MODE": "fast"}, timeout=600, retries=2)
    def export(day: str) -> str:
        return f"./export.sh --day {day}"

    @pipeline
    def nightly(day: str = "2026-01-01"):
        users = sql_task("users", "secret://WAREHOUSE_URL",
                         "SELECT * FROM users WHERE day = :day", params={"day": day})
        export(day) >> users
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from cadenza.authoring.builder import current_builder
from cadenza.authoring.task import TaskDef
from cadenza.core import hooks
from cadenza.core.errors import (
    DatabaseUnavailable,
    DefinitionError,
    HttpUnavailable,
    InternalError,
    Problem,
)

Runtime = hooks.Runtime

KINDS = ("shell", "sql", "http")
# The options each kind takes besides @task's own.
KIND_OPTIONS: Mapping[str, frozenset[str]] = {
    "shell": frozenset({"env", "cwd", "output", "shell"}),
    "sql": frozenset({"url"}),
    "http": frozenset({"method", "headers", "output", "request_timeout"}),
}
SHELL_OUTPUTS = ("last_line", "stdout", "none")
HTTP_OUTPUTS = ("json", "text", "none")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Failures worth another attempt when the task has retries and names no retry_on itself: a
# database or server that is down or overloaded. A bad query or a 4xx fails at once.
DEFAULT_RETRY_ON: Mapping[str, tuple[type[BaseException], ...]] = {
    "sql": (DatabaseUnavailable,),
    "http": (HttpUnavailable,),
}


def use_runtimes(**runtimes: Runtime) -> None:
    """Called once by `cadenza/__init__.py`: the function that runs each kind."""
    hooks.runtimes.update(runtimes)


def run_kind(kind: str, fn: Callable[..., Any] | None, config: Mapping[str, Any],
             args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The body of every runner: ask the user's function what to run, then run it."""
    if fn is not None:
        what = fn(*args, **kwargs)
    else:  # sql_task / http_task: the request is the arguments themselves
        what = dict(_FIXED_SIGNATURES[kind].bind(*args, **kwargs).arguments)
    runtime = hooks.runtimes.get(kind)
    if runtime is None:  # `cadenza` was not imported as a package, which wires them
        raise InternalError(f"no runtime for {kind} tasks",
                            hint="import cadenza (its __init__ wires the task kinds)")
    return runtime(what, config)


def _make_runner(kind: str, fn: Callable[..., Any] | None, config: dict[str, Any], *,
                 signature: inspect.Signature, name: str, module: str,
                 qualname: str) -> Callable[..., Any]:
    # The closure holds plain data and the user's function only: the fingerprint hashes
    # closure values (a Signature would drag its annotations in).
    def runner(*args: Any, **kwargs: Any) -> Any:
        return run_kind(kind, fn, config, args, kwargs)

    runner.__signature__ = signature  # type: ignore[attr-defined]
    runner.__name__ = name
    # Its own qualified name: the fingerprint keeps one digest per name, and the user's
    # function (reached through the closure) keeps its own.
    runner.__qualname__ = f"{qualname}.<{kind}>"
    runner.__module__ = module
    runner.__doc__ = getattr(fn, "__doc__", None)
    return runner


def _plain(value: Any) -> Any:
    """A settings value as plain data (paths as strings), so the fingerprint hashes it."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_kind_options(kind: str, raw: Mapping[str, Any],
                       task: str) -> tuple[dict[str, Any], list[Problem]]:
    """The kind's settings as plain data, and every problem with them."""
    problems: list[Problem] = []

    def bad(message: str, hint: str) -> None:
        problems.append(Problem(message=message, task=task, hint=hint))

    def string_map(key: str, example: str) -> dict[str, str]:
        value = raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (str, os.PathLike)) for k, v in value.items()):
            bad(f"{key} must be a dict of strings, got {value!r}", example)
            return {}
        return {k: os.fspath(v) for k, v in value.items()}

    config: dict[str, Any] = {}
    if kind == "shell":
        config["env"] = string_map("env", '@task.shell(env={"MODE": "fast", '
                                          '"TOKEN": "secret://API_TOKEN"})')
        cwd = raw.get("cwd")
        if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
            bad(f"cwd must be a folder path, got {cwd!r}", '@task.shell(cwd="jobs/")')
            cwd = None
        config["cwd"] = None if cwd is None else os.fspath(cwd)
        output = raw.get("output", "last_line")
        if output not in SHELL_OUTPUTS:
            bad(f"output must be one of {', '.join(SHELL_OUTPUTS)}, got {output!r}",
                '@task.shell(output="stdout") returns everything the command printed; '
                '"last_line" its last line; "none" nothing')
            output = "last_line"
        config["output"] = output
        shell = raw.get("shell")
        if shell is not None and not (isinstance(shell, str) and shell):
            bad(f"shell must be the path of a shell, got {shell!r}", '@task.shell(shell="/bin/sh")')
            shell = None
        config["shell"] = shell
    elif kind == "sql":
        url = raw.get("url")
        if not isinstance(url, str) or not url.strip():
            bad(f"a SQL task needs url=, the database's SQLAlchemy URL, got {url!r}",
                '@task.sql(url="postgresql+psycopg://user@host/db"), or a secret: '
                'url="secret://WAREHOUSE_URL", or an environment variable: url="env://DB_URL"')
            url = ""
        config["url"] = url
    elif kind == "http":
        method = str(raw.get("method", "GET")).upper()
        if method not in HTTP_METHODS:
            bad(f"method must be one of {', '.join(HTTP_METHODS)}, got {raw.get('method')!r}",
                '@task.http(method="POST")')
            method = "GET"
        config["method"] = method
        config["headers"] = string_map(
            "headers", '@task.http(headers={"Authorization": "secret://API_AUTH"})')
        output = raw.get("output", "json")
        if output not in HTTP_OUTPUTS:
            bad(f"output must be one of {', '.join(HTTP_OUTPUTS)}, got {output!r}",
                '@task.http(output="text") returns the body as text; "json" parses it')
            output = "json"
        config["output"] = output
        timeout = raw.get("request_timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            bad(f"request_timeout must be a number of seconds > 0, got {timeout!r}",
                "@task.http(request_timeout=30)")
            timeout = 30.0
        config["request_timeout"] = float(timeout)
    return config, problems


class KindTaskDef(TaskDef[Any, Any]):
    """A TaskDef of a kind other than a plain function (`TaskDef.kind` says which)."""

    def __init__(self, kind: str, fn: Callable[..., Any] | None, kind_options: Mapping[str, Any],
                 *, name: str | None = None, explicit: bool = False,
                 signature: inspect.Signature | None = None, **options: Any) -> None:
        if fn is not None and not callable(fn):
            raise DefinitionError.single(f"@task.{kind} needs a function, got {type(fn).__name__}",
                                         hint=f"put @task.{kind} on a def")
        self.kind = kind
        self.user_fn = fn
        self.kind_options = dict(kind_options)
        task_name = name or str(getattr(fn, "__name__", kind))
        config, problems = check_kind_options(kind, kind_options, task_name)
        sig = signature if signature is not None else inspect.signature(fn)  # type: ignore[arg-type]
        default_retry = DEFAULT_RETRY_ON.get(kind)
        if default_retry and options.get("retry_on") is None:
            options["retry_on"] = default_retry
        runner = _make_runner(
            kind, fn, config, signature=sig, name=task_name,
            module=str(getattr(fn, "__module__", None) or __name__),
            qualname=str(getattr(fn, "__qualname__", None) or f"{kind}_task.{task_name}"),
        )
        super().__init__(runner, name=task_name, explicit=explicit, **options)
        self.problems.extend(problems)

    def __repr__(self) -> str:
        return f"<{self.kind} task '{self.name}'>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_builder() is None and self.problems:
            # Outside a pipeline body the task runs at once: not with broken settings.
            raise DefinitionError(None, list(self.problems))
        return super().__call__(*args, **kwargs)

    def with_options(self, *, name: str | None = None, **changes: Any) -> KindTaskDef:
        """A copy with some options changed: @task's own and this kind's (`env=`, `url=`...)."""
        keys = KIND_OPTIONS[self.kind]
        kind_changes = {k: v for k, v in changes.items() if k in keys}
        task_changes = {k: v for k, v in changes.items() if k not in keys}
        return KindTaskDef(
            self.kind, self.user_fn, {**self.kind_options, **kind_changes},
            name=name if name is not None else self.name,
            explicit=True if name is not None else self.explicit_name,
            signature=self.signature,
            **{**self.raw_options, **task_changes},
        )


def _decorate(kind: str, fn: Any, name: str | None, options: dict[str, Any]) -> Any:
    keys = KIND_OPTIONS[kind]
    kind_options = {k: options.pop(k) for k in list(options) if k in keys}

    def wrap(f: Callable[..., Any]) -> KindTaskDef:
        return KindTaskDef(kind, f, kind_options, name=name, **options)

    return wrap(fn) if fn is not None else wrap


def shell(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """`@task.shell`: the function returns a command (a string, run by the shell, or a list
    of arguments, run as is); the task runs it and fails if it exits non-zero."""
    return _decorate("shell", fn, name, options)


def sql(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """`@task.sql(url=...)`: the function returns a query (or a list of statements, or a
    `(query, params)` pair); a SELECT's rows become a DataFrame, other statements return
    the number of rows they changed."""
    return _decorate("sql", fn, name, options)


def http(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """`@task.http`: the function returns a URL or a dict of request fields (`url`, `method`,
    `params`, `json`, `data`, `headers`); the task returns the response's JSON (or text)."""
    return _decorate("http", fn, name, options)


_SQL_SIGNATURE = inspect.Signature([
    inspect.Parameter("query", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
])
_HTTP_SIGNATURE = inspect.Signature([
    inspect.Parameter("url", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    *(inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
      for p in ("params", "json", "data")),
])

_FIXED_SIGNATURES = {"sql": _SQL_SIGNATURE, "http": _HTTP_SIGNATURE}


def _has_ref(value: Any) -> bool:
    from cadenza.authoring.refs import OutputRef, ParamRef

    if isinstance(value, (OutputRef, ParamRef)):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_ref(v) for v in value)
    if isinstance(value, Mapping):
        return any(_has_ref(v) for v in value.values())
    return False


def sql_task(name: str, url: str, query: Any, *, params: Any = None, **options: Any) -> Any:
    """A task that runs one SQL query (or a list of statements, in one transaction).

    Inside a `@pipeline` body it adds the task and returns its output reference; `query` and
    `params` may be upstream outputs or pipeline parameters. Anywhere else it runs now.

    Example:
        users = sql_task("users", "secret://WAREHOUSE_URL",
                         "SELECT id, country FROM users WHERE signup >= :since",
                         params={"since": since})
    """
    tdef = KindTaskDef("sql", None, {"url": url}, name=name, explicit=True,
                       signature=_SQL_SIGNATURE, **options)
    if isinstance(query, str) and not query.strip() or query is None or not (
            isinstance(query, (str, list, tuple)) or _has_ref(query)):
        tdef.problems.append(Problem(
            message=f"sql_task needs a query (a string or a list of statements), got {query!r}",
            task=tdef.name, hint='sql_task("users", url, "SELECT * FROM users")'))
    return tdef(query, params)


def http_task(name: str, url: Any, *, method: str = "GET", params: Any = None, json: Any = None,
              data: Any = None, headers: Mapping[str, str] | None = None, output: str = "json",
              request_timeout: float = 30.0, **options: Any) -> Any:
    """A task that makes one HTTP request with httpx and returns the response's JSON (or
    text). 5xx answers and connection errors fail the attempt as `HttpUnavailable`, which the
    task's `retries` retry; a 4xx fails at once with the status and the body's start.

    Example:
        scores = http_task("score", "http://scorer:8000/score", method="POST",
                           json={"rows": rows}, headers={"Authorization": "secret://SCORER"},
                           retries=3, retry_delay=2, timeout=60)
    """
    tdef = KindTaskDef("http", None,
                       {"method": method, "headers": headers or {}, "output": output,
                        "request_timeout": request_timeout},
                       name=name, explicit=True, signature=_HTTP_SIGNATURE, **options)
    if not (isinstance(url, str) and url.strip()) and not _has_ref(url):
        tdef.problems.append(Problem(
            message=f"http_task needs a URL, got {url!r}", task=tdef.name,
            hint='http_task("health", "https://api.example.com/health")'))
    return tdef(url, params, json, data)


__all__ = ["KINDS", "KindTaskDef", "http", "http_task", "run_kind", "shell", "sql", "sql_task",
           "use_runtimes"]
