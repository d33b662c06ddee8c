"""The metadata store: runs, task instances, attempts, pools and metrics in SQLAlchemy 2.

Public API: `open_store()`, `RunStore`, `upgrade_database()`. Everything else in this package
(the `*Row` classes, engine set-up) is internal. The store imports only `cadenza.core`.
"""

from __future__ import annotations

from cadenza.store.db import upgrade_database
from cadenza.store.runs import RunStore, open_store

__all__ = ["RunStore", "open_store", "upgrade_database"]
