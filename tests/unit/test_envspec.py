"""Task environments at definition time: option checks, the normal form, the cache key."""

from __future__ import annotations

import pytest

from cadenza import DefinitionError, pipeline, task
from cadenza.engine.cache import cache_key_parts, key_from_parts
from cadenza.graph.envspec import env_spec, normalize_requirements
from cadenza.graph.model import TaskNode


def noop() -> int:
    return 1


def node_of(**options: object) -> TaskNode:
    t = task(**options)(noop)  # type: ignore[call-overload]

    @pipeline
    def one() -> None:
        t()

    return one.graph.nodes["noop"]


def key_of(**options: object) -> str:
    return key_from_parts(cache_key_parts(node_of(**options), lambda marker: None))


def test_the_requirement_set_is_normalised() -> None:
    assert normalize_requirements(["Six == 1.16.0", "six==1.16.0", "Typing_Extensions>=4"]) == (
        "six==1.16.0", "typing-extensions>=4")
    assert normalize_requirements(['attrs; python_version  <  "3.12"']) == (
        'attrs; python_version < "3.12"',)
    assert normalize_requirements(["Pkg @ https://example.org/Pkg-1.0.tar.gz"]) == (
        "pkg@https://example.org/Pkg-1.0.tar.gz",)
    assert env_spec((), None) is None
    assert env_spec((), "3.11") == {"requirements": [], "python": "3.11"}


def test_the_cache_key_changes_with_the_requirements_and_python_only() -> None:
    plain = key_of()
    pinned = key_of(requirements=["six==1.16.0"])
    assert pinned != plain
    assert key_of(requirements=["six==1.15.0"]) != pinned
    assert key_of(requirements=["six==1.16.0"], python="3.11") != pinned
    # The same set spelled otherwise is the same environment and the same key.
    assert key_of(requirements=["Six == 1.16.0", "six==1.16.0"]) == pinned
    assert key_of(requirements=["six==1.16.0", "attrs==23.1.0"]) == key_of(
        requirements=["attrs==23.1.0", "six==1.16.0"])
    parts = cache_key_parts(node_of(requirements=["six==1.16.0"], python="3.11"),
                            lambda marker: None)
    assert parts["env"] == {"requirements": ["six==1.16.0"], "python": "3.11"}
    # A task without an environment keeps the key it had before environments were keyed.
    assert "env" not in cache_key_parts(node_of(), lambda marker: None)


@pytest.mark.parametrize(("options", "expected"), [
    ({"requirements": "six==1.16.0"}, "requirements must be a list"),
    ({"requirements": [""]}, "non-empty strings"),
    ({"requirements": ["--index-url https://x"]}, "is a pip option"),
    ({"requirements": ["==1.0"]}, "does not start with a package name"),
    ({"python": "python3"}, 'python must be a Python version like "3.11"'),
    ({"python": 3.11}, None),
])
def test_bad_options_fail_at_definition_naming_the_task_and_the_fix(
        options: dict[str, object], expected: str | None) -> None:
    if expected is None:
        assert node_of(**options).options.python == "3.11"
        return
    with pytest.raises(DefinitionError) as info:
        node_of(**options)
    text = str(info.value)
    assert expected in text and "task 'noop'" in text and "@task(" in text


def test_options_are_kept_on_the_node_and_shown_in_the_plan() -> None:
    node = node_of(requirements=["six==1.16.0"], python="3.11")
    assert node.options.requirements == ("six==1.16.0",)
    assert node.options.python == "3.11"
    assert node.options.isolated and not node_of().options.isolated


def test_the_threads_timeout_warning_leaves_out_env_tasks_which_are_killed() -> None:
    from cadenza.engine.api import warn_advisory_timeouts
    from cadenza.executors.threads import ThreadExecutor

    def timed(**options: object) -> object:
        t = task(timeout=5, **options)(noop)  # type: ignore[call-overload]

        @pipeline
        def one() -> None:
            t()

        return one

    threads = ThreadExecutor(max_workers=1)
    assert warn_advisory_timeouts(timed(), threads) is not None  # type: ignore[arg-type]
    assert warn_advisory_timeouts(timed(requirements=["six==1.16.0"]),  # type: ignore[arg-type]
                                  threads) is None
