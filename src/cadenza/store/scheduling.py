"""Scheduling in the metadata store: pause state, run keys, trigger events, SLA misses.

What belongs here: the transactions the scheduler and backfill need so that every
scheduled interval and every event yields exactly one run, with any number of schedulers on
one database; claiming queued runs under `max_active_runs`; finding runs whose driver died.
What does not: deciding what is due (`triggers/cron.py`), driving runs (the engine).

How "exactly once" holds (numbered so the code can point at it):
  1. Every run created for an interval, an asset update or a sensor has a row in `run_keys`
     (PRIMARY KEY (pipeline, key)), inserted in the same transaction as the run.
  2. Every processed message has a row in `trigger_events` (UNIQUE (pipeline, source,
     message_id)), inserted in the same transaction as its run (or as the record of why it
     made none).
  3. Decisions that read before they write (which intervals are missing, whether the assets
     moved, how many runs are active) are taken under the pipeline's `schedule_states` row
     lock: SELECT ... FOR UPDATE on PostgreSQL; on SQLite every write transaction already
     starts with BEGIN IMMEDIATE. 1 and 2 hold even if a decision were wrong: they are
     the guarantee, 3 keeps schedulers from wasting work on conflicts.

Get one with `scheduling_store(run_store)`; it shares the RunStore's engine. Takes and
returns the records below and `cadenza.core.records` ones; SQLAlchemy errors become
StoreError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    and_,
    any_,
    bindparam,
    exists,
    false,
    func,
    null,
    or_,
    select,
    update,
)

from cadenza.core import clock
from cadenza.core.records import RunRecord
from cadenza.core.scheduling import (
    EventOutcome,
    NewRun,
    ScheduleState,
    SlaMissRecord,
    TriggerEventRecord,
)
from cadenza.core.states import RunState
from cadenza.store.codec import (
    run_from_row,
    run_params,
    schedule_state_from_row,
    ti_params,
    trigger_event_from_row,
)
from cadenza.store.db import dialect_insert, translated
from cadenza.store.dml import (
    ArrayDml,
    BulkStep,
    PreparedDml,
    array_insert,
    array_update,
    execute_steps,
)
from cadenza.store.runs import RunStore
from cadenza.store.tables import (
    RUN_COLUMNS,
    asset_events_table,
    run_keys_table,
    runs_table,
    schedule_states_table,
    sla_misses_table,
    task_instances_table,
    trigger_events_table,
)

log = logging.getLogger(__name__)

_runs = runs_table
_states = schedule_states_table
_keys = run_keys_table
_events = trigger_events_table
_sla = sla_misses_table

# Key lookups are chunked so a long backfill never builds one giant IN list.
_CHUNK = 500


_ACTIVE = or_(
    _runs.c.state == RunState.RUNNING.value,
    and_(_runs.c.state == RunState.QUEUED.value, _runs.c.driver_id.is_not(None)),
)


class SchedulingStore:
    """The scheduler's and backfill's view of the metadata store (see the module docstring).

    Example:
        >>> sched = scheduling_store(open_store())
        >>> sched.set_paused("fraud_training", True).paused
        True
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.url = store.url
        self._engine = store._engine
        self._read_engine = store._read_engine
        self._dialect = store._dialect
        # Bulk writes: DBAPI executemany on SQLite, one array statement per table on
        # PostgreSQL (dml.py; see `_run_steps`).
        engine = store._engine
        self._bulk_runs = array_insert(runs_table, engine, "runs")
        self._bulk_tis = array_insert(task_instances_table, engine, "task instances")
        self._bulk_keys = array_insert(_keys, engine, "run keys")
        self._ensure_states = array_insert(_states, engine, "schedule states",  # PostgreSQL
                                           conflict_do_nothing=["pipeline"])
        self._raise_high_water: PreparedDml | ArrayDml
        if self._dialect == "postgresql":
            self._raise_high_water = array_update(
                _states, engine, "schedule states", key=("p", "pipeline"),
                values={"hw": "last_logical_date", "at": "updated_at"})
        else:
            # Creates the state row if missing and never lowers the mark: no read needed
            # (ISO text in one format compares in time order).
            ins = dialect_insert("sqlite", _states).values(
                pipeline=bindparam("p"), paused=false(), last_logical_date=bindparam("hw"),
                asset_versions=null(), updated_at=bindparam("at"))
            self._raise_high_water = PreparedDml(ins.on_conflict_do_update(
                index_elements=[_states.c.pipeline],
                set_={"last_logical_date": ins.excluded.last_logical_date,
                      "updated_at": ins.excluded.updated_at},
                where=or_(_states.c.last_logical_date.is_(None),
                          _states.c.last_logical_date < ins.excluded.last_logical_date)),
                engine, "schedule states")

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self._dialect, table)

    # -- pipeline lock and state ----------------------------------------------------------------

    def _lock(self, conn: Connection, pipeline: str, *, skip_locked: bool = False
              ) -> ScheduleState | None:
        """Create the pipeline's state row if missing and lock it (3). None when
        `skip_locked` and another transaction holds it (PostgreSQL only)."""
        now = clock.now()
        conn.execute(
            self._insert(_states)
            .values(pipeline=pipeline, paused=False, last_logical_date=None,
                    asset_versions=None, updated_at=now)
            .on_conflict_do_nothing(index_elements=[_states.c.pipeline])
        )
        row = conn.execute(
            select(*_states.columns).where(_states.c.pipeline == pipeline)
            .with_for_update(skip_locked=skip_locked)
        ).first()
        return None if row is None else schedule_state_from_row(row)

    @translated("reading schedule states")
    def list_states(self, pipelines: Sequence[str] | None = None) -> dict[str, ScheduleState]:
        """Every pipeline's schedule state, or those of `pipelines` (the scheduler reads its
        own every second; a store shared by many schedulers holds many more)."""
        with self._read_engine.connect() as conn:
            if pipelines is None:
                return {r[0]: schedule_state_from_row(r)
                        for r in conn.execute(select(*_states.columns))}
            out: dict[str, ScheduleState] = {}
            for chunk in self._chunks(list(pipelines)):
                out.update((r[0], schedule_state_from_row(r)) for r in conn.execute(
                    select(*_states.columns).where(self._member(_states.c.pipeline, chunk))))
            return out

    def get_state(self, pipeline: str) -> ScheduleState:
        """The pipeline's state (a default one if the scheduler never saw it)."""
        return self.list_states([pipeline]).get(pipeline) or ScheduleState(pipeline=pipeline)

    @translated("pausing a pipeline")
    def set_paused(self, pipeline: str, paused: bool) -> ScheduleState:
        """Pause or unpause a pipeline: a paused pipeline gets no scheduled, asset, sensor
        or event runs (backfill still creates the runs it is asked for)."""
        with self._engine.begin() as conn:
            self._lock(conn, pipeline)
            conn.execute(update(_states).where(_states.c.pipeline == pipeline)
                         .values(paused=bool(paused), updated_at=clock.now()))
            row = conn.execute(select(*_states.columns)
                               .where(_states.c.pipeline == pipeline)).one()
        return schedule_state_from_row(row)

    # -- creating runs exactly once -------------------------------------------------------------

    def _run_steps(self, runs: Sequence[NewRun]) -> list[BulkStep]:
        """The inserts for `runs`: runs, then their task instances, then their keys (the
        key's foreign key needs the run). A duplicate key aborts the transaction (1).

        They bypass Core (dml.py): DBAPI executemany on SQLite, one statement of column
        arrays per table on PostgreSQL. For the 1,000 runs of a tick where 1,000 pipelines
        fall due, Core's per-row parameter processing cost ~110 ms of the ~180 ms the
        transaction took on SQLite, and psycopg's per-row executemany ~250 ms of CPU on
        PostgreSQL (2 slow cores)."""
        if not runs:
            return []
        now = clock.now()
        steps: list[BulkStep] = [(self._bulk_runs, [run_params(n.run) for n in runs], False)]
        tis = [ti_params(t) for n in runs for t in n.task_instances]
        if tis:
            steps.append((self._bulk_tis, tis, False))
        keys = [{"pipeline": n.run.pipeline, "key": n.key, "run_id": n.run.run_id,
                 "created_at": now} for n in runs if n.key is not None]
        if keys:
            steps.append((self._bulk_keys, keys, False))
        return steps

    def _insert_runs(self, conn: Connection, runs: Sequence[NewRun]) -> None:
        execute_steps(conn, self._run_steps(runs), "creating runs")

    def _existing_keys(self, conn: Connection, pipeline: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            found.update(conn.scalars(select(_keys.c.key).where(
                _keys.c.pipeline == pipeline, _keys.c.key.in_(chunk))))
        return found

    @translated("creating scheduled runs")
    def create_runs(self, pipeline: str, runs: Sequence[NewRun], *,
                    high_water: datetime | None = None, unless_paused: bool = False) -> list[str]:
        """Create those of `runs` whose key has no run yet; return the created run ids.

        One transaction under the pipeline lock (3); keys already present are skipped, and
        the primary key of run_keys refuses any duplicate that slipped through (1).
        `high_water` raises the pipeline's last scheduled logical date (never lowers it).
        `unless_paused`: create nothing if the pipeline is paused (the scheduler's case).
        """
        with self._engine.begin() as conn:
            state = self._lock(conn, pipeline)
            if unless_paused and state is not None and state.paused:
                return []
            keys = [n.key for n in runs if n.key is not None]
            existing = self._existing_keys(conn, pipeline, keys) if keys else set()
            fresh: list[NewRun] = []
            seen: set[str] = set()
            for n in runs:
                if n.key is not None and (n.key in existing or n.key in seen):
                    continue
                if n.key is not None:
                    seen.add(n.key)
                fresh.append(n)
            self._insert_runs(conn, fresh)
            if high_water is not None and state is not None and (
                state.last_logical_date is None or high_water > state.last_logical_date
            ):
                conn.execute(update(_states).where(_states.c.pipeline == pipeline)
                             .values(last_logical_date=high_water, updated_at=clock.now()))
        return [n.run.run_id for n in fresh]

    @translated("creating scheduled runs")
    def create_runs_many(
        self,
        batches: Sequence[tuple[str, Sequence[NewRun], datetime | None]],
        *,
        unless_paused: bool = True,
        paused: set[str] | None = None,
    ) -> list[str]:
        """`create_runs` for many pipelines in ONE transaction: (pipeline, runs,
        high_water) each. The scheduler's path when many pipelines fall due at once.
        Returns the created run ids; pipelines skipped because they are paused are added
        to `paused` when given.

        Keys already present are skipped (1), and a duplicate that slipped through would
        abort the transaction. PostgreSQL: the pipelines' state rows are locked (3) in name
        order, so two schedulers doing this never deadlock. SQLite: the transaction holds
        the database's write lock from its start (BEGIN IMMEDIATE), so it reads only which
        pipelines are paused, and raises the marks with an upsert that never lowers them.
        Reads use one array parameter on PostgreSQL; the writes are DBAPI executemany or
        array statements (see `_run_steps`).
        Measured on SQLite (2 slow cores), 1,000 pipelines due in one tick: 10.3 s with a
        transaction per pipeline, 2.6 s in one Core transaction, ~0.1 s now (bench/
        scheduler.py, "all due at once"; about half of it this transaction).
        """
        if not batches:
            return []
        now = clock.now()
        names = sorted({p for p, _, _ in batches})
        with self._engine.begin() as conn:
            lasts: dict[str, datetime | None] | None = None
            if self._dialect == "postgresql":
                states = self._lock_states(conn, names, now)
                stopped = {p for p, (is_paused, _) in states.items() if is_paused}
                lasts = {p: last for p, (_, last) in states.items()}
            else:
                stopped = set(conn.scalars(select(_states.c.pipeline)
                                           .where(_states.c.paused.is_(True))))
            wanted = [(p, n.key) for p, runs, _ in batches for n in runs if n.key is not None]
            existing = self._existing_pairs(conn, wanted)
            fresh: list[NewRun] = []
            marks: list[dict[str, Any]] = []
            for pipeline, runs, high_water in batches:
                if unless_paused and pipeline in stopped:
                    if paused is not None:
                        paused.add(pipeline)
                    continue
                for n in runs:
                    if n.key is not None:
                        if (pipeline, n.key) in existing:
                            continue
                        existing.add((pipeline, n.key))
                    fresh.append(n)
                if high_water is None:
                    continue
                last = None if lasts is None else lasts[pipeline]
                if last is None or high_water > last:
                    marks.append({"p": pipeline, "hw": high_water, "at": now})
            steps = self._run_steps(fresh)
            if marks:
                steps.append((self._raise_high_water, marks, False))
            execute_steps(conn, steps, "creating scheduled runs")
        return [n.run.run_id for n in fresh]

    def _member(self, column: Any, values: Sequence[str]) -> Any:
        """`column IN values`: one array parameter on PostgreSQL (a 1,000-name IN list
        cost ~8 ms there to bind and plan), an IN list on SQLite."""
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
        return column.in_(values)

    def _chunks(self, values: Sequence[Any]) -> list[Sequence[Any]]:
        step = (len(values) or 1) if self._dialect == "postgresql" else _CHUNK
        return [values[i:i + step] for i in range(0, len(values), step)]

    def _lock_states(self, conn: Connection, names: Sequence[str], now: datetime
                     ) -> dict[str, tuple[bool, datetime | None]]:
        """PostgreSQL: pipeline -> (paused, last_logical_date) for `names` (sorted), their
        state rows created if missing (ON CONFLICT DO NOTHING, name order) and locked (3)
        with SELECT ... FOR UPDATE in name order: with every scheduler taking row locks in
        one order, none waits for another in a cycle."""
        execute_steps(conn, [(self._ensure_states, [
            {"pipeline": p, "paused": False, "last_logical_date": None,
             "asset_versions": None, "updated_at": now} for p in names], False)],
            "creating schedule states")
        q = (select(_states.c.pipeline, _states.c.paused, _states.c.last_logical_date)
             .where(self._member(_states.c.pipeline, names))
             .order_by(_states.c.pipeline).with_for_update())
        return {r[0]: (bool(r[1]), r[2]) for r in conn.execute(q)}

    def _existing_pairs(self, conn: Connection, wanted: Sequence[tuple[str, str]]
                        ) -> set[tuple[str, str]]:
        """Those (pipeline, key) of `wanted` that have a run already."""
        if not wanted:
            return set()
        pipelines = sorted({p for p, _ in wanted})
        keys = sorted({k for _, k in wanted})
        found: set[tuple[str, str]] = set()
        # Few distinct keys (pipelines due at one instant share their interval key), so
        # filter by key chunks and all the pipelines; keep only the pairs wanted.
        for kc in self._chunks(keys):
            for pc in self._chunks(pipelines):
                found.update((p, k) for p, k in conn.execute(
                    select(_keys.c.pipeline, _keys.c.key).where(
                        self._member(_keys.c.key, kc), self._member(_keys.c.pipeline, pc))))
        return found & set(wanted)

    @translated("reading run keys")
    def runs_for_keys(self, pipeline: str, keys: Sequence[str]) -> dict[str, str]:
        """key -> run id, for those keys that have a run."""
        out: dict[str, str] = {}
        with self._read_engine.connect() as conn:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i:i + _CHUNK]
                for key, run_id in conn.execute(select(_keys.c.key, _keys.c.run_id).where(
                        _keys.c.pipeline == pipeline, _keys.c.key.in_(chunk))):
                    out[key] = run_id
        return out

    # -- assets ---------------------------------------------------------------------------------

    @translated("reading asset versions")
    def latest_asset_versions(self, assets: Sequence[str]) -> dict[str, int]:
        """asset -> its newest version, for those of `assets` that have one."""
        if not assets:
            return {}
        with self._read_engine.connect() as conn:
            return self._latest_versions(conn, assets)

    @staticmethod
    def _latest_versions(conn: Connection, assets: Sequence[str]) -> dict[str, int]:
        a = asset_events_table.c
        q = select(a.asset, func.max(a.version)).where(a.asset.in_(list(assets))).group_by(a.asset)
        return {str(name): int(v) for name, v in conn.execute(q)}

    @translated("creating an asset-triggered run")
    def create_asset_run(
        self,
        pipeline: str,
        assets: Sequence[str],
        build: Callable[[dict[str, int], dict[str, int]], NewRun | None],
    ) -> str | None:
        """Under the pipeline lock (3): read the versions its last asset run consumed and the
        newest versions of `assets`; `build(consumed, latest)` returns the run to create or
        None. A created run marks `latest` as consumed. Returns the created run id."""
        with self._engine.begin() as conn:
            state = self._lock(conn, pipeline)
            if state is None or state.paused:
                return None
            latest = self._latest_versions(conn, assets)
            new = build(dict(state.asset_versions), latest)
            if new is None:
                return None
            if new.key is not None and self._existing_keys(conn, pipeline, [new.key]):
                return None
            self._insert_runs(conn, [new])
            consumed = {**state.asset_versions, **latest}
            conn.execute(update(_states).where(_states.c.pipeline == pipeline)
                         .values(asset_versions=consumed, updated_at=clock.now()))
        return new.run.run_id

    # -- events ---------------------------------------------------------------------------------

    @translated("recording an event")
    def record_event(self, event: TriggerEventRecord, new_run: NewRun | None = None
                     ) -> EventOutcome:
        """Record a processed message and create its run, in one transaction (2).

        A message seen before (same pipeline, source and message id) changes nothing and
        returns the first record with `created=False`: redelivery never makes a second run.
        """
        received = event.received_at or clock.now()
        with self._engine.begin() as conn:
            ins = (
                self._insert(_events)
                .values(pipeline=event.pipeline, source=event.source,
                        message_id=event.message_id, status=event.status,
                        run_id=new_run.run.run_id if new_run else event.run_id,
                        error=event.error, payload=event.payload, received_at=received)
                .on_conflict_do_nothing(
                    index_elements=[_events.c.pipeline, _events.c.source, _events.c.message_id])
                .returning(_events.c.id)
            )
            # RETURNING, not rowcount: psycopg reports no reliable rowcount for it.
            created = conn.execute(ins).first() is not None
            if created and new_run is not None:
                self._insert_runs(conn, [new_run])
            row = conn.execute(select(_events).where(
                _events.c.pipeline == event.pipeline, _events.c.source == event.source,
                _events.c.message_id == event.message_id)).one()
        return EventOutcome(created=created, event=trigger_event_from_row(row))

    @translated("listing events")
    def list_events(self, *, pipeline: str | None = None, status: str | None = None,
                    limit: int = 50) -> list[TriggerEventRecord]:
        """Processed messages, newest first (what `cadenza events list` shows)."""
        q = select(_events)
        if pipeline is not None:
            q = q.where(_events.c.pipeline == pipeline)
        if status is not None:
            q = q.where(_events.c.status == status)
        q = q.order_by(_events.c.received_at.desc(), _events.c.id.desc()).limit(limit)
        with self._read_engine.connect() as conn:
            return [trigger_event_from_row(r) for r in conn.execute(q)]

    @translated("counting events")
    def count_events(self, pipeline: str, *, status: str | None = None) -> int:
        q = select(func.count()).select_from(_events).where(_events.c.pipeline == pipeline)
        if status is not None:
            q = q.where(_events.c.status == status)
        with self._read_engine.connect() as conn:
            return int(conn.scalar(q) or 0)

    # -- claiming queued runs -------------------------------------------------------------------

    @translated("claiming queued runs")
    def claim_queued(self, driver_id: str, caps: Mapping[str, int | None], *,
                     limit: int = 16, only: Collection[str] | None = None) -> list[RunRecord]:
        """Claim up to `limit` queued, unclaimed runs of the pipelines in `caps` for
        `driver_id` (sets driver_id and heartbeat_at; the driver then moves them to running).
        `only`: claim among these run ids only (backfill drives its own runs).

        `caps[pipeline]` is its max_active_runs (None: no cap). Active runs are running ones
        plus claimed queued ones; a capped pipeline is claimed under its lock (3), so two
        schedulers never exceed the cap together. Oldest first (created_at, then logical
        date). PostgreSQL skips rows and pipeline locks other schedulers hold (SKIP LOCKED).
        """
        if not caps or limit <= 0:
            return []
        now = clock.now()
        r = _runs.c
        order = (r.created_at, r.logical_date, r.run_id)
        queued = and_(r.state == RunState.QUEUED.value, r.driver_id.is_(None))
        if only is not None:
            queued = and_(queued, r.run_id.in_(list(only)))
        picked: list[str] = []
        # Most ticks find nothing queued: ask on a read connection before taking a write
        # lock (SQLite serialises every write transaction).
        with self._read_engine.connect() as conn:
            if conn.execute(select(r.run_id).where(queued, r.pipeline.in_(list(caps)))
                            .limit(1)).first() is None:
                return []
        with self._engine.begin() as conn:
            uncapped = [p for p, cap in caps.items() if cap is None]
            if uncapped:
                picked.extend(conn.scalars(
                    select(r.run_id).where(queued, r.pipeline.in_(uncapped)).order_by(*order)
                    .limit(limit).with_for_update(skip_locked=True)))
            capped = {p: cap for p, cap in caps.items() if cap is not None}
            if capped and len(picked) < limit:
                waiting = set(conn.scalars(select(r.pipeline).distinct().where(
                    queued, r.pipeline.in_(list(capped)))))
                for pipeline in sorted(waiting):
                    if len(picked) >= limit:
                        break
                    if self._lock(conn, pipeline, skip_locked=True) is None:
                        continue  # another scheduler is claiming this pipeline's runs
                    active = conn.scalar(select(func.count()).select_from(_runs).where(
                        r.pipeline == pipeline, _ACTIVE)) or 0
                    room = min(int(capped[pipeline]) - int(active), limit - len(picked))
                    if room <= 0:
                        continue
                    picked.extend(conn.scalars(
                        select(r.run_id).where(queued, r.pipeline == pipeline)
                        .order_by(*order).limit(room).with_for_update(skip_locked=True)))
            if not picked:
                return []
            conn.execute(update(_runs).where(r.run_id.in_(picked), queued)
                         .values(driver_id=driver_id, heartbeat_at=now))
            rows = conn.execute(select(*RUN_COLUMNS).where(
                r.run_id.in_(picked), r.driver_id == driver_id).order_by(*order)).all()
        return [run_from_row(row) for row in rows]

    @translated("counting active runs")
    def count_active(self, pipeline: str) -> int:
        """Running runs plus claimed queued ones (what max_active_runs caps)."""
        with self._read_engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(_runs).where(
                _runs.c.pipeline == pipeline, _ACTIVE)) or 0)

    @translated("finding runs of dead drivers")
    def stale_runs(self, pipelines: Sequence[str], *, lease_s: float,
                   limit: int = 50) -> list[RunRecord]:
        """Claimed or running runs of `pipelines` whose driver has not renewed its lease for
        `lease_s` seconds: candidates for takeover (the claim itself re-checks)."""
        if not pipelines:
            return []
        r = _runs.c
        cutoff = clock.now() - timedelta(seconds=lease_s)
        q = (select(*RUN_COLUMNS)
             .where(r.pipeline.in_(list(pipelines)),
                    r.state.in_((RunState.QUEUED.value, RunState.RUNNING.value)),
                    r.driver_id.is_not(None),
                    or_(r.heartbeat_at.is_(None), r.heartbeat_at <= cutoff))
             .order_by(r.created_at, r.run_id).limit(limit))
        with self._read_engine.connect() as conn:
            return [run_from_row(row) for row in conn.execute(q)]

    @translated("finding running runs")
    def active_runs(self, pipelines: Sequence[str], *, limit: int = 500) -> list[RunRecord]:
        """Running and claimed queued runs of `pipelines` with their drivers, oldest first."""
        if not pipelines:
            return []
        r = _runs.c
        q = (select(*RUN_COLUMNS).where(r.pipeline.in_(list(pipelines)), _ACTIVE)
             .order_by(r.created_at, r.run_id).limit(limit))
        with self._read_engine.connect() as conn:
            return [run_from_row(row) for row in conn.execute(q)]

    # -- SLA ------------------------------------------------------------------------------------

    @translated("finding SLA candidates")
    def sla_candidates(self, pipeline: str, *, created_before: datetime,
                       ended_since: datetime, limit: int = 500) -> list[RunRecord]:
        """Runs of `pipeline` with no recorded miss, created at or before `created_before`,
        and either unfinished or finished at or after `ended_since`. The caller checks
        which did not finish within the SLA; passing the previous check's time as
        `ended_since` means a run that finished in time is looked at once."""
        r = _runs.c
        q = (select(*RUN_COLUMNS)
             .where(r.pipeline == pipeline,
                    r.created_at <= created_before,
                    or_(r.ended_at.is_(None), r.ended_at >= ended_since),
                    ~exists().where(_sla.c.run_id == r.run_id))
             .order_by(r.created_at).limit(limit))
        with self._read_engine.connect() as conn:
            return [run_from_row(row) for row in conn.execute(q)]

    @translated("recording an SLA miss")
    def record_sla_miss(self, miss: SlaMissRecord) -> bool:
        """Record a miss; True only for the first caller (so on_sla_miss fires once)."""
        with self._engine.begin() as conn:
            ins = (self._insert(_sla)
                   .values(run_id=miss.run_id, pipeline=miss.pipeline, sla_s=miss.sla_s,
                           deadline_at=miss.deadline_at, detected_at=miss.detected_at)
                   .on_conflict_do_nothing(index_elements=[_sla.c.run_id])
                   .returning(_sla.c.run_id))
            return conn.execute(ins).first() is not None

    @translated("listing SLA misses")
    def list_sla_misses(self, *, pipeline: str | None = None,
                        limit: int = 50) -> list[SlaMissRecord]:
        q = select(_sla)
        if pipeline is not None:
            q = q.where(_sla.c.pipeline == pipeline)
        q = q.order_by(_sla.c.detected_at.desc()).limit(limit)
        with self._read_engine.connect() as conn:
            return [SlaMissRecord(run_id=x.run_id, pipeline=x.pipeline, sla_s=x.sla_s,
                                  deadline_at=x.deadline_at, detected_at=x.detected_at)
                    for x in conn.execute(q)]


def scheduling_store(store: RunStore) -> SchedulingStore:
    """The SchedulingStore sharing `store`'s engine (one per RunStore)."""
    sched: SchedulingStore | None = getattr(store, "_scheduling", None)
    if sched is None:
        sched = SchedulingStore(store)
        store._scheduling = sched  # type: ignore[attr-defined]
    return sched


__all__ = [
    "EventOutcome",
    "NewRun",
    "ScheduleState",
    "SchedulingStore",
    "SlaMissRecord",
    "TriggerEventRecord",
    "scheduling_store",
]
