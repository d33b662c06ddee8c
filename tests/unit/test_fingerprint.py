"""graph/fingerprint.py: what a task's fingerprint is made of — its code, the project code it
calls, and the values it reads (module globals, project-module attributes, closure
variables), hashed by content and stable across processes. Pure: functions and values in,
digests out."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import socket
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cadenza import task
from cadenza.graph.fingerprint import (
    UnhashableValue,
    cache_key,
    code_fingerprint,
    stable_digest,
    task_fingerprint,
)
from tests.pipelines import fingerprint_settings

HERE = sys.modules[__name__]
log = logging.getLogger(__name__)

SCALE = 2
CONFIG: dict[str, Any] = {"lr": 0.1, "layers": [64, 32], "nested": {"drop": 0.5}}
TAGS = {"a", "b", "c"}
ARRAY = np.arange(10_000, dtype=np.float64)
FRAME = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})


@dataclasses.dataclass
class Params:
    alpha: float
    names: list[str]


class Plain:
    """Default repr shows an address: the digest must not."""

    def __init__(self, n: int) -> None:
        self.n = n


PARAMS = Params(alpha=0.5, names=["x"])
PLAIN = Plain(1)


def scaled(x: int) -> int:
    return x * SCALE


def uses_config(x: float) -> float:
    return x * CONFIG["lr"]


def read_config() -> float:
    return float(CONFIG["lr"])


def through_helper(x: float) -> float:
    return x * read_config()


def via_module(x: int) -> int:
    return x * fingerprint_settings.SCALE


def via_module_helper(x: int) -> int:
    return x * fingerprint_settings.factor()


def offset_helper() -> int:
    return fingerprint_settings.OFFSET


def via_module_twice(x: int) -> int:
    return x * fingerprint_settings.SCALE + offset_helper()


def uses_numpy(x: float) -> float:
    return float(np.sqrt(x))


def uses_builtins(xs: list[int]) -> int:
    log.info("summing %d", len(xs))
    return sum(sorted(xs)) + len(xs)


def values_of(fn: Any) -> dict[str, str]:
    return dict(task_fingerprint(fn).values)


# -- globals --------------------------------------------------------------------------------


def test_a_module_constant_is_part_of_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    before = task_fingerprint(scaled)
    assert set(before.values) == {"global SCALE"}
    monkeypatch.setattr(HERE, "SCALE", 100)
    after = task_fingerprint(scaled)
    assert after.values["global SCALE"] != before.values["global SCALE"]
    assert after.code == before.code  # the code did not change, its input did
    monkeypatch.setattr(HERE, "SCALE", 2)
    assert task_fingerprint(scaled) == before  # recomputed, not cached per function


def test_a_mutated_dict_changes_the_fingerprint_directly_and_through_a_helper(
        monkeypatch: pytest.MonkeyPatch) -> None:
    direct, helper = task_fingerprint(uses_config), task_fingerprint(through_helper)
    assert set(direct.values) == {"global CONFIG"} == set(helper.values)
    assert "read_config" in helper.functions
    monkeypatch.setitem(CONFIG["nested"], "drop", 0.6)  # deep inside
    assert task_fingerprint(uses_config).values != direct.values
    assert task_fingerprint(through_helper).values != helper.values


def test_attributes_of_a_project_module_are_values_too(monkeypatch: pytest.MonkeyPatch) -> None:
    before = values_of(via_module)
    assert "global fingerprint_settings.SCALE" in before
    monkeypatch.setattr(fingerprint_settings, "SCALE", 4)
    assert values_of(via_module) != before

    # The task and its helper read different attributes of one module: both count.
    assert {"global fingerprint_settings.SCALE", "global fingerprint_settings.OFFSET"} <= set(
        values_of(via_module_twice))

    through = task_fingerprint(via_module_helper)
    assert "factor" in through.functions and "global CONFIG" in through.values
    monkeypatch.setitem(fingerprint_settings.CONFIG, "factor", 5)
    assert task_fingerprint(via_module_helper).values != through.values


def test_a_closure_variable_is_part_of_the_fingerprint() -> None:
    def make(k: Any) -> Any:
        def inner(x: int) -> Any:
            return x * k

        return inner

    assert values_of(make(2)) == values_of(make(2))
    assert values_of(make(2)) != values_of(make(3))
    assert set(values_of(make([1, 2]))) == {"closure k"}
    assert values_of(make([1, 2])) != values_of(make([1, 3]))
    assert task_fingerprint(make(2)).code == task_fingerprint(make(3)).code


def test_a_task_def_is_fingerprinted_through_its_function(monkeypatch: pytest.MonkeyPatch) -> None:
    t = task(cache=True)(scaled)
    before = task_fingerprint(t)
    monkeypatch.setattr(HERE, "SCALE", 7)
    assert task_fingerprint(t).values != before.values


@task(cache=True)
def doubled(x: int) -> int:
    return x * 2


def calls_a_task_and_a_cached_helper(x: int) -> int:
    return doubled.fn(x) + memo(x)


@functools.cache
def memo(x: int) -> int:
    return x * SCALE


def test_tasks_and_wrapped_helpers_are_followed_as_code(monkeypatch: pytest.MonkeyPatch) -> None:
    fp = task_fingerprint(calls_a_task_and_a_cached_helper)
    assert {"doubled", "memo"} <= set(fp.functions)
    assert set(fp.values) == {"global SCALE"}  # read by the helper behind functools.cache
    monkeypatch.setattr(HERE, "SCALE", 5)
    assert task_fingerprint(calls_a_task_and_a_cached_helper).values != fp.values


def test_a_library_decorator_on_a_project_helper_counts_its_version_and_our_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cachetools_func = pytest.importorskip("cachetools.func")
    from importlib.metadata import version

    @cachetools_func.lru_cache(maxsize=4)
    def helper() -> int:
        return SCALE

    def work(x: int) -> int:
        return helper() * x

    fp = task_fingerprint(work)
    assert fp.values["closure helper"] == f"cachetools=={version('cachetools')}"
    assert "global SCALE" in fp.values  # read by our function behind the decorator
    monkeypatch.setattr(HERE, "SCALE", 9)
    assert task_fingerprint(work).values != fp.values


def test_third_party_modules_count_by_distribution_version_builtins_and_stdlib_not_at_all(
) -> None:
    assert values_of(uses_numpy) == {"global np": f"numpy=={np.__version__}"}
    assert values_of(uses_builtins) == {}  # sum, sorted, len: builtins; log: a logger


def test_functions_and_classes_as_globals_count_as_code_not_value() -> None:
    def builds() -> Any:
        return Params(alpha=1.0, names=[])

    fp = task_fingerprint(builds)
    assert "Params" in fp.functions and fp.values == {}


# -- value digests --------------------------------------------------------------------------


def test_containers_hash_by_content_with_type_and_order_rules() -> None:
    d = stable_digest
    assert d({"a": 1, "b": [1, 2]}) == d({"b": [1, 2], "a": 1})  # dict key order does not count
    assert d([1, 2]) != d([2, 1])  # list order does
    assert d([1, 2]) != d((1, 2))
    assert d(1) != d(1.0) != d(True) and d(1) != d("1")
    assert d({1: "a"}) != d({"1": "a"})
    assert d(OrderedDict(a=1)) != d({"a": 1})
    many = [f"item{i}" for i in range(200)]
    grown = set(many[100:]) | {"gone"}  # another insertion history, another iteration order
    grown.update(many[:100])
    grown.discard("gone")
    assert d(set(many)) == d(grown) != d(set(many[1:]))
    assert d(frozenset(many)) == d(frozenset(grown)) != d(set(many))
    nested: list[Any] = [1]
    nested.append(nested)  # a cycle is hashed, not followed forever
    assert d(nested) == d(nested)


def test_arrays_and_frames_hash_their_content_not_their_repr() -> None:
    changed = ARRAY.copy()
    changed[5000] = -1.0  # hidden by the "..." of the repr
    assert repr(changed) == repr(ARRAY)
    assert stable_digest(changed) != stable_digest(ARRAY)
    assert stable_digest(ARRAY.copy()) == stable_digest(ARRAY)
    assert stable_digest(ARRAY.astype(np.float32)) != stable_digest(ARRAY)
    assert stable_digest(np.float64(1.5)) != stable_digest(np.float32(1.5))

    other = FRAME.copy()
    assert stable_digest(other) == stable_digest(FRAME)
    other.loc[1, "x"] = 20
    assert stable_digest(other) != stable_digest(FRAME)
    assert stable_digest(FRAME["y"]) != stable_digest(FRAME["x"])


def test_objects_hash_by_their_state_never_by_their_address() -> None:
    assert "0x" in repr(PLAIN)
    assert stable_digest(Plain(1)) == stable_digest(PLAIN)
    assert stable_digest(Plain(2)) != stable_digest(PLAIN)
    assert stable_digest(Params(alpha=0.5, names=["x"])) == stable_digest(PARAMS)
    assert stable_digest(object()) == stable_digest(object())


@pytest.mark.parametrize("make", [
    threading.Lock,
    lambda: open(__file__),  # noqa: SIM115 - an open file, closed by the test
    lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    lambda: (i for i in range(3)),
    lambda: {"client": {"lock": threading.RLock()}},  # deep inside a container
], ids=["lock", "file", "socket", "generator", "nested-lock"])
def test_values_that_cannot_be_hashed_stably_are_refused(make: Any) -> None:
    value = make()
    try:
        with pytest.raises(UnhashableValue):
            stable_digest(value)
    finally:
        close = getattr(value, "close", None)
        if close is not None:
            close()


def test_an_unhashable_global_makes_the_task_uncacheable_naming_it() -> None:
    lock = threading.Lock()

    def guarded(x: int) -> int:
        with lock:
            return x

    fp = task_fingerprint(guarded)
    assert not fp.is_cacheable
    [bad] = fp.unhashable
    assert bad.name == "closure lock" and "lock" in bad.type_name
    assert task_fingerprint(scaled).is_cacheable


class Client:
    """Stands for a database or HTTP client: fine to pickle, except for the lock it holds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()


