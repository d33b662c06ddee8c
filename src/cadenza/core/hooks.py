"""What the top-level package hands the layers below it.

Authoring may import neither the engine nor the integrations (STYLE §1), yet
`PipelineDef.run` starts a run, a shell/sql/http task runs its command, query or request,
and `@task.spark` builds a Spark task. `cadenza/__init__.py` sets these when the package is
imported, in every process (a worker's too), and authoring reads them when called:

- `runner`: what `PipelineDef.run` hands itself, its parameters and executor to;
- `runtimes`: the function that runs each task kind ("shell", "sql", "http");
- `task_kinds`: `task.<name>(...)` calls `task_kinds[name]`.

They live here rather than in the authoring modules that read them so that setting them
imports nothing: `import cadenza` then loads authoring only when a name of it is first used,
and a worker process (whose modules are under `cadenza`) never does (~60 M instructions of
the forkserver's preload, on a one-task script's critical path: bench/cold_start.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# (pipeline, params, executor) -> RunResult; Any: core sees neither the pipeline (what
# carries a Plan, graph/plan.py HasPlan) nor the result.
Runner = Callable[[Any, Mapping[str, Any], "str | None"], Any]
Runtime = Callable[[Any, Mapping[str, Any]], Any]

runner: Runner | None = None
runtimes: dict[str, Runtime] = {}
task_kinds: dict[str, Callable[..., Any]] = {}
