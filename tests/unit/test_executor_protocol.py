"""Executors declare their capabilities on the protocol; the engine reads them as attributes.

`executors.base.Executor` lists `in_process`, `runs_in_caller`, `places_resources`,
`timeout_note()` and `preflight()`; every
registered executor sets them, and no module of `engine/` reads one with getattr/hasattr
(a missing capability is then an AttributeError, not a silent default)."""

from __future__ import annotations

import ast
import inspect
import threading
from pathlib import Path

import pytest

from cadenza.executors import base
from cadenza.executors.base import Executor, executor_names

ENGINE = Path(base.__file__).resolve().parent.parent / "engine"
CAPABILITIES = {  # (in_process, runs_in_caller, places_resources)
    "inline": (True, True, False),
    "threads": (True, False, False),
    "processes": (False, False, False),
    "ray": (False, False, True),  # the cluster places resources (ray is not imported here)
}


def protocol_members() -> set[str]:
    data = set(Executor.__annotations__)
    methods = {n for n, v in vars(Executor).items() if inspect.isfunction(v)
               and not n.startswith("_")}
    return data | methods


def test_the_protocol_declares_the_capabilities() -> None:
    assert {"in_process", "runs_in_caller", "places_resources", "timeout_note", "preflight",
            "name"} <= protocol_members()


@pytest.mark.parametrize("name", executor_names())
def test_every_registered_executor_declares_every_protocol_member(name: str) -> None:
    cls = base._load(name)
    missing = sorted(m for m in protocol_members() if not hasattr(cls, m))
    assert missing == [], f"executor '{name}' does not declare {missing}"
    assert isinstance(cls.in_process, bool) and isinstance(cls.runs_in_caller, bool)
    assert isinstance(cls.places_resources, bool)


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_the_built_in_executors_capabilities(name: str) -> None:
    cls = base._load(name)
    assert (cls.in_process, cls.runs_in_caller, cls.places_resources) == CAPABILITIES[name]
    ex = cls(max_workers=1) if name != "inline" else cls()  # not started: no workers
    note = ex.timeout_note()
    if name == "threads":
        assert note and "blocking call" in note
    else:
        assert note is None  # processes, ray kill; inline on the main thread uses SIGALRM


def test_inline_off_the_main_thread_says_how_a_timeout_is_enforced() -> None:
    ex = base._load("inline")()
    notes: list[str | None] = []
    t = threading.Thread(target=lambda: notes.append(ex.timeout_note()))
    t.start()
    t.join()
    assert notes[0] and "next Python bytecode" in notes[0]


def getattr_reads(tree: ast.AST, members: set[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in members):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: p.name)
def test_the_engine_reads_no_capability_with_getattr(path: Path) -> None:
    members = protocol_members() - {"name"}
    assert getattr_reads(ast.parse(path.read_text()), members) == []


def test_the_check_finds_a_getattr_read() -> None:
    tree = ast.parse("getattr(ex, 'runs_in_caller', False)\nhasattr(ex, 'timeout_note')\n"
                     "getattr(ex, 'other', 1)\n")
    assert getattr_reads(tree, protocol_members()) == [
        "line 1: getattr(..., 'runs_in_caller')", "line 2: hasattr(..., 'timeout_note')"]
