"""Which pipeline file Cadenza is importing right now, if any.

Cadenza imports user files to find their pipelines (`cadenza run/plan/pipelines list`, the
scheduler, resume). A file that starts a run at its top level (`p.run()` without an
`if __name__ == "__main__":` guard) would then run the pipeline as a side effect of being
looked at. The loaders mark the import with `importing_file(path)`; `PipelineDef.run` asks
`file_being_imported()` and refuses with the fix instead. Lives in core so that the
surfaces (cli), the engine (resume) and authoring can share it without importing each other.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_importing: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "cadenza_importing_file", default=None
)


@contextmanager
def importing_file(path: Path) -> Iterator[None]:
    """Mark the current import as Cadenza looking for pipelines in `path`."""
    token = _importing.set(path)
    try:
        yield
    finally:
        _importing.reset(token)


def file_being_imported() -> Path | None:
    """The file Cadenza is importing to find pipelines, or None."""
    return _importing.get()
