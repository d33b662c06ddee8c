"""`plan_pipeline`: which tasks a run would serve from the cache and which it would run, and why
(SPEC §3), checked against what the next run really does."""

from __future__ import annotations

import importlib.util
import itertools
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cadenza import ParameterError, RunState, TaskState
from cadenza.core import clock
from cadenza.core import settings as settings_mod
from cadenza.engine.preview import (
    CACHED,
    WILL_RUN,
    PlanEntry,
    differences,
    format_plan,
    plan_pipeline,
)

S = TaskState

MODULE = """
from cadenza import pipeline, task

def helper(n):
    return n + 1{helper_extra}

@task(cache=True)
def prepare(n: int) -> int:
    return helper(n) * 2

@task(cache=True)
def items(n: int) -> list[int]:
    return [i * 1000 for i in range(n)]

@task(cache=True)
def square(x: int) -> int:
    return x * x

@task(cache=True, version={version!r}{expiration})
def total(prepared: int, squares: list[int], extra: list[int]) -> int:
    return prepared + sum(squares) + sum(extra)

@task
def report(value: int) -> str:
    return f"total={{value}}"

@pipeline
def planned(n: int = 3, xs: list[int] = [1, 2, 3]):
    squares = square.expand(x=items(n))
    extra = square.with_options(name="square_xs").expand(x=xs)
    report(total(prepare(n), squares, extra))
"""

_counter = itertools.count()


class Project:
    """A pipeline module in tmp_path that a test edits and reloads, as a user would."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "plan_user.py"
        self.fmt: dict[str, Any] = {"helper_extra": "", "version": "1", "expiration": ""}

    def load(self, **changes: Any) -> Any:
        self.fmt.update(changes)
        self.path.write_text(textwrap.dedent(MODULE.format(**self.fmt)))
        name = f"plan_user_{next(_counter)}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.planned


@pytest.fixture
def project(cadenza_env: settings_mod.Settings, tmp_path: Path) -> Project:
    # Lists of a few ints go to the artifact store too, so the plan has to load the list a
    # mapped task expands over from there.
    settings_mod.override(inline_limit_bytes=8)
    return Project(tmp_path)


def _label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def by_label(entries: list[PlanEntry]) -> dict[str, tuple[str, str]]:
    return {e.label: (e.decision, e.reason) for e in entries}


def test_the_first_plan_finds_no_entries(project: Project) -> None:
    plan = by_label(plan_pipeline(project.load(), {}))

    assert plan == {
        "prepare": (WILL_RUN, "no entry"),
        "items": (WILL_RUN, "no entry"),
        "square[*]": (WILL_RUN, "upstream will run"),
        "square_xs[*]": (WILL_RUN, "0 of 3 instances cached"),
        "square_xs[0]": (WILL_RUN, "no entry"),
        "square_xs[1]": (WILL_RUN, "no entry"),
        "square_xs[2]": (WILL_RUN, "no entry"),
        "total": (WILL_RUN, "upstream will run"),
        "report": (WILL_RUN, "cache off"),
    }


def test_after_a_run_everything_cached_is_planned_as_cached(project: Project) -> None:
    first = project.load().run(executor="inline")
    assert first.state is RunState.SUCCESS

    entries = plan_pipeline(project.load(), {})
    plan = by_label(entries)
    assert plan["square[*]"] == (CACHED, "3 of 3 instances cached")
    assert plan["report"] == (WILL_RUN, "cache off")
    for label in ("prepare", "items", "square[0]", "square[2]", "square_xs[1]", "total"):
        decision, reason = plan[label]
        task_id = label.split("[")[0]
        assert decision == CACHED, label
        assert reason == f"cache hit (from run {first.run_id} task {label})", label
        assert task_id in reason
    entry = next(e for e in entries if e.label == "total")
    assert entry.origin == {
        "run_id": first.run_id,
        "task_id": "total",
        "map_index": -1,
        "attempt": 1,
    }
    # The plan is right: the next run serves exactly those from the cache.
    second = project.load().run(executor="inline")
    states = {  # every instance; not the summary rows of mapped tasks
        _label(t.task_id, t.map_index): t.state for t in second.instances if t.map_count is None
    }
    predicted = {e.label: e.decision for e in entries if e.map_index is not None}
    assert predicted == {
        label: (CACHED if state is S.CACHED else WILL_RUN) for label, state in states.items()
    }
    assert states["report"] is S.SUCCESS and states["square[1]"] is S.CACHED
    text = format_plan(entries)
    assert re.search(r"^square\[\*\] +cached +3 of 3 instances cached$", text, re.MULTILINE)


def test_editing_a_helper_names_it_and_its_downstream_will_run(project: Project) -> None:
    project.load().run(executor="inline")

    plan = by_label(plan_pipeline(project.load(helper_extra=" + 0"), {}))

    assert plan["prepare"] == (WILL_RUN, "code changed (function helper)")
    assert plan["total"] == (WILL_RUN, "upstream will run")
    assert plan["report"] == (WILL_RUN, "cache off")
    assert plan["items"][0] == CACHED and plan["square[*]"][0] == CACHED
    result = project.load().run(executor="inline")
    assert result.task_states["prepare"] is S.SUCCESS and result.task_states["items"] is S.CACHED


def test_a_different_parameter_names_the_input(project: Project) -> None:
    project.load().run(executor="inline")

    entries = plan_pipeline(project.load(), {"n": "4", "xs": [1, 2, 5]})
    plan = by_label(entries)

    assert plan["prepare"] == (WILL_RUN, "input changed (n)")
    assert plan["items"] == (WILL_RUN, "input changed (n)")
    assert plan["square[*]"] == (WILL_RUN, "upstream will run")
    assert plan["square_xs[*]"] == (WILL_RUN, "2 of 3 instances cached")
    assert plan["square_xs[0]"][0] == CACHED and plan["square_xs[1]"][0] == CACHED
    assert plan["square_xs[2]"] == (WILL_RUN, "input changed (x)")
    assert plan["total"] == (WILL_RUN, "upstream will run")


def test_a_longer_list_plans_the_new_instance_as_having_no_entry(project: Project) -> None:
    project.load().run(executor="inline")
    plan = by_label(plan_pipeline(project.load(), {"xs": [1, 2, 3, 4]}))
    assert plan["square_xs[*]"] == (WILL_RUN, "3 of 4 instances cached")
    assert plan["square_xs[3]"] == (WILL_RUN, "no entry")


def test_a_mapped_task_over_a_cached_upstream_list_is_planned_per_instance(
    project: Project,
) -> None:
    """`items` is cached and stored as an artifact: the plan loads its list to enumerate
    `square`'s instances, and a new element is the only one that runs."""
    project.load().run(executor="inline", n=2)
    project.load().run(executor="inline", n=3)  # caches items(3) and square[2]
    plan = by_label(plan_pipeline(project.load(), {"n": 3}))
    assert plan["items"][0] == CACHED
    assert plan["square[*]"] == (CACHED, "3 of 3 instances cached")
    assert [plan[f"square[{i}]"][0] for i in range(3)] == [CACHED] * 3


