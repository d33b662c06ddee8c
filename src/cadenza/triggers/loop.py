"""The scheduler service: creates due runs, evaluates asset and sensor triggers, consumes
events, watches SLAs, and drives queued runs on its executor.

What belongs here: the `Scheduler` (one per `cadenza scheduler` process), what one tick
does, and the plain functions the CLI wires (`pause`, `unpause`). What does not:
schedule arithmetic (`cron.py`), message handling (`events/`), exactly-once in the store
(`store/scheduling.py`), driving a run (`engine.api.drive_run`).

One tick (`Scheduler.tick()`), in order:
  1. Time schedules: for each pipeline whose next interval has ended, create its due runs
     (catchup: every missed one; otherwise the latest), keyed "interval:<logical date>",
     those of all the due pipelines in one transaction (per ~1,000 runs). A pipeline not
     due costs one comparison (its next due time is kept in memory); a due one, one cron
     step (its timetable remembers the interval it expected).
  2. Asset triggers: one query for the newest versions of every asset any pipeline waits
     for; a pipeline whose assets moved (all of them; AnyOf: any) gets one run, keyed by
     the versions, with them in `run.extra["trigger"]["assets"]`.
  3. Trigger sensors whose poke interval has passed are poked; a truthy value makes one
     run, keyed by the value (see `Sensor.run_key`).
  4. SLA: runs not finished within `sla` of their creation are recorded once (the first
     scheduler to notice wins) and `on_sla_miss` fires there.
  5. Takeover: runs of our pipelines whose driver stopped renewing its lease for
     `lease_s` are resumed here (the engine's claim refuses a live driver), so finished
     tasks never run again.
  6. Queued runs are claimed (max_active_runs per pipeline, SKIP LOCKED on PostgreSQL)
     and each is driven in a thread of this process, up to `max_runs` at once.
Events are consumed by one thread per EventTrigger, which wakes the loop when it commits
a run, so an event's run starts without waiting for the next tick.

Paused pipelines get nothing from 1-3 and their event consumers stop reading; their
already-queued runs still run. Every run created here is created `queued`; every time is
read from `core.clock`, so tests drive the scheduler with a FakeClock and `tick()`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cadenza.authoring.assets import AnyOf, Asset
from cadenza.core import clock
from cadenza.core.errors import (
    CadenzaError,
    DefinitionError,
    ParameterError,
    RunConflict,
    StoreError,
)
from cadenza.core.ids import new_driver_id
from cadenza.core.settings import Settings, get_settings
from cadenza.engine.api import drive_run, fail_run, new_run
from cadenza.engine.cancel import cancel_undriven
from cadenza.engine.lease import DriverLiveness, driver_liveness
from cadenza.engine.resume import resume_run
from cadenza.graph.plan import HasPlan, Plan, plan_of
from cadenza.triggers.cron import Interval, Timetable
from cadenza.triggers.events import EventTrigger, handle_message, make_consumer
from cadenza.triggers.metrics import scheduler_metrics
from cadenza.triggers.sensors import Sensor

log = logging.getLogger(__name__)



# -- what a pipeline is triggered by (pure) ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerSpec:
    assets: tuple[str, ...] = ()
    any_of: bool = False
    sensors: tuple[Sensor, ...] = ()
    events: tuple[EventTrigger, ...] = ()


def trigger_spec(pipeline: Plan | HasPlan) -> TriggerSpec:
    """Sort a pipeline's `triggers=` into assets (all or AnyOf), sensors and events."""
    pipeline = plan_of(pipeline)
    items = pipeline.triggers
    assets: list[str] = []
    any_assets: list[str] = []
    sensors: list[Sensor] = []
    events: list[EventTrigger] = []
    for item in items:
        if isinstance(item, AnyOf):
            any_assets.extend(item.names)
        elif isinstance(item, Asset):
            assets.append(item.name)
        elif isinstance(item, str):
            assets.append(Asset(item).name)
        elif isinstance(item, Sensor):
            sensors.append(item)
        elif isinstance(item, EventTrigger):
            events.append(item)
        else:
            raise DefinitionError.single(
                f"triggers: {item!r} is not an Asset, AnyOf, sensor or EventTrigger",
                pipeline=pipeline.name,
                hint="triggers=[Asset('features/user')], triggers=AnyOf(a, b), "
                     "triggers=[FileSensor('in/*.csv')] or triggers=[EventTrigger(url)]")
    if assets and any_assets:
        raise DefinitionError.single(
            "triggers mixes plain assets (all must update) with AnyOf (any may)",
            pipeline=pipeline.name,
            hint="use triggers=[a, b] for all of them, or triggers=AnyOf(a, b) for any")
    return TriggerSpec(assets=tuple(dict.fromkeys(assets or any_assets)),
                       any_of=bool(any_assets), sensors=tuple(sensors), events=tuple(events))


