"""Every state change goes through the two tables (STYLE §4, issue 12): a scan of src/.

Only `core/states.py` makes a record with a new state (`move_run`, `reopen_run`,
`move_task`), and only the state owner `engine/active.py` assigns a live instance's state
(after `transition()` / `clear()` said the move is legal). Creating a record with its first
state (`RunRecord(state=QUEUED)`, a row read back from the store) is not a move.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cadenza

SRC = Path(cadenza.__file__).resolve().parent
ASSIGNS_STATE = {"engine/active.py"}
REPLACES_STATE = {"core/states.py"}


def _state_changes(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets.extend(t.elts)
            elif isinstance(t, ast.Starred):
                targets.append(t.value)
            elif isinstance(t, ast.Attribute) and t.attr == "state":
                found.append((node.lineno, "assigns .state"))
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if name == "replace" and any(k.arg == "state" for k in node.keywords):
                found.append((node.lineno, "replace(..., state=...)"))
            if name in ("setattr", "__setattr__") and any(
                    isinstance(a, ast.Constant) and a.value == "state" for a in node.args):
                found.append((node.lineno, "setattr(..., 'state', ...)"))
    return found


def test_no_state_is_changed_outside_the_tables_and_the_owner() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, what in _state_changes(ast.parse(path.read_text(), str(path))):
            if what == "assigns .state" and rel in ASSIGNS_STATE:
                continue
            if what == "replace(..., state=...)" and rel in REPLACES_STATE:
                continue
            offenders.append(f"src/cadenza/{rel}:{line}: {what}")
    assert offenders == [], (
        "a state changes outside core/states.py and engine/active.py; move it through "
        "move_run()/move_task() or the ActiveRun owner:\n" + "\n".join(offenders))


def test_the_scan_finds_each_kind_of_state_change() -> None:
    code = ("inst.state = S.PENDING\n"
            "a.b.state += 1\n"
            "x, inst.state = 1, 2\n"
            "counts[str(r.state)] = 1\n"  # reads a state: not a move
            "run = replace(run, state=RunState.FAILED)\n"
            "ti = dataclasses.replace(ti, state=x)\n"
            "setattr(inst, 'state', x)\n"
            "rec = RunRecord(state=RunState.QUEUED)\n"  # a new record: not a move
            "old = inst.state\n")
    assert [what for _, what in _state_changes(ast.parse(code))] == [
        "assigns .state", "assigns .state", "assigns .state", "replace(..., state=...)",
        "replace(..., state=...)", "setattr(..., 'state', ...)"]


def test_the_scan_reads_the_installed_sources() -> None:
    assert (SRC / "core" / "states.py").is_file()
    assert (SRC / "engine" / "active.py").is_file()
