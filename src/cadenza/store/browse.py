"""Keyset-paginated reads for the surfaces (API, UI): pools, assets and their versions, the
runs an asset version triggered, trigger events, SLA misses, a mapped task's instances,
attempts.

What belongs here: read-only queries that page by the sort key (never OFFSET: a page deep
in a long list costs the same as the first, and rows inserted meanwhile neither repeat nor
vanish across pages). Each `*_page` function takes `after` (the sort key of the last item
of the previous page, or None) and `limit`, and returns the items plus the key to pass as
`after` for the next page (None on the last page). Encoding keys as opaque cursors is the
caller's job. What does not: writes, the engine's and scheduler's queries (`runs.py`,
`scheduling.py`, `lineage.py`).

Get one with `browse_store(run_store)`; it shares the RunStore's engines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select

from cadenza.core.errors import UsageError
from cadenza.core.records import (
    AssetEventRecord,
    AssetSummary,
    AttemptRecord,
    PoolRecord,
    RunRecord,
    Slice,
    TaskInstanceRecord,
)
from cadenza.core.scheduling import SlaMissRecord, TriggerEventRecord
from cadenza.store.codec import (
    attempt_from_row,
    run_from_row,
    ti_from_row,
    trigger_event_from_row,
)
from cadenza.store.db import translated
from cadenza.store.lineage import _EVENT_COLUMNS, _event_from_row
from cadenza.store.runs import RunStore
from cadenza.store.tables import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    TI_COLUMNS,
    asset_events_table,
    attempts_table,
    pools_table,
    run_keys_table,
    runs_table,
    sla_misses_table,
    task_instances_table,
    trigger_events_table,
)

T = TypeVar("T")

_pools = pools_table
_e = asset_events_table
_events = trigger_events_table
_sla = sla_misses_table
_keys = run_keys_table
_runs = runs_table
_attempts = attempts_table
_tis = task_instances_table


def _slice(rows: Sequence[T], limit: int, key: Any) -> Slice[T]:
    """`rows` were fetched with limit + 1: a row beyond `limit` means there is a next page."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Slice(items, key(items[-1]) if more and items else None)


