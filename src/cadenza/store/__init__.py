"""The metadata store: runs, task instances, attempts, pools, metrics, artifact lineage and
asset versions in SQLAlchemy 2.

Public API: `open_store()`, `RunStore`, `upgrade_database()`, `ArtifactNotFound`, `mask_url()`, and `retention` (what `cadenza gc` deletes). Everything else in this package
(the `*Row` classes, engine set-up) is internal. The store imports only `cadenza.core`.
"""

from __future__ import annotations

from cadenza.core.errors import ArtifactNotFound
from cadenza.store import retention
from cadenza.store.db import mask_url, upgrade_database
from cadenza.store.runs import RunStore, open_store

__all__ = ["ArtifactNotFound", "RunStore", "mask_url", "open_store", "retention", "upgrade_database"]