CLIENT = Client("db://x")


def queries(n: int) -> str:
    return f"{CLIENT.url}?n={n}"


def test_the_warning_names_the_global_what_it_holds_and_the_fix() -> None:
    from types import SimpleNamespace

    from cadenza.engine.cache import uncacheable_message

    fp = task_fingerprint(queries)
    [bad] = fp.unhashable
    assert bad.name == "global CLIENT" and bad.type_name.endswith("test_fingerprint.Client")
    line = uncacheable_message("etl", SimpleNamespace(id="load"), fp, same_function=2)  # type: ignore[arg-type]
    assert "\n" not in line
    assert line.startswith("pipeline 'etl', task 'load' (and 2 more tasks of its function): "
                           "global CLIENT (a ")
    assert "it holds a _thread.lock" in line
    assert line.endswith("not cached and runs every time. Fix: create the client inside the "
                         "task, or pass what it needs as a parameter.")


# -- stability ------------------------------------------------------------------------------


def test_the_same_file_under_two_module_names_has_the_same_fingerprint(tmp_path: Any) -> None:
    import importlib.util

    path = tmp_path / "twice.py"
    path.write_text(
        "import logging\n"
        "log = logging.getLogger(__name__)\n"
        "SCALE = 2\n"
        "CONFIG = {'k': {1, 2, 3}}\n"
        "class Box:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n"
        "BOX = Box(3)\n"
        "def helper():\n"
        "    return CONFIG['k']\n"
        "def work(x):\n"
        "    log.info('x')\n"
        "    return x * SCALE + len(helper()) + BOX.v\n"
    )
    prints = []
    for name in ("script_main", "twice", "pipelines.twice"):
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        prints.append(task_fingerprint(module.work))
    assert prints[0] == prints[1] == prints[2]
    assert set(prints[0].values) == {"global SCALE", "global CONFIG", "global BOX"}


def test_the_code_fingerprint_and_the_key_ignore_values_only_when_there_are_none() -> None:
    assert code_fingerprint(scaled) == task_fingerprint(scaled).code
    plain = cache_key(fingerprint="f", version=None, inputs={"x": "1"})
    assert cache_key(fingerprint="f", version=None, inputs={"x": "1"}, values={}) == plain
    assert cache_key(fingerprint="f", version=None, inputs={"x": "1"},
                     values={"global SCALE": "a"}) != plain


def test_a_fingerprint_is_cheap_to_recompute() -> None:
    """The code part is cached per function; values are re-read on each call (no timing
    here: the bench measures it). The second call must not re-read any source file."""
    task_fingerprint(through_helper)
    import linecache

    calls = itertools.count()
    real = linecache.getlines

    def counting(*args: Any, **kw: Any) -> Any:
        next(calls)
        return real(*args, **kw)

    linecache.getlines = counting
    try:
        task_fingerprint(through_helper)
    finally:
        linecache.getlines = real
    assert next(calls) == 0