class BrowseStore:
    """Paged reads for the API (see the module docstring).

    Example:
        >>> page = browse_store(open_store()).pools_page(limit=2)
        >>> [p.name for p in page.items], page.after
        (['default', 'gpu'], ('gpu',))
    """

    def __init__(self, store: RunStore) -> None:
        self.url = store.url
        self._read_engine = store._read_engine

    # -- pools --------------------------------------------------------------------------------

    @translated("listing pools")
    def pools_page(self, *, after: tuple[Any, ...] | None = None,
                   limit: int = 50) -> Slice[PoolRecord]:
        """Pools by name."""
        q = select(_pools.c.name, _pools.c.slots, _pools.c.description)
        if after is not None:
            q = q.where(_pools.c.name > str(after[0]))
        q = q.order_by(_pools.c.name).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [PoolRecord(name=n, slots=s, description=d) for n, s, d in conn.execute(q)]
        return _slice(rows, limit, lambda p: (p.name,))

    # -- assets -------------------------------------------------------------------------------

    @translated("listing assets")
    def assets_page(self, *, after: tuple[Any, ...] | None = None, limit: int = 50,
                    prefix: str | None = None) -> Slice[AssetSummary]:
        """Assets with at least one version, by name; `prefix` keeps names starting with it."""
        q = select(_e.c.asset, func.max(_e.c.version), func.count(), func.max(_e.c.created_at))
        if prefix:
            q = q.where(_e.c.asset.startswith(prefix, autoescape=True),
                        func.substr(_e.c.asset, 1, len(prefix)) == prefix)
        if after is not None:
            q = q.where(_e.c.asset > str(after[0]))
        q = q.group_by(_e.c.asset).order_by(_e.c.asset).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [AssetSummary(name=str(n), latest_version=int(v), versions=int(c),
                                 updated_at=_aware(at))
                    for n, v, c, at in conn.execute(q)]
        return _slice(rows, limit, lambda a: (a.name,))

    @translated("listing asset versions")
    def asset_versions_page(self, asset: str, *, after: tuple[Any, ...] | None = None,
                            limit: int = 50) -> Slice[AssetEventRecord]:
        """Versions of an asset, newest first."""
        q = select(*_EVENT_COLUMNS).where(_e.c.asset == asset)
        if after is not None:
            q = q.where(_e.c.version < int(after[0]))
        q = q.order_by(_e.c.version.desc()).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [_event_from_row(r) for r in conn.execute(q)]
        return _slice(rows, limit, lambda e: (e.version,))

    @translated("finding runs an asset version triggered")
    def runs_triggered_by(self, asset: str, version: int, *,
                          after: tuple[Any, ...] | None = None,
                          limit: int = 50) -> Slice[RunRecord]:
        """Asset-triggered runs that consumed this version, oldest first.

        The scheduler keys such a run "assets:" + the JSON of the versions it consumed
        (triggers/loop.py `asset_run_key`), so the key names `"asset":version` followed by
        `,` or `}`."""
        item = f"{json.dumps(asset)}:{int(version)}"
        q = (select(*RUN_COLUMNS)
             .join(_keys, _keys.c.run_id == _runs.c.run_id)
             .where(_keys.c.key.startswith("assets:"),
                    or_(_keys.c.key.contains(item + ",", autoescape=True),
                        _keys.c.key.contains(item + "}", autoescape=True))))
        if after is not None:
            at, run_id = _key_time(after[0]), str(after[1])
            q = q.where(or_(_runs.c.created_at > at,
                            and_(_runs.c.created_at == at, _runs.c.run_id > run_id)))
        q = q.order_by(_runs.c.created_at, _runs.c.run_id).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [run_from_row(r) for r in conn.execute(q)]
        return _slice(rows, limit, lambda r: (r.created_at.isoformat(), r.run_id))

    # -- trigger events -----------------------------------------------------------------------

    @translated("listing events")
    def events_page(self, *, after: tuple[Any, ...] | None = None, limit: int = 50,
                    pipeline: str | None = None, status: str | None = None,
                    source: str | None = None, run_id: str | None = None,
                    since: datetime | None = None,
                    until: datetime | None = None) -> Slice[TriggerEventRecord]:
        """Processed trigger messages, newest first (received_at, then id)."""
        c = _events.c
        q = select(_events)
        for column, value in ((c.pipeline, pipeline), (c.status, status), (c.source, source),
                              (c.run_id, run_id)):
            if value is not None:
                q = q.where(column == value)
        if since is not None:
            q = q.where(c.received_at >= since)
        if until is not None:
            q = q.where(c.received_at < until)
        if after is not None:
            at, last_id = _key_time(after[0]), int(after[1])
            q = q.where(or_(c.received_at < at, and_(c.received_at == at, c.id < last_id)))
        q = q.order_by(c.received_at.desc(), c.id.desc()).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [trigger_event_from_row(r) for r in conn.execute(q)]
        return _slice(rows, limit, _event_key)

    # -- SLA misses ---------------------------------------------------------------------------

    @translated("listing SLA misses")
    def sla_misses_page(self, *, after: tuple[Any, ...] | None = None, limit: int = 50,
                        pipeline: str | None = None, since: datetime | None = None,
                        until: datetime | None = None) -> Slice[SlaMissRecord]:
        """SLA misses, newest detection first (detected_at, then run id)."""
        c = _sla.c
        q = select(c.run_id, c.pipeline, c.sla_s, c.deadline_at, c.detected_at)
        if pipeline is not None:
            q = q.where(c.pipeline == pipeline)
        if since is not None:
            q = q.where(c.detected_at >= since)
        if until is not None:
            q = q.where(c.detected_at < until)
        if after is not None:
            at, run_id = _key_time(after[0]), str(after[1])
            q = q.where(or_(c.detected_at < at, and_(c.detected_at == at, c.run_id < run_id)))
        q = q.order_by(c.detected_at.desc(), c.run_id.desc()).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [SlaMissRecord(run_id=r[0], pipeline=r[1], sla_s=r[2], deadline_at=r[3],
                                  detected_at=r[4]) for r in conn.execute(q)]
        return _slice(rows, limit, lambda m: (m.detected_at.isoformat(), m.run_id))

    # -- task instances -----------------------------------------------------------------------

    @translated("listing task instances")
    def task_instances_page(self, run_id: str, task_id: str, *, mapped: bool,
                            after: tuple[Any, ...] | None = None, limit: int = 50,
                            states: Sequence[str] = ()) -> Slice[TaskInstanceRecord]:
        """One task's instances by map index: a mapped task's instances (0, 1, ...), or
        with `mapped=False` the task's one instance. `states` keeps those in these states.
        The primary key (run_id, task_id, map_index) answers it without a sort."""
        t = _tis.c
        q = select(*TI_COLUMNS).where(t.run_id == run_id, t.task_id == task_id,
                                      t.map_index >= 0 if mapped else t.map_index == -1)
        if states:
            q = q.where(t.state.in_(list(states)))
        if after is not None:
            q = q.where(t.map_index > int(after[0]))
        q = q.order_by(t.map_index).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [ti_from_row(r) for r in conn.execute(q)]
        return _slice(rows, limit, lambda x: (x.map_index,))

    # -- attempts -----------------------------------------------------------------------------

    @translated("listing a run's attempts")
    def run_attempts_page(self, run_id: str, *, after: tuple[Any, ...] | None = None,
                          limit: int = 50) -> Slice[AttemptRecord]:
        """Every ended attempt of a run, by (task id, map index, attempt): the primary key's
        order, so each page is one index range (a Gantt chart of a run in a few requests)."""
        a = _attempts.c
        q = select(*ATTEMPT_COLUMNS).where(a.run_id == run_id)
        if after is not None:
            task_id, map_index, attempt = str(after[0]), int(after[1]), int(after[2])
            q = q.where(or_(a.task_id > task_id,
                            and_(a.task_id == task_id, a.map_index > map_index),
                            and_(a.task_id == task_id, a.map_index == map_index,
                                 a.attempt > attempt)))
        q = q.order_by(a.task_id, a.map_index, a.attempt).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [attempt_from_row(r) for r in conn.execute(q)]
        return _slice(rows, limit, lambda x: (x.task_id, x.map_index, x.attempt))

    @translated("listing attempts")
    def attempts_page(self, run_id: str, task_id: str, map_index: int, *,
                      after: tuple[Any, ...] | None = None,
                      limit: int = 50) -> Slice[AttemptRecord]:
        """Ended attempts of one task instance, in order (a running attempt has no row yet)."""
        a = _attempts.c
        q = select(*ATTEMPT_COLUMNS).where(a.run_id == run_id, a.task_id == task_id,
                                           a.map_index == map_index)
        if after is not None:
            q = q.where(a.attempt > int(after[0]))
        q = q.order_by(a.attempt).limit(limit + 1)
        with self._read_engine.connect() as conn:
            rows = [attempt_from_row(r) for r in conn.execute(q)]
        return _slice(rows, limit, lambda x: (x.attempt,))


def _event_key(e: TriggerEventRecord) -> tuple[Any, ...]:
    assert e.received_at is not None  # NOT NULL column
    return (e.received_at.isoformat(), e.id)


def _key_time(value: Any) -> datetime:
    """A time from a page key (an ISO string once it went through a cursor)."""
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise UsageError(f"malformed page cursor (time {value!r})",
                         hint="pass back the next_cursor of the previous page unchanged")
    return at


def _aware(value: Any) -> datetime | None:
    """MAX() over a UTC column: SQLite returns the stored text, not a datetime."""
    if value is None:
        return None
    at: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def browse_store(store: RunStore) -> BrowseStore:
    """The BrowseStore sharing `store`'s engines (one per RunStore)."""
    found: BrowseStore | None = getattr(store, "_browse", None)
    if found is None:
        found = BrowseStore(store)
        store._browse = found  # type: ignore[attr-defined]
    return found


__all__ = ["BrowseStore", "browse_store"]
