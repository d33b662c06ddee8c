"""What routes take from the app: settings, the store, the pipeline catalog, the clock of
the scheduler's timetable. Use the `Annotated` aliases as parameter types:

    @router.get("/things")
    def list_things(store: StoreDep, catalog: CatalogDep) -> ...
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from cadenza.api.catalog import Catalog
from cadenza.core.scheduling import ScheduleState
from cadenza.core.settings import Settings
from cadenza.graph.plan import Plan
from cadenza.store import RunStore

# When a pipeline's next scheduled run falls due, given its schedule state and now (None:
# never, or not time-scheduled). The scheduler owns time policy (`triggers/cron.py`), which
# the API may not import: `cadenza server` passes `triggers.cron.next_run_at` to
# `create_app`, and without one the API leaves `next_run_at` null.
NextRunFn = Callable[[Plan, ScheduleState | None, datetime], datetime | None]


# The dependencies are async: a sync one would cost a threadpool hop per request each.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


async def get_catalog(request: Request) -> Catalog:
    holder = request.app.state.catalog
    loaded: Catalog | None = holder.loaded
    if loaded is not None:
        return loaded
    catalog: Catalog = await run_in_threadpool(holder.get)  # imports the project's files once
    return catalog


async def get_next_run(request: Request) -> NextRunFn | None:
    fn: NextRunFn | None = request.app.state.next_run_at
    return fn


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[RunStore, Depends(get_store)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
NextRunDep = Annotated[NextRunFn | None, Depends(get_next_run)]
