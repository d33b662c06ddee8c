"""A cached task in its own environment whose requirement is not pinned, so that one
requirement set resolves to other versions as the index moves on (tests/integration/
test_env_lock.py pins the index's date with UV_EXCLUDE_NEWER)."""

from __future__ import annotations

from cadenza import pipeline, task


@task(requirements=["six"], cache=True)
def six_unpinned() -> str:
    import six  # from the task's own environment

    return str(six.__version__)


@pipeline
def unpinned() -> None:
    six_unpinned()