def test_a_version_bump_is_reported(project: Project) -> None:
    project.load().run(executor="inline")
    plan = by_label(plan_pipeline(project.load(version="2"), {}))
    assert plan["total"] == (WILL_RUN, "version changed")
    assert plan["prepare"][0] == CACHED


def test_an_expired_entry_is_reported(project: Project) -> None:
    planned = project.load(expiration=", cache_expiration=3600")
    planned.run(executor="inline")
    assert by_label(plan_pipeline(planned, {}))["total"][0] == CACHED

    later = clock.FakeClock(clock.now() + timedelta(hours=2))
    with clock.use_clock(later):
        plan = by_label(plan_pipeline(planned, {}))
    assert plan["total"] == (WILL_RUN, "expired")
    assert plan["prepare"][0] == CACHED  # no expiration on it


def test_plan_runs_nothing_and_writes_no_run(project: Project) -> None:
    from cadenza.store import open_store

    planned = project.load()
    plan_pipeline(planned, {})
    plan_pipeline(planned, {"n": 5})
    store = open_store(settings_mod.get_settings().database_url)
    assert store.list_runs() == []


def test_wrong_parameters_are_refused_as_a_run_would(project: Project) -> None:
    with pytest.raises(ParameterError, match="unknown parameter 'm'"):
        plan_pipeline(project.load(), {"m": 1})


def test_changed_values_are_named_after_code_and_before_version() -> None:
    old = {"fingerprint": "a", "functions": {"f": "1"}, "version": None, "inputs": {},
           "values": {"global SCALE": "x", "closure k": "y", "global np": "numpy==1.26.4"}}
    new = {"fingerprint": "a", "functions": {"f": "1"}, "version": "2", "inputs": {},
           "values": {"global SCALE": "z", "global CONFIG": "w", "global np": "numpy==2.1.0"}}
    assert differences(old, new) == [
        "closure k no longer read",
        "global CONFIG now read",
        "global SCALE changed",
        "global np changed (numpy 1.26.4 -> 2.1.0)",
        "version changed",
    ]
    no_values = {k: v for k, v in old.items() if k != "values"}
    assert differences(no_values, no_values) == []


def test_several_changes_are_all_listed_most_telling_first() -> None:
    old = {
        "fingerprint": "a",
        "functions": {"f": "1", "g": "2"},
        "version": "1",
        "inputs": {"n": "x", "m": "y"},
    }
    new = {
        "fingerprint": "b",
        "functions": {"f": "9", "g": "2", "h": "3"},
        "version": "2",
        "inputs": {"n": "z", "m": "y"},
    }
    assert differences(old, new) == [
        "code changed (functions f, h)",
        "version changed",
        "input changed (n)",
    ]
    assert differences(old, old) == []
