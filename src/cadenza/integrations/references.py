"""`secret://NAME` and `env://NAME` in the settings of shell, SQL and HTTP tasks.

A database URL, a header or an environment value may name a secret (`cadenza secrets set
NAME`, read from the running task's context: its value is masked in the task's log and
error) or an environment variable of the worker, instead of holding the value itself. Resolved
inside the task at run time, so the value never enters the pipeline's definition, its cache
key or its description. A header or environment value may also hold one among other text
(`"Bearer secret://API_TOKEN"`); a URL must be the reference as a whole.
"""

from __future__ import annotations

import os
import re

from cadenza.core.context import current_context, task_where
from cadenza.core.errors import ExternalError

SECRET = "secret://"
ENV = "env://"
_EMBEDDED = re.compile(r"(?:secret|env)://[A-Za-z_][A-Za-z0-9_.-]*")


def resolve(value: str, what: str, error: type[ExternalError]) -> str:
    """`value`, or the secret / environment variable it names. Raises `error` naming `what`
    and the fix when the name is not set."""
    if value.startswith(SECRET):
        name = value.removeprefix(SECRET)
        ctx = current_context()
        if ctx is None:
            raise error(f"{what} names the secret '{name}', and secrets exist only while a "
                        "pipeline runs", hint="run the task in a pipeline, or pass the value")
        try:
            return ctx.secrets[name]
        except KeyError as exc:
            raise error(f"{what} names the secret '{name}': {exc}", **task_where(),
                        hint=getattr(exc, "hint", None) or f"cadenza secrets set {name}",
                        ) from None
    if value.startswith(ENV):
        name = value.removeprefix(ENV)
        found = os.environ.get(name)
        if found is None:
            raise error(f"{what} names the environment variable {name}, which is not set in "
                        "the worker", **task_where(),
                        hint=f"export {name}=... before starting Cadenza (the workers inherit "
                        "the driver's environment)")
        return found
    return value


def resolve_embedded(value: str, what: str, error: type[ExternalError]) -> str:
    """`value` with every `secret://NAME` / `env://NAME` in it resolved, for a header or an
    environment value that holds one among other text: `"Bearer secret://API_TOKEN"`."""
    if "://" not in value:
        return value
    return _EMBEDDED.sub(lambda m: resolve(m.group(0), what, error), value)
