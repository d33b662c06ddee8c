"""The CadenzaError tree (STYLE §5): every error Cadenza raises on purpose is a subclass a
caller can catch by what went wrong, and reads the same as before it had one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cadenza
from cadenza.artifacts.serializers import get_serializer
from cadenza.cli.params import split_pairs
from cadenza.core.context import get_context
from cadenza.core.errors import (
    ArtifactError,
    ArtifactNotFound,
    CadenzaError,
    DefinitionError,
    InternalError,
    NotFound,
    PipelineNotFound,
    Problem,
    RunNotFound,
    TaskNotFound,
    UsageError,
)
from cadenza.engine.resources import Capacity, ResourceLedger
from cadenza.triggers.cron import CronSchedule, schedule_of, to_utc
from cadenza.triggers.events import EventTrigger
from cadenza.triggers.sensors import FileSensor

SRC = Path(cadenza.__file__).parent


def _bare_cadenza_errors(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else None)
            if name == "CadenzaError":
                lines.append(node.lineno)
    return lines


def test_no_module_builds_a_bare_cadenza_error() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50  # the walk found the package
    found = {str(p.relative_to(SRC)): lines for p in files if (lines := _bare_cadenza_errors(p))}
    assert found == {}, "raise the CadenzaError subclass that says what went wrong"


def test_the_ast_check_sees_a_bare_raise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from cadenza.core import errors\n"
                   "def f():\n    raise errors.CadenzaError('x')\n"
                   "def g():\n    return CadenzaError('y')\n")
    assert _bare_cadenza_errors(bad) == [3, 5]


def test_a_single_definition_problem_reads_like_any_cadenza_error() -> None:
    err = DefinitionError.single("schedule 'x' is wrong", pipeline="p", task="t", hint="fix it")
    plain = CadenzaError("schedule 'x' is wrong", pipeline="p", task="t", hint="fix it")
    assert str(err) == str(plain) == "pipeline 'p', task 't': schedule 'x' is wrong\n  Fix: fix it"
    assert not err.is_listing
    assert err.problems == [Problem(message="schedule 'x' is wrong", task="t", hint="fix it")]
    assert err.to_dict() == {**plain.to_dict(), "type": "DefinitionError"}


def test_a_listing_definition_error_keeps_its_form() -> None:
    err = DefinitionError("p", [Problem(message="a", task="t", hint="h"), Problem(message="b")])
    assert err.is_listing
    assert str(err) == "2 problems in pipeline 'p':\n  task 't': a\n    Fix: h\n  b"
    assert (err.message, err.task, err.hint) == ("a", "t", "h")


@pytest.mark.parametrize("cls", [RunNotFound, PipelineNotFound, TaskNotFound, ArtifactNotFound])
def test_every_not_found_is_caught_as_not_found(cls: type[NotFound]) -> None:
    with pytest.raises(NotFound) as caught:
        raise cls("no such thing", hint="look again")
    assert str(caught.value) == "no such thing\n  Fix: look again"


@pytest.mark.parametrize(("call", "expected", "text"), [
    (lambda: CronSchedule("every day"), DefinitionError, "not a valid 5-field cron expression"),
    (lambda: schedule_of(3), DefinitionError, "schedule must be a cron string"),
    (lambda: FileSensor(""), DefinitionError, "FileSensor needs a glob pattern"),
    (lambda: FileSensor("*.csv", poke_interval=0), DefinitionError, "must be positive"),
    (lambda: EventTrigger("zmq://h/t"), DefinitionError, "unknown scheme"),
    (lambda: to_utc("yesterday"), UsageError, "is not a date or date-time"),
    (lambda: split_pairs(["n"], "--param"), UsageError, "expects NAME=VALUE"),
    (lambda: get_context(), UsageError, "outside a running task"),
    (lambda: get_serializer("no-such"), ArtifactError, "no serializer named 'no-such'"),
    (lambda: ResourceLedger(Capacity(cpu=1, memory_bytes=0)).acquire(
        "t", cpu=-1, memory_bytes=0, gpu_count=0), InternalError, "negative resource request"),
])
def test_raise_sites_use_the_subclass_that_names_the_mistake(
        call: object, expected: type[CadenzaError], text: str) -> None:
    assert callable(call)
    with pytest.raises(expected, match=text) as caught:
        call()
    assert type(caught.value) is expected
    if isinstance(caught.value, DefinitionError):
        assert not caught.value.is_listing
