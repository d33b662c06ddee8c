"""The engine's entry points: start a run and wait for it; what a finished run looks like.

`run_pipeline` is what `PipelineDef.run()` calls. It validates parameters, writes the run and
its task instances in one transaction, and drives it on the chosen executor. A failed task
does not raise: the `RunResult` says what failed and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cadenza.core import clock
from cadenza.core.errors import CadenzaError
from cadenza.core.ids import new_driver_id, new_run_id
from cadenza.core.records import ErrorInfo, RunRecord, TaskInstanceRecord, ValueRef
from cadenza.core.settings import Settings, get_settings
from cadenza.core.states import RunState, TaskState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunResult:
    """A finished run: `state`, `run_id`, `outputs[task_id]`, `task_states[task_id]`.

    Outputs are loaded lazily from where the run stored them (a mapped task's output is the
    list of its instances' outputs, in map order).
    """

    run_id: str
    pipeline: str
    state: RunState
    task_states: dict[str, TaskState]
    instances: list[TaskInstanceRecord]
    error: str | None = None
    _artifact_root: str = ""
    _live: dict[tuple[str, int], Any] = field(default_factory=dict)
    _outputs: Mapping[str, Any] | None = None
    _pipeline: Any = None

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
        """Re-run this run from the point of failure (finished tasks keep their outputs)."""
        from cadenza.engine.resume import resume_run

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

        return load_value(ti.output, root=self._r._artifact_root)

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
                      live: dict[tuple[str, int], Any] | None = None) -> RunResult:
    run = store.get_run(run_id)
    tis = store.get_task_instances(run_id)
    states = {ti.task_id: ti.state for ti in tis if ti.map_index < 0}
    return RunResult(run_id=run_id, pipeline=run.pipeline, state=run.state, task_states=states,
                     instances=tis, error=run.error, _artifact_root=artifact_root,
                     _live=live or {})


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


def _executor_for(name: str) -> Any:
    from cadenza.executors.base import get_executor

    return get_executor(name)


def _admission_for(store: Any) -> Any:
    from cadenza.engine.ready import DEFAULT_POOL, default_pool_slots, shared_admission

    store.ensure_pool(DEFAULT_POOL, default_pool_slots())
    return shared_admission({p.name: p.slots for p in store.list_pools()})


def run_pipeline(
    pipeline: Any,
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
    from cadenza.engine.driver import RunDriver
    from cadenza.store import open_store

    settings = settings or get_settings()
    values, stored = pipeline.validate_params(params)
    executor_name = executor or settings.executor
    # Worker processes start (in other processes) while this one opens the store.
    pending = _start_executor(executor_name)
    store = open_store(settings.database_url)
    ex = pending()
    driver_id = new_driver_id()
    now = clock.now()
    run = RunRecord(
        run_id=run_id or new_run_id(),
        pipeline=pipeline.name,
        state=RunState.RUNNING,
        params=stored,
        created_at=now,
        started_at=now,
        executor=executor_name,
        trigger=trigger,
        logical_date=logical_date,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        source=_source_of(pipeline),
        driver_id=driver_id,
        heartbeat_at=now,
        tags=tuple(getattr(pipeline, "tags", ()) or ()),
    )
    driver = RunDriver(
        graph=pipeline.graph,
        run=run,
        param_values=values,
        store=store,
        executor=ex,
        artifact_root=settings.artifact_root,
        logs_dir=str(settings.logs_dir),
        inline_limit_bytes=settings.inline_limit_bytes,
        admission=_admission_for(store),
        driver_id=driver_id,
        cache=_cache_for(store, settings),
        tracker=getattr(pipeline, "tracking", None),
        pipeline_callbacks=_pipeline_hooks(pipeline),
    )
    rows = driver.initial_rows()
    store.create_run(run, rows)
    if on_start is not None:
        on_start(driver)
    from cadenza.engine.lease import heartbeats

    with heartbeats().holding(store, run.run_id, driver_id):
        state = driver.drive()
    log.info("run %s of %s ended %s", run.run_id, pipeline.name, state)
    result = result_from_store(store, run.run_id, settings.artifact_root, driver.values)
    result._pipeline = pipeline
    return result


def _pipeline_hooks(pipeline: Any) -> dict[str, tuple[Any, ...]]:
    options = getattr(pipeline, "options", {}) or {}
    hooks: dict[str, tuple[Any, ...]] = {}
    for key in ("on_success", "on_failure", "on_sla_miss"):
        value = options.get(key)
        if value is not None:
            hooks[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return hooks


def _cache_for(store: Any, settings: Settings) -> Any:
    try:
        from cadenza.engine.cache import CachePolicy
    except ImportError:
        return None
    return CachePolicy(store, settings)


def _source_of(pipeline: Any) -> str:
    path = getattr(pipeline, "source_file", None)
    if path:
        return f"{path}:{pipeline.name}"
    return getattr(pipeline.graph, "source", "") or pipeline.name


def outputs_of(instances: list[TaskInstanceRecord]) -> dict[str, ValueRef | None]:
    return {ti.task_id: ti.output for ti in instances if ti.map_index < 0}


__all__ = ["RunResult", "run_pipeline", "result_from_store", "CadenzaError"]
