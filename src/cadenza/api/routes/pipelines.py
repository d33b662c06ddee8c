"""`/api/v1/pipelines`: the project's pipelines (schedule, paused, next run, newest runs),
one pipeline's graph and parameter schema, pausing and unpausing its schedule.

Pipelines come from the catalog (the project's files, imported once); pause state and
runs from the store. Pausing writes the pipeline's `schedule_states` row, which every
scheduler reads: no new scheduled, asset, sensor or event runs until it is unpaused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cadenza.api.auth import RequireOperator, RequireViewer
from cadenza.api.catalog import Catalog
from cadenza.api.deps import CatalogDep, NextRunDep, NextRunFn, StoreDep
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from cadenza.api.schemas import (
    EdgeOut,
    ImportErrorOut,
    ParameterOut,
    PipelineDetailOut,
    PipelineOut,
    PipelinePage,
    RunBriefOut,
    TaskNodeOut,
)
from cadenza.core import clock
from cadenza.core.scheduling import ScheduleState
from cadenza.graph.params import type_label
from cadenza.graph.plan import Plan, describe_options
from cadenza.store import RunStore
from cadenza.store.run_views import RunBrief, recent_runs
from cadenza.store.scheduling import scheduling_store

router = APIRouter(prefix="/pipelines", tags=["pipelines"])

PipelineName = Annotated[str, Path(description="The pipeline's name.", max_length=200)]
LastRuns = Annotated[int, Query(ge=0, le=50, description="How many of each pipeline's "
                                "newest runs to include.")]


def _summaries(plans: list[Plan], catalog: Catalog, store: RunStore,
               next_run: NextRunFn | None, last: int) -> list[PipelineOut]:
    names = [p.name for p in plans]
    states = scheduling_store(store).list_states(names) if names else {}
    recent = recent_runs(store, names, last) if names else {}
    now = clock.now()
    return [_summary(p, catalog, states.get(p.name), recent.get(p.name, []), next_run, now)
            for p in plans]


def _summary(plan: Plan, catalog: Catalog, state: ScheduleState | None, recent: Sequence[RunBrief],
             next_run: NextRunFn | None, now: datetime) -> PipelineOut:
    return PipelineOut(**_summary_fields(plan, catalog, state, recent, next_run, now))


def _summary_fields(plan: Plan, catalog: Catalog, state: ScheduleState | None,
                    recent: Sequence[RunBrief], next_run: NextRunFn | None,
                    now: datetime) -> dict[str, Any]:
    paused = bool(state is not None and state.paused)
    nxt = None
    if next_run is not None and not paused and plan.schedule is not None:
        nxt = next_run(plan, state, now)
    described = plan.describe()
    return {
        "name": plan.name,
        "description": plan.description,
        "tags": list(plan.tags),
        "file": catalog.files.get(plan.name),
        "schedule": described["schedule"],
        "timezone": plan.timezone,
        "triggers": described["triggers"],
        "paused": paused,
        "next_run_at": nxt,
        "task_count": len(plan.graph),
        "last_runs": [RunBriefOut.model_validate(r, from_attributes=True) for r in recent],
    }


@router.get("", dependencies=[RequireViewer])
def list_pipelines(
    store: StoreDep,
    catalog: CatalogDep,
    next_run: NextRunDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    tag: Annotated[str | None, Query(description="Only pipelines with this tag.")] = None,
    paused: Annotated[bool | None, Query(description="Only paused (true) or active "
                                          "(false) pipelines.")] = None,
    last_runs: LastRuns = 5,
) -> PipelinePage:
    """The project's pipelines by name, with schedule, pause state, next run and newest
    runs; `import_errors` lists the files that failed to import (the others still load)."""
    after = decode_cursor(cursor, (str,))[0] if cursor else None
    plans = [p for name, p in catalog.plans.items()
             if (after is None or name > after) and (tag is None or tag in p.tags)]
    if paused is not None:
        states = scheduling_store(store).list_states([p.name for p in plans]) if plans else {}
        plans = [p for p in plans
                 if bool(states.get(p.name) and states[p.name].paused) == paused]
    page, more = plans[:limit], len(plans) > limit
    items = _summaries(page, catalog, store, next_run, last_runs)
    return PipelinePage(
        items=items,
        next_cursor=encode_cursor(page[-1].name) if more and page else None,
        import_errors=[ImportErrorOut(file=b.file, error=b.error, detail=b.detail)
                       for b in catalog.broken],
    )


@router.get("/{name}", dependencies=[RequireViewer])
def get_pipeline(name: PipelineName, store: StoreDep, catalog: CatalogDep,
                 next_run: NextRunDep, last_runs: LastRuns = 5) -> PipelineDetailOut:
    """One pipeline: its graph (nodes with mapped markers, edges), parameters with their
    JSON schema, schedule, pause state, next run and newest runs."""
    plan = catalog.get(name)
    state = scheduling_store(store).list_states([name]).get(name)
    recent = recent_runs(store, [name], last_runs).get(name, [])
    fields = _summary_fields(plan, catalog, state, recent, next_run, clock.now())
    described = plan.describe()
    return PipelineDetailOut(
        **fields,
        source=plan.source,
        start_date=described["start_date"],
        end_date=described["end_date"],
        catchup=plan.catchup,
        max_active_runs=plan.max_active_runs,
        sla_s=described["sla_s"],
        parameters=[ParameterOut(name=p.name, type=type_label(p.annotation),
                                 required=not p.has_default,
                                 default=p.default if p.has_default else None)
                    for p in plan.parameters.specs],
        params_schema=plan.parameters.json_schema(),
        nodes=[TaskNodeOut(id=n.id, task=n.task_name, function=n.fn_key, mapped=n.is_mapped,
                           mapped_args=list(n.mapped), upstream=list(n.upstream),
                           is_branch=n.options.is_branch, options=describe_options(n.options))
               for n in plan.graph],
        edges=[EdgeOut(upstream=e.upstream, downstream=e.downstream, kind=e.kind.value,
                       args=list(e.args)) for e in plan.edges],
    )


def _set_paused(name: str, paused: bool, store: RunStore, catalog: Catalog,
                next_run: NextRunFn | None) -> PipelineOut:
    plan = catalog.get(name)
    state = scheduling_store(store).set_paused(name, paused)
    recent = recent_runs(store, [name], 5).get(name, [])
    return _summary(plan, catalog, state, recent, next_run, clock.now())


@router.post("/{name}/pause", dependencies=[RequireOperator])
def pause_pipeline(name: PipelineName, store: StoreDep, catalog: CatalogDep,
                   next_run: NextRunDep) -> PipelineOut:
    """Pause the pipeline's scheduling: no scheduled, asset, sensor or event runs until it
    is unpaused (its queued and running runs still finish; triggering by hand still works)."""
    return _set_paused(name, True, store, catalog, next_run)


@router.post("/{name}/unpause", dependencies=[RequireOperator])
def unpause_pipeline(name: PipelineName, store: StoreDep, catalog: CatalogDep,
                     next_run: NextRunDep) -> PipelineOut:
    """Unpause the pipeline: the scheduler creates its due runs again at its next tick."""
    return _set_paused(name, False, store, catalog, next_run)
