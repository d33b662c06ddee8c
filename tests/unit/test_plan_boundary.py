"""The engine, triggers and CLI read pipelines only through the Plan (graph/plan.py).

An AST check over their source: no `getattr(x, "<pipeline field>")` (the way they used to
read a `PipelineDef` typed as Any), no parameter named like a pipeline typed `Any` or left
untyped, and no import of `PipelineDef`/`cadenza.authoring.pipeline`. import-linter keeps
the engine from importing authoring at all; this keeps the reading typed too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cadenza

SRC = Path(cadenza.__file__).parent
PACKAGES = ("engine", "triggers", "cli")

# What a PipelineDef carries and a Plan now types (the fields getattr used to fish for).
PIPELINE_FIELDS = frozenset({
    "options", "tracking", "sla", "schedule", "triggers", "timezone", "start_date", "end_date",
    "catchup", "max_active_runs", "tags", "source_file", "validate_params", "params", "graph",
    "description", "module", "plan", "on_success", "on_failure", "on_sla_miss", "parameters",
})
PIPELINE_NAMES = frozenset({"pipeline", "pipe", "pipeline_def", "pipelines", "pipes"})


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (SRC / pkg).rglob("*.py"))


def _problems(path: Path, root: Path = SRC) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root)
    found: list[str] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr"} and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in PIPELINE_FIELDS):
            found.append(f"{where}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            for arg in args:
                if arg.arg not in PIPELINE_NAMES:
                    continue
                ann = ast.unparse(arg.annotation) if arg.annotation is not None else None
                untyped = arg.annotation is None or any(
                    isinstance(n, ast.Name) and n.id == "Any" for n in ast.walk(arg.annotation))
                if untyped:
                    found.append(f"{where}:{node.lineno}: {node.name}({arg.arg}: {ann})")
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = {a.name for a in node.names}
            if node.module == "cadenza.authoring.pipeline" or (
                    node.module in {"cadenza", "cadenza.authoring"} and "PipelineDef" in names):
                found.append(f"{where}:{node.lineno}: imports PipelineDef from {node.module}")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_reads_pipelines_through_the_plan(path: Path) -> None:
    assert _problems(path) == []


def test_the_check_finds_an_authoring_read(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "from typing import Any\n"
        "from cadenza import PipelineDef\n"
        "def start(pipeline: Any, pipe, pipes: list[Any], plan: Plan) -> None:\n"
        "    getattr(pipeline, 'tracking', None)\n"
        "    hasattr(pipe, 'graph')\n"
        "    getattr(executor, 'timeout_note', None)\n"
    )
    problems = sorted(p.split(": ", 1)[1] for p in _problems(bad, root=tmp_path))
    assert problems == sorted([
        "imports PipelineDef from cadenza",
        "start(pipeline: Any)",
        "start(pipe: None)",
        "start(pipes: list[Any])",
        "getattr(..., 'tracking')",
        "hasattr(..., 'graph')",
    ])
