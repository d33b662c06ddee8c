"""The metadata store: runs, task instances, attempts, pools, metrics, artifact lineage and
asset versions in SQLAlchemy 2 (and, for a run on a SQLite file, on plain `sqlite3`).

Public API: `open_store()`, `RunStore`, `upgrade_database()`, `ArtifactNotFound`, `mask_url()`, and `retention` (what `cadenza gc` deletes). Everything else in this package
(the `*Row` classes, engine set-up) is internal. The store imports only `cadenza.core`.

Importing this package imports no SQLAlchemy: `open_store` on a SQLite file runs a run
without it (store/opening.py); the other names load their modules on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cadenza.core.errors import ArtifactNotFound
from cadenza.store.failures import mask_url
from cadenza.store.opening import open_store

if TYPE_CHECKING:
    from cadenza.store import retention
    from cadenza.store.db import upgrade_database
    from cadenza.store.runs import RunStore

_LAZY = {"RunStore": "cadenza.store.runs", "upgrade_database": "cadenza.store.db"}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "retention":
        return importlib.import_module("cadenza.store.retention")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cadenza.store' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["ArtifactNotFound", "RunStore", "mask_url", "open_store", "retention", "upgrade_database"]
