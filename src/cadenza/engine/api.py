"""The engine's entry points: start a run and wait for it; what a finished run looks like.

`run_pipeline` is what `PipelineDef.run()` calls. It validates parameters, writes the run and
its task instances in one transaction, and drives it on the chosen executor. A failed task
does not raise: the `RunResult` says what failed and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cadenza.core import clock
from cadenza.core.errors import (
    CadenzaError,
    InternalError,
    PipelineNotFound,
    RunNotFound,
    UsageError,
)
from cadenza.core.ids import new_driver_id, new_run_id
from cadenza.core.records import (
    RERUN,
    TASK_ORDER,
    ErrorInfo,
    RunRecord,
    TaskInstanceRecord,
    ValueRef,
    WriteBatch,
)
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState, TaskState, move_run
from cadenza.core.task_secrets import Secrets, secret_key
from cadenza.graph.plan import HasPlan, Plan, plan_of

if TYPE_CHECKING:
    from cadenza.executors.base import Executor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunResult:
    """A finished run: `state`, `run_id`, `outputs[task_id]`, `task_states[task_id]`.

    Outputs are loaded lazily from where the run stored them (a mapped task's output is the
    list of its instances' outputs, in map order). So are the task instances' stored rows
    (`instances`) of a run just driven in this process: its state and its tasks' states come
    from the driver, whose last commit wrote them; the rows are read from the store on first
    use of `instances`, `outputs` or `failed` (a chain of 200 tasks: 200 rows, ~0.1 M
    instructions each through SQLAlchemy's result and the record codec).
    """

    run_id: str
    pipeline: str
    state: RunState
    task_states: dict[str, TaskState]
    _instances: list[TaskInstanceRecord] | None = None
    error: str | None = None
    _artifact_root: str = ""
    _live: dict[tuple[str, int], Any] = field(default_factory=dict)
    _outputs: Mapping[str, Any] | None = None
    _pipeline: Plan | None = None
    _source: str = ""
    _read_instances: Callable[[], list[TaskInstanceRecord]] | None = None

    @property
    def instances(self) -> list[TaskInstanceRecord]:
        """The run's task instances as stored, ordered by task id then map index."""
        if self._instances is None:
            read = self._read_instances
            if read is None:
                raise InternalError(f"run {self.run_id}: a RunResult without its instances")
            rows = read()
            if not rows and self.task_states:
                raise RunNotFound(
                    f"run {self.run_id} is no longer in the store: it was deleted (cadenza "
                    f"runs delete, cadenza gc) before this result read its task instances",
                    pipeline=self.pipeline,
                    hint="read result.outputs (or result.instances) before deleting the "
                    "run, or keep it: cadenza gc --keep-last N / --older-than AGE")
            self._instances = rows
            self._read_instances = None
        return self._instances

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCESS

    @property
    def outputs(self) -> Mapping[str, Any]:
        if self._outputs is None:
            self._outputs = _LazyOutputs(self)
        return self._outputs

    @property
    def failed(self) -> dict[str, ErrorInfo]:
        """Failed task instances (label -> error)."""
        return {
            (t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"): t.error
            for t in self.instances
            if t.state is TaskState.FAILED and t.error is not None
        }

    def resume(self, **kwargs: Any) -> RunResult:
        """Re-run this run from the point of failure (finished tasks keep their outputs).

        A run fetched with `cadenza.get_run` loads its pipeline from where it was started
        (its file, or module); pass `pipeline=` when that is not importable here.
        """
        from cadenza.engine.resume import load_pipeline, resume_run

        if kwargs.get("pipeline") is None and self._pipeline is None and not self.ok:
            try:
                kwargs["pipeline"] = load_pipeline(self._source)
            except CadenzaError as exc:
                raise PipelineNotFound(
                    f"cannot resume run {self.run_id}: {exc.message}",
                    pipeline=self.pipeline,
                    hint=f"import the pipeline and pass it: result.resume(pipeline="
                    f"{self.pipeline}) (the run was started from {self._source or 'unknown'})",
                ) from exc
        kwargs.setdefault("pipeline", self._pipeline)
        result: RunResult = resume_run(self.run_id, **kwargs)
        return result

    def __repr__(self) -> str:
        failed = ", ".join(self.failed) or "none"
        return (f"<RunResult {self.pipeline} {self.run_id} {self.state}: "
                f"{len(self.task_states)} tasks, failed: {failed}>")


class _LazyOutputs(Mapping[str, Any]):
    def __init__(self, result: RunResult) -> None:
        self._r = result
        self._cache: dict[str, Any] = {}
        self._by_task: dict[str, list[TaskInstanceRecord]] = {}
        for ti in result.instances:
            self._by_task.setdefault(ti.task_id, []).append(ti)

    def _load(self, ti: TaskInstanceRecord) -> Any:
        key = (ti.task_id, ti.map_index)
        if key in self._r._live:
            return self._r._live[key]
        if ti.output is None or not ti.state.is_ok:
            return None
        from cadenza.artifacts.store import load_value
        from cadenza.core.errors import ArtifactError

        try:
            return load_value(ti.output, root=self._r._artifact_root)
        except Exception as exc:
            label = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            what = exc.message if isinstance(exc, CadenzaError) else (
                f"{ti.output.uri} cannot be read: {type(exc).__name__}: {exc}")
            raise ArtifactError(
                f"run {self._r.run_id}: the output of task '{label}' cannot be loaded: {what}",
                pipeline=self._r.pipeline, task=label,
                hint=getattr(exc, "hint", None) or "resume the run so the task that produced "
                "it runs again",
            ) from exc

    def __getitem__(self, task_id: str) -> Any:
        if task_id in self._cache:
            return self._cache[task_id]
        rows = self._by_task.get(task_id)
        if rows is None:
            raise KeyError(f"no task '{task_id}' in run {self._r.run_id}; tasks: "
                           f"{', '.join(sorted(self._by_task))}")
        summary = next((r for r in rows if r.map_index < 0), None)
        children = sorted((r for r in rows if r.map_index >= 0), key=lambda r: r.map_index)
        if summary is not None and summary.map_count is not None:
            value: Any = [self._load(c) for c in children]
        else:
            value = self._load(rows[0])
        self._cache[task_id] = value
        return value

    def __iter__(self) -> Any:
        return iter(self._by_task)

    def __len__(self) -> int:
        return len(self._by_task)


def result_from_store(store: Any, run_id: str, artifact_root: str,
                      live: dict[tuple[str, int], Any] | None = None, *,
                      run: RunRecord | None = None) -> RunResult:
    """The RunResult of a stored run (`run`: its record, when the caller has just read it).
    Outputs are not read here: `outputs` loads each on first access."""
    if run is None:
        run = store.get_run(run_id)
    tis = store.get_task_instances(run_id)
    states = {ti.task_id: ti.state for ti in tis if ti.map_index < 0}
    return RunResult(run_id=run_id, pipeline=run.pipeline, state=run.state, task_states=states,
                     _instances=tis, error=run.error, _artifact_root=artifact_root,
                     _live=live or {}, _source=run.source)


def result_of_driver(driver: Any, store: Any, artifact_root: str) -> RunResult:
    """The RunResult of the run `driver` just drove to its end: its state, error and task
    states as the driver's last commit wrote them; the stored rows read on first use."""
    run: RunRecord = driver.run
    run_id = run.run_id
    # In task id order, as the stored rows come (task_states was built from them).
    states = {task_id: driver.nodes[task_id].summary.state for task_id in sorted(driver.nodes)}
    return RunResult(run_id=run_id, pipeline=run.pipeline, state=run.state, task_states=states,
                     error=run.error, _artifact_root=artifact_root, _live=driver.values,
                     _source=run.source,
                     _read_instances=lambda: store.get_task_instances(run_id))


def _start_executor(name: str) -> Any:
    """Start the executor in a background thread; returns a function that waits for it.

    Starting the process pool mostly waits on other processes, so overlapping it with
    opening the store (SQLAlchemy's import alone is ~0.25 s here) shortens a cold start."""
    import threading

    box: dict[str, Any] = {}

    def start() -> None:
        try:
            box["executor"] = _executor_for(name)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=start, name="cadenza-executor-start", daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["executor"]

    return wait


def _import_driving_modules() -> None:
    """Import what driving a run needs (~70 M instructions) while worker processes start in
    other processes (the forkserver's preload: most of a one-task script's cold start), so
    that it is not done after waiting for them."""
    from cadenza.engine import cache, cancel, driver, lease, resources  # noqa: F401


def _executor_for(name: str) -> Any:
    from cadenza.executors.base import get_executor

    return get_executor(name)


def preflight_executor(executor: Any, settings: Settings, pipeline: str) -> None:
    """Let an executor whose workers run elsewhere (ray) check, before the run starts, that
    they can reach the artifact store; raises its ConfigError naming the fix."""
    executor.preflight(settings.artifact_root, pipeline=pipeline)


def _admission_for(store: Any) -> Any:
    from cadenza.engine.ready import DEFAULT_POOL, default_pool_slots, shared_admission

    store.ensure_pool(DEFAULT_POOL, default_pool_slots())
    return shared_admission({p.name: p.slots for p in store.list_pools()})


def check_artifact_root(settings: Settings, pipeline: str) -> None:
    """ConfigError with the install command when the artifact root's filesystem (s3fs,
    gcsfs, ...) is missing: before a run starts, not at its first large output."""
    if "://" in settings.artifact_root:  # a local folder needs no check (nor the import)
        from cadenza.artifacts.store import check_root

        check_root(settings.artifact_root, pipeline=pipeline)


def run_pipeline(
    pipeline: Plan | HasPlan,
    params: Mapping[str, Any],
    *,
    executor: str | None = None,
    settings: Settings | None = None,
    trigger: str = "manual",
    run_id: str | None = None,
    logical_date: Any = None,
    data_interval: tuple[Any, Any] | None = None,
    on_start: Any = None,
) -> RunResult:
    """Validate, record and drive one run of `pipeline` to its end."""
    pipeline = plan_of(pipeline)
    settings = settings or get_settings()
    check_artifact_root(settings, pipeline.name)
    values, stored = pipeline.validate_params(params)
    executor_name = executor or settings.executor
    # Worker processes start (in other processes) while this one imports and opens the
    # store: importing SQLAlchemy is most of a cold start, so it must come after this line.
    pending = _start_executor(executor_name)
    from cadenza.store import open_store

    store = open_store(settings.database_url)
    _import_driving_modules()
    ex = pending()
    preflight_executor(ex, settings, pipeline.name)
    driver_id = new_driver_id()
    now = clock.now()
    run, _ = new_run(pipeline, params, trigger=trigger, run_id=run_id,
                     logical_date=logical_date, data_interval=data_interval,
                     stored_params=stored, created_at=now, state=RunState.RUNNING)
    run = replace(run, started_at=now, executor=executor_name, driver_id=driver_id,
                  heartbeat_at=now)
    driver = make_driver(pipeline, run, values, store=store, settings=settings, executor=ex)
    rows = driver.initial_rows()
    store.create_run(run, rows)
    return _drive(driver, pipeline, store, settings, on_start)


def new_run(
    pipeline: Plan | HasPlan,
    params: Mapping[str, Any],
    *,
    trigger: str,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    extra: dict[str, Any] | None = None,
    run_id: str | None = None,
    created_at: datetime | None = None,
    stored_params: dict[str, Any] | None = None,
    state: RunState = RunState.QUEUED,
) -> tuple[RunRecord, list[TaskInstanceRecord]]:
    """A run of `pipeline` and its task instances, ready to insert (nothing is written).

    The scheduler, backfill and event consumers create runs `queued` this way and insert
    them under a unique run key; a scheduler then claims one and calls `drive_run`.
    Parameters are validated here (ParameterError names the problem) unless
    `stored_params`, their already validated JSON form, is given.
    """
    pipeline = plan_of(pipeline)
    if stored_params is None:
        _, stored_params = pipeline.validate_params(params)
    rid = run_id or new_run_id()
    run = RunRecord(
        run_id=rid,
        pipeline=pipeline.name,
        state=state,
        params=stored_params,
        created_at=created_at or clock.now(),
        trigger=trigger,
        logical_date=logical_date,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        source=pipeline.source,
        tags=pipeline.tags,
        # Graph order, for `cadenza runs show` (the store keeps no edges).
        extra={**(extra or {}), TASK_ORDER: pipeline.graph.topological_ids()},
    )
    tis = [TaskInstanceRecord(run_id=rid, task_id=node.id, map_index=-1,
                              state=TaskState.PENDING, pool=node.options.pool)
           for node in pipeline.graph]
    return run, tis


def drive_run(
    run: RunRecord,
    pipeline: Plan | HasPlan,
    *,
    executor: str | None = None,
    settings: Settings | None = None,
    on_start: Any = None,
) -> RunResult:
    """Drive a `queued` run that `run.driver_id` has claimed, in this thread, to its end.

    The run moves QUEUED -> RUNNING (with `started_at`) in the same transaction as nothing
    else, before any task starts; heartbeats keep the claim alive. If its stored parameters
    no longer validate (the pipeline changed since it was queued), it fails with the reason.
    """
    from cadenza.store import open_store

    pipeline = plan_of(pipeline)
    if run.state is not RunState.QUEUED or not run.driver_id:
        raise UsageError(f"run {run.run_id} is {run.state}, not a claimed queued run",
                         pipeline=run.pipeline,
                         hint="claim it first (store.claim_queued), or resume it instead")
    settings = settings or get_settings()
    store = open_store(settings.database_url)
    try:
        check_artifact_root(settings, pipeline.name)
        values, _ = pipeline.validate_params(run.params)
        error = None
    except CadenzaError as exc:
        values, error = {}, f"the run cannot start: {exc}"
    executor_name = executor or settings.executor
    now = clock.now()
    run = move_run(run, RunState.RUNNING, started_at=now, executor=executor_name,
                   heartbeat_at=now)
    ex = _executor_for(executor_name) if error is None else None
    if ex is not None:
        try:
            preflight_executor(ex, settings, pipeline.name)
        except CadenzaError as exc:
            error = f"the run cannot start: {exc}"
    rerun = run.extra.get(RERUN)
    if rerun is not None:
        # Requeued by a retry or resume (engine/rerun.py): the stored rows are its history.
        run = replace(run, extra={k: v for k, v in run.extra.items() if k != RERUN})
    driver = make_driver(pipeline, run, values, store=store, settings=settings, executor=ex)
    if rerun is None:
        driver.initial_rows()  # the task instance rows were written with the queued run
    else:
        from cadenza.engine.resume import rebuild

        tasks = rerun.get("tasks")
        driver.batch.attempts.extend(rebuild(
            driver.active, run.run_id, store.get_task_instances(run.run_id),
            rerun=None if tasks is None else frozenset(tasks)))
    driver.batch.run_updates.append(run)
    if error is not None:
        log.error("run %s of %s: %s", run.run_id, pipeline.name, error)
        driver.fail(error)  # nobody cancelled it
        return result_from_store(store, run.run_id, settings.artifact_root)
    return _drive(driver, pipeline, store, settings, on_start)


def fail_run(run: RunRecord, *, error: str, settings: Settings | None = None) -> bool:
    """Fail a claimed queued run that could not be started (its executor cannot start, its
    pipeline cannot be loaded): unfinished task instances are cancelled and the run ends
    `failed` with `error`. False, changing nothing, if the run has started or ended."""
    from cadenza.store import open_store

    settings = settings or get_settings()
    store = open_store(settings.database_url)
    claimed_by = run.driver_id
    run = store.get_run(run.run_id)
    if run.state is not RunState.QUEUED:
        return False
    now = clock.now()
    # Only while the claim is still ours (another scheduler may have taken the run over).
    batch = WriteBatch(fence=(run.run_id, claimed_by) if claimed_by else None)
    from cadenza.engine.active import cancel_rows

    # The state owner's rule for a run no driver holds: what is unfinished is cancelled.
    batch.task_instance_updates.extend(
        cancel_rows(store.get_task_instances(run.run_id), reason=error))
    batch.run_updates.append(move_run(run, RunState.FAILED, ended_at=now, error=error,
                                      driver_id=None))
    store.write(batch)
    log.error("run %s of %s failed before it started: %s", run.run_id, run.pipeline, error)
    return True


def make_driver(pipeline: Plan | HasPlan, run: RunRecord, values: dict[str, Any], *, store: Any,
                settings: Settings, executor: Executor | None) -> Any:
    """A RunDriver for `run` of `pipeline` with the settings' store, cache and pools."""
    from cadenza.engine.driver import RunDriver

    assert run.driver_id, "a driver needs the id it holds the run's lease under"
    pipeline = plan_of(pipeline)
    warn_advisory_timeouts(pipeline, executor)
    return RunDriver(
        graph=pipeline.graph,
        run=run,
        param_values=values,
        store=store,
        executor=executor,
        artifact_root=settings.artifact_root,
        logs_dir=str(settings.logs_dir),
        inline_limit_bytes=settings.inline_limit_bytes,
        admission=_admission_for(store),
        driver_id=run.driver_id,
        cache=_cache_for(store, settings),
        tracker=pipeline.tracking,
        pipeline_callbacks=pipeline.callbacks.as_dict(),
        secrets=secrets_for(store, settings),
    )


def secrets_for(store: Any, settings: Settings) -> Secrets | None:
    """The secrets a run hands its tasks (`get_context().secrets`), decrypted here in the
    driver's process, or None when none are stored. One SELECT per run; the key is read and
    cryptography imported only when there are secrets.

    How a `processes` worker gets them: inside each TaskCall's context, pickled over the pipe
    to its worker process (multiprocessing's Connection, memory only); no plaintext is ever
    written to disk or put in the environment, and the worker never needs the key."""
    # Read only when secrets exist; a broken key fails only the tasks that read a secret.
    secrets: Secrets = store.load_secrets(lambda: secret_key(settings.home, create=False))
    return secrets if (len(secrets) or secrets.unavailable) else None


def warn_advisory_timeouts(pipeline: Plan, executor: Executor | None) -> str | None:
    """Say once, at run start, which `timeout=`s the executor cannot enforce by stopping the
    task (`timeout_note()` of threads and inline; processes kills). Returns the warning."""
    note = executor.timeout_note() if executor is not None else None
    if executor is None or not note:
        return None
    timed = [n for n in pipeline.graph
             if n.options.timeout_s is not None and n.options.timeout_s > 0
             and n.options.sensor is None
             and not n.options.isolated]  # env tasks run in a worker process that is killed
    if not timed:
        return None
    tasks = ", ".join(f"'{n.id}' ({n.options.timeout_s:g} s)" for n in timed)
    what = "the timeout of task" if len(timed) == 1 else "the timeouts of tasks"
    message = (f"pipeline '{pipeline.name}': on the {executor.name} executor, {what} {tasks} "
               f"cannot stop a blocking call: {note}. Fix: run it with --executor processes "
               "(executor='processes'), which kills a task at its deadline")
    log.warning("%s", message)
    return message


def _drive(driver: Any, pipeline: Plan, store: Any, settings: Settings,
           on_start: Any) -> RunResult:
    from cadenza.engine.cancel import CANCEL_REASON
    from cadenza.engine.lease import heartbeats

    run = driver.run
    if on_start is not None:
        on_start(driver)
    # A cancel asked for from any process (`cadenza runs cancel`) reaches driver.cancel()
    # through the heartbeat thread, which polls the store anyway.
    with heartbeats().holding(store, run.run_id, run.driver_id,
                              on_cancel=lambda: driver.cancel(reason=CANCEL_REASON),
                              on_taken=driver.taken_over):
        state = driver.drive()
    log.info("run %s of %s (%s) ended %s", run.run_id, pipeline.name, run.trigger, state)
    result = result_of_driver(driver, store, settings.artifact_root)
    result._pipeline = pipeline
    return result


def _cache_for(store: Any, settings: Settings) -> Any:
    try:
        from cadenza.engine.cache import CachePolicy
    except ImportError:
        return None
    return CachePolicy(store, settings)


def source_of(pipeline: Plan | HasPlan) -> str:
    """Where a run's pipeline can be loaded from again ("path/file.py:name")."""
    return plan_of(pipeline).source


def outputs_of(instances: list[TaskInstanceRecord]) -> dict[str, ValueRef | None]:
    return {ti.task_id: ti.output for ti in instances if ti.map_index < 0}


__all__ = [
    "CadenzaError",
    "RunResult",
    "drive_run",
    "fail_run",
    "make_driver",
    "new_run",
    "result_from_store",
    "run_pipeline",
    "source_of",
]