def assets_ready(assets: Sequence[str], consumed: Mapping[str, int], latest: Mapping[str, int],
                 *, any_of: bool) -> dict[str, int] | None:
    """The asset versions that trigger a run now, or None.

    All-of: every asset has a version newer than the one the last asset run consumed (a
    pipeline that never ran counts every existing version as new); the run sees them all.
    AnyOf: at least one has; the run sees the ones that moved.
    """
    moved = {a: latest[a] for a in assets if latest.get(a, 0) > consumed.get(a, 0)}
    if any_of:
        return moved or None
    return moved if len(moved) == len(assets) and assets else None


def asset_run_key(versions: Mapping[str, int]) -> str:
    return "assets:" + json.dumps(dict(sorted(versions.items())), separators=(",", ":"))


# -- the scheduler -----------------------------------------------------------------------------


@dataclass(slots=True)
class TickReport:
    """What one tick did (run ids)."""

    created: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)
    sla_missed: list[str] = field(default_factory=list)


class Scheduler:
    """Schedules, triggers and drives the runs of `pipelines` (see the module docstring).

    Example:
        sched = Scheduler([fraud_training, nightly_report], executor="processes")
        sched.run_forever()            # `cadenza scheduler`
        sched.run_once()               # `cadenza scheduler --once`: one tick, runs finished

    Several schedulers may run against one PostgreSQL store: each interval, asset update,
    sensor value and event yields exactly one run (store/scheduling.py says how).
    """

    def __init__(
        self,
        pipelines: Iterable[Plan | HasPlan],
        *,
        settings: Settings | None = None,
        executor: str | None = None,
        max_runs: int = 16,
        lease_s: float | None = None,
        sla_check_s: float = 5.0,
        catchup_limit: int = 1000,
        max_sleep_s: float = 1.0,
        event_block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        scheduler_id: str | None = None,
    ) -> None:
        from cadenza.store import open_store
        from cadenza.store.scheduling import scheduling_store

        self.settings = settings or get_settings()
        self.executor = executor
        self.max_runs = max_runs
        self.lease_s = self.settings.lease_s if lease_s is None else lease_s
        self.sla_check_s = sla_check_s
        self.catchup_limit = catchup_limit
        self.max_sleep_s = max_sleep_s
        self.event_block_ms = event_block_ms
        self.claim_idle_ms = claim_idle_ms
        self.metrics = scheduler_metrics()
        self.id = scheduler_id or new_driver_id()
        self.store = open_store(self.settings.database_url)
        self.sched = scheduling_store(self.store)

        self.pipelines: dict[str, Plan] = {}
        for p in map(plan_of, pipelines):
            if p.name in self.pipelines and self.pipelines[p.name] is not p:
                raise DefinitionError.single(
                    f"two pipelines are named '{p.name}'", pipeline=p.name,
                    hint="give each pipeline a unique name: @pipeline(name=...)")
            self.pipelines[p.name] = p
        self.timetables: dict[str, Timetable] = {}
        self.specs: dict[str, TriggerSpec] = {}
        for name, p in self.pipelines.items():
            tt = Timetable.of(p)
            if tt is not None:
                self.timetables[name] = tt
            self.specs[name] = trigger_spec(p)
        self._caps = {n: p.max_active_runs for n, p in self.pipelines.items()}
        self._asset_pipelines = {n: s for n, s in self.specs.items() if s.assets}
        self._asset_names = sorted({a for s in self._asset_pipelines.values() for a in s.assets})
        self._sensor_triggers = [(n, s) for n, spec in self.specs.items() for s in spec.sensors]
        self._sla = {n: p.sla.total_seconds() for n, p in self.pipelines.items()
                     if p.sla is not None}

        self._next_due: dict[str, datetime | None] = {}
        # Per pipeline, the newest logical date this scheduler has dealt with (created,
        # or found created): raises the last-read state's mark between state reads.
        self._after: dict[str, datetime | None] = {}
        self._next_poke: dict[tuple[str, str], datetime] = {}
        self._next_sla: datetime | None = None
        self._sla_checked_at: datetime | None = None
        self._next_takeover: datetime | None = None
        self._seen_versions: dict[str, int] | None = None
        self._defaults: dict[str, dict[str, Any] | ParameterError] = {}
        self._states: dict[str, Any] = {}
        self._states_read_at = -1e9

        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._consumers: list[tuple[str, Any, threading.Thread | None]] = []

    def __repr__(self) -> str:
        return f"<Scheduler {self.id} ({len(self.pipelines)} pipelines)>"

    # -- helpers ----------------------------------------------------------------------------

    def _refresh_states(self, *, force: bool = False) -> dict[str, Any]:
        if force or time.monotonic() - self._states_read_at > 1.0:
            self._states = self.sched.list_states(list(self.pipelines))
            self._states_read_at = time.monotonic()
        return self._states

    def is_paused(self, pipeline: str) -> bool:
        state = self._states.get(pipeline)
        return bool(state is not None and state.paused)

    def _stored_defaults(self, name: str) -> dict[str, Any] | None:
        """The pipeline's default parameters, validated once (None: it has required ones)."""
        cached = self._defaults.get(name)
        if cached is None:
            try:
                cached = self.pipelines[name].validate_params({})[1]
            except ParameterError as exc:
                log.error("pipeline %s cannot be scheduled or triggered without "
                          "parameters: %s", name, exc)
                cached = exc
            self._defaults[name] = cached
        return None if isinstance(cached, ParameterError) else dict(cached)

    def _new(self, name: str, *, trigger: str, key: str | None,
             interval: Interval | None = None, extra: dict[str, Any] | None = None,
             now: datetime | None = None) -> Any:
        from cadenza.core.scheduling import NewRun

        params = self._stored_defaults(name)
        if params is None:
            return None
        run, tis = new_run(self.pipelines[name], params, trigger=trigger,
                           logical_date=interval.start if interval else None,
                           data_interval=(interval.start, interval.end) if interval else None,
                           extra=extra, stored_params=params, created_at=now)
        return NewRun(run=run, task_instances=tis, key=key)

    @property
    def running(self) -> list[str]:
        """Run ids this scheduler is driving right now."""
        with self._lock:
            return list(self._threads)

    # -- one tick -----------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Do everything that is due now (see the module docstring); returns what it did.
        Runs are started in threads: `wait_idle()` waits for them."""
        started = time.perf_counter()
        now = clock.now()
        report = TickReport()
        self._refresh_states()
        self._tick_schedules(now, report)
        self._tick_assets(report)
        self._tick_sensors(now, report)
        self._tick_sla(now, report)
        self._tick_takeover(now, report)
        self._start_queued(report)
        self.metrics.ticks.inc()
        self.metrics.tick_seconds.observe(time.perf_counter() - started)
        return report

    def _tick_schedules(self, now: datetime, report: TickReport) -> None:
        due = [n for n in self.timetables
               if (nd := self._next_due.get(n, now)) is not None and nd <= now]
        if not due:
            return
        # The states read at most a second ago (tick() refreshes them), with each
        # pipeline's mark raised by what this scheduler created since: no read here. A
        # mark another scheduler raised meanwhile only costs runs the store skips (their
        # keys exist). A pipeline that looks paused is looked at again now, since it may
        # have been unpaused; one paused meanwhile is refused by the store and stays due.
        states = self._states
        if any((s := states.get(n)) is not None and s.paused for n in due):
            states = self._refresh_states(force=True)
        batches: list[tuple[str, list[Any], datetime | None]] = []
        next_due: dict[str, datetime | None] = {}
        for name in due:
            state = states.get(name)
            if state is not None and state.paused:
                continue  # stays due: looked at again when unpaused
            after = _newest(state.last_logical_date if state is not None else None,
                            self._after.get(name))
            tt = self.timetables[name]
            intervals = tt.due(now, after=after, limit=self.catchup_limit)
            if intervals:
                runs = [self._new(name, trigger="schedule", key=i.key, interval=i, now=now)
                        for i in intervals]
                if any(r is None for r in runs):
                    self._next_due[name] = None  # needs parameters: never schedulable
                    continue
                batches.append((name, runs, intervals[-1].start))
                more = len(intervals) >= self.catchup_limit
                next_due[name] = now if more else tt.next_due_after(intervals[-1])
            else:
                self._next_due[name] = tt.next_due_at(after, now)
        # Many pipelines often fall due together (the top of the hour): one transaction
        # per ~1,000 runs instead of one per pipeline. A pipeline's next due time moves
        # only once its runs are committed, so a failed transaction is retried next tick.
        chunk: list[tuple[str, list[Any], datetime | None]] = []
        size = 0
        for batch in [*batches, None]:
            if batch is not None:
                chunk.append(batch)
                size += len(batch[1])
            if chunk and (batch is None or size >= 1000):
                paused_meanwhile: set[str] = set()
                created = self.sched.create_runs_many(chunk, unless_paused=True,
                                                      paused=paused_meanwhile)
                for name, _runs, high_water in chunk:
                    if name in paused_meanwhile:
                        continue  # stays due: looked at again when unpaused
                    self._next_due[name] = next_due[name]
                    self._after[name] = _newest(self._after.get(name), high_water)
                if created:
                    ids = set(created)
                    made = Counter(name for name, runs, _ in chunk for r in runs
                                   if r.run.run_id in ids)
                    for name, n in made.items():
                        self.metrics.runs_created.labels(name, "schedule").inc(n)
                report.created.extend(created)
                if created:
                    log.info("created %d scheduled run(s) for %d pipeline(s)", len(created),
                             len(chunk))
                chunk, size = [], 0

    def _tick_assets(self, report: TickReport) -> None:
        if not self._asset_names:
            return
        latest = self.sched.latest_asset_versions(self._asset_names)
        if latest == self._seen_versions:
            return
        states = self._refresh_states(force=True)
        blocked = False
        for name, spec in self._asset_pipelines.items():
            state = states.get(name)
            consumed = state.asset_versions if state is not None else {}
            if assets_ready(spec.assets, consumed, latest, any_of=spec.any_of) is None:
                continue
            if state is not None and state.paused:
                blocked = True
                continue

            def build(consumed: dict[str, int], latest: dict[str, int],
                      name: str = name, spec: TriggerSpec = spec) -> Any:
                versions = assets_ready(spec.assets, consumed, latest, any_of=spec.any_of)
                if versions is None:
                    return None
                return self._new(name, trigger="asset", key=asset_run_key(versions),
                                 extra={"trigger": {"kind": "asset", "assets": versions}})

            run_id = self.sched.create_asset_run(name, spec.assets, build)
            if run_id is not None:
                report.created.append(run_id)
                self.metrics.runs_created.labels(name, "asset").inc()
                log.info("pipeline %s: assets updated, created run %s", name, run_id)
        if not blocked:
            self._seen_versions = latest

    def _tick_sensors(self, now: datetime, report: TickReport) -> None:
        for name, sensor in self._sensor_triggers:
            key = (name, sensor.name)
            if now < self._next_poke.get(key, now):
                continue
            self._next_poke[key] = now + timedelta(seconds=sensor.poke_interval_s)
            if self.is_paused(name):
                continue
            try:
                value = sensor.poke()
            except Exception as exc:  # noqa: BLE001 - a broken sensor must not stop the loop
                log.warning("pipeline %s: sensor %s raised %s: %s", name, sensor.name,
                            type(exc).__name__, exc)
                continue
            if not value:
                continue
            slot = int(now.timestamp() // sensor.poke_interval_s)
            new = self._new(name, trigger="sensor", key=sensor.run_key(value, slot=slot),
                            extra={"trigger": {"kind": "sensor", "sensor": sensor.name,
                                               "value": value}})
            if new is None:
                continue
            created = self.sched.create_runs(name, [new], unless_paused=True)
            report.created.extend(created)
            if created:
                self.metrics.runs_created.labels(name, "sensor").inc()
                log.info("pipeline %s: sensor %s fired, created run %s", name, sensor.name,
                         created[0])

    def _tick_sla(self, now: datetime, report: TickReport) -> None:
        if not self._sla or (self._next_sla is not None and now < self._next_sla):
            return
        self._next_sla = now + timedelta(seconds=self.sla_check_s)
        # Runs that ended since the last check (minus a margin for clock skew between
        # schedulers) are looked at once; unfinished ones until they finish or miss.
        since = (self._sla_checked_at or now - timedelta(days=1)) - timedelta(minutes=1)
        self._sla_checked_at = now
        from cadenza.core.scheduling import SlaMissRecord

        for name, sla_s in self._sla.items():
            for run in self.sched.sla_candidates(
                    name, created_before=now - timedelta(seconds=sla_s), ended_since=since):
                deadline = run.created_at + timedelta(seconds=sla_s)
                if run.ended_at is not None and run.ended_at <= deadline:
                    continue
                miss = SlaMissRecord(run_id=run.run_id, pipeline=name, sla_s=sla_s,
                                     deadline_at=deadline, detected_at=now)
                if not self.sched.record_sla_miss(miss):
                    continue  # another scheduler noticed first and fired the callback
                self.metrics.sla_misses.labels(name).inc()
                report.sla_missed.append(run.run_id)
                log.warning("pipeline %s: run %s missed its SLA of %g s (deadline %s)", name,
                            run.run_id, sla_s, deadline.isoformat())
                self._fire_sla_miss(name, run)

    def _fire_sla_miss(self, name: str, run: Any) -> None:
        from cadenza.engine.callbacks import CallbackContext, CallbackQueue

        hooks = self.pipelines[name].callbacks.on_sla_miss
        if not hooks:
            return
        queue = CallbackQueue()
        queue.add(hooks,
                  CallbackContext(pipeline=name, run_id=run.run_id, task_id=None,
                                  map_index=-1, attempt=0, state=run.state))
        queue.run_all()

    def _tick_takeover(self, now: datetime, report: TickReport) -> None:
        if self._next_takeover is not None and now < self._next_takeover:
            return
        self._next_takeover = now + timedelta(seconds=max(self.lease_s / 2, 0.5))
        for run in self.sched.stale_runs(list(self.pipelines), lease_s=self.lease_s):
            with self._lock:
                if run.run_id in self._threads or len(self._threads) >= self.max_runs:
                    continue
            if run.driver_id and driver_liveness(run.driver_id) is DriverLiveness.ALIVE:
                continue  # a live local driver whose beat is late (its lease is 30 s)
            log.warning("run %s of %s: driver %s stopped renewing its lease; taking over",
                        run.run_id, run.pipeline, run.driver_id)
            self._spawn(run.run_id, self._take_over, run)
            report.taken_over.append(run.run_id)

    def _start_queued(self, report: TickReport) -> int:
        with self._lock:
            free = self.max_runs - len(self._threads)
        if free <= 0:
            return 0
        runs = self.sched.claim_queued(self.id, self._caps, limit=free)
        for run in runs:
            self._spawn(run.run_id, self._drive, run)
            report.started.append(run.run_id)
        return len(runs)

    # -- run threads --------------------------------------------------------------------------

    def _spawn(self, run_id: str, target: Any, run: Any) -> None:
        t = threading.Thread(target=self._guard, args=(run_id, target, run),
                             name=f"cadenza-run-{run_id}", daemon=True)
        with self._lock:
            self._threads[run_id] = t
            self.metrics.runs_driving.set(len(self._threads))
        t.start()

    def _guard(self, run_id: str, target: Any, run: Any) -> None:
        try:
            target(run)
        except RunConflict as exc:
            log.info("run %s: %s", run_id, exc.message)
        except Exception:
            log.exception("run %s: the scheduler could not drive it", run_id)
        finally:
            with self._lock:
                self._threads.pop(run_id, None)
                self.metrics.runs_driving.set(len(self._threads))
            self._wake.set()

    def _drive(self, run: Any) -> None:
        try:
            drive_run(run, self.pipelines[run.pipeline], executor=self.executor,
                      settings=self.settings)
        except CadenzaError as exc:
            # It could not start (say, the executor cannot start): fail it with the reason
            # instead of leaving it claimed for another scheduler to trip on.
            if fail_run(run, error=f"the scheduler could not start it: {exc}",
                        settings=self.settings):
                return
            raise

    def _take_over(self, run: Any) -> None:
        if run.cancel_requested_at is not None:
            # Someone asked to cancel it before its driver died: finish that, not the run.
            cancel_undriven(self.store, run, lease_s=self.lease_s)
            return
        # Resume: finished tasks keep their outputs; RunConflict if its driver still lives.
        resume_run(run.run_id, pipeline=self.pipelines[run.pipeline], executor=self.executor,
                   settings=self.settings)

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no run is being driven here; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                threads = list(self._threads.values())
            if not threads:
                return True
            for t in threads:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                t.join(left)

    # -- events -------------------------------------------------------------------------------

    def _handler(self, name: str, trigger: EventTrigger) -> Any:
        pipe = self.pipelines[name]

        def handle(message_id: str, raw: Any) -> Any:
            outcome = handle_message(pipe, trigger, message_id, raw, sched=self.sched)
            status = outcome.event.status if outcome.created else "duplicate"
            self.metrics.events.labels(name, status).inc()
            if outcome.created and outcome.event.status == "run":
                self.metrics.runs_created.labels(name, "event").inc()
                self._wake.set()  # start it now, not at the next tick
            return outcome

        return handle

    def open_consumers(self) -> list[tuple[str, Any]]:
        """One consumer per EventTrigger (groups/durables are created here)."""
        if not self._consumers:
            for name, spec in self.specs.items():
                for trigger in spec.events:
                    consumer = make_consumer(trigger, name, self._handler(name, trigger),
                                             consumer=self.id, claim_idle_ms=self.claim_idle_ms)
                    try:
                        consumer.prepare()  # so messages from now on are delivered to us
                    except CadenzaError as exc:  # names the pipeline, trigger and fix
                        log.warning("%s\n  (polling retries it)", exc)
                    except Exception as exc:  # noqa: BLE001 - polling retries it
                        log.warning("pipeline %s: cannot reach %s yet: %s", name,
                                    trigger.source, exc)
                    self._consumers.append((name, consumer, None))
        return [(n, c) for n, c, _ in self._consumers]

    def poll_events(self, block_ms: int = 0) -> int:
        """Poll every consumer once, in this thread (for --once and tests)."""
        handled = 0
        for name, consumer in self.open_consumers():
            if not self.is_paused(name):
                handled += consumer.poll(block_ms)
        return handled

    def _consume(self, name: str, consumer: Any) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            if self.is_paused(name):
                self._stop.wait(1.0)
                continue
            try:
                consumer.poll(self.event_block_ms)
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - case 4 of events/messages.py: retry
                if isinstance(exc, CadenzaError):  # names the pipeline, trigger and fix
                    log.warning("%s\n  (retrying in %g s)", exc, backoff)
                else:
                    log.warning("pipeline %s: event consumer failed (%s: %s); retrying in "
                                "%g s", name, type(exc).__name__, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def start_consumers(self) -> None:
        self.open_consumers()
        for i, (name, consumer, thread) in enumerate(self._consumers):
            if thread is None:
                t = threading.Thread(target=self._consume, args=(name, consumer),
                                     name=f"cadenza-events-{name}", daemon=True)
                self._consumers[i] = (name, consumer, t)
                t.start()

    # -- service ------------------------------------------------------------------------------

    def _sleep_s(self) -> float:
        now = clock.now()
        nexts = [d for d in self._next_due.values() if d is not None]
        nexts += list(self._next_poke.values())
        left = min(((d - now).total_seconds() for d in nexts), default=self.max_sleep_s)
        return max(0.0, min(left, self.max_sleep_s))

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Run until `stop` is set (or `shutdown()`): what `cadenza scheduler` runs."""
        if stop is not None:
            self._stop = stop
        log.info("scheduler %s: %d pipelines (%d scheduled, %d with triggers)", self.id,
                 len(self.pipelines), len(self.timetables),
                 sum(1 for s in self.specs.values() if s.assets or s.sensors or s.events))
        self._refresh_states(force=True)
        self.start_consumers()
        backoff = 0.5
        try:
            while not self._stop.is_set():
                try:
                    self._refresh_states()
                    self.tick()
                    backoff = 0.5
                except StoreError as exc:
                    log.warning("scheduler: %s; retrying in %g s", exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                self._wake.wait(self._sleep_s())
                self._wake.clear()
        finally:
            self.close()

    def run_once(self, *, timeout_s: float | None = None) -> TickReport:
        """One tick plus one poll of each event consumer, then drive every claimable
        queued run to its end: what `cadenza scheduler --once` runs."""
        self._refresh_states(force=True)
        if any(s.events for s in self.specs.values()):
            self.poll_events(0)
        report = self.tick()
        while True:
            self.wait_idle(timeout_s)
            if not self._start_queued(report) and not self.running:
                return report

    def shutdown(self) -> None:
        """Ask `run_forever` to return (runs being driven are left to their leases)."""
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        for _name, consumer, thread in self._consumers:
            if thread is not None:
                thread.join(timeout=5)
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("closing a consumer: %s", exc)
        self._consumers.clear()


def _newest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


# -- plain functions for the CLI ---------------------------------------------------------------


def set_paused(pipeline: str, paused: bool, *, settings: Settings | None = None) -> Any:
    """Pause or unpause a pipeline by name (`cadenza pipelines pause|unpause NAME`)."""
    from cadenza.store import open_store
    from cadenza.store.scheduling import scheduling_store

    s = settings or get_settings()
    return scheduling_store(open_store(s.database_url)).set_paused(pipeline, paused)


def pause(pipeline: str, *, settings: Settings | None = None) -> Any:
    return set_paused(pipeline, True, settings=settings)


def unpause(pipeline: str, *, settings: Settings | None = None) -> Any:
    return set_paused(pipeline, False, settings=settings)
