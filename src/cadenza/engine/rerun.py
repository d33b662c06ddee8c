"""Retry and resume asked from another process (the REST API): requeue an ended run so a
scheduler drives it again, rerunning the chosen task instances.

What belongs here: deciding which tasks a retry reruns and refusing what the run's state
does not allow (StateConflict, with the reason). What does not: driving the run (a
scheduler claims the queued run and `engine.api.drive_run` replays its rows with the
`RERUN` marker: `ActiveRun.replay(rerun=...)`), or HTTP.

`request_retry`, by what is asked:
  1. `task_id=None`: every task instance that did not finish well (failed, upstream_failed,
     cancelled) runs again; StateConflict if there is none.
  2. `task_id=T`: T runs again (StateConflict unless T failed, was cancelled or
     upstream_failed), with its downstream tasks that did not finish well (they could not
     run because of T). Other failed tasks stay failed, so the run ends failed again unless
     they were T's downstream.
  3. `task_id=T, downstream=True`: T and every task downstream of it run again, successful
     ones included ("clear"); T may have succeeded.
In every case the run must have ended (StateConflict while it is queued or running: cancel
it first) and finished tasks outside the set keep their outputs. Two concurrent requests on
one run: one wins, the other gets StateConflict (a conditional UPDATE, `RunStore.requeue_run`).

`request_resume` is case 1 with resume's rule: the run goes on from its point of failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cadenza.core.errors import StateConflict, TaskNotFound
from cadenza.core.records import RERUN, RunRecord
from cadenza.core.states import RunState, TaskState, requeue_run
from cadenza.core.suggest import did_you_mean
from cadenza.engine.active import KEEP
from cadenza.graph.plan import HasPlan, Plan, plan_of
from cadenza.store import RunStore


@dataclass(frozen=True, slots=True, kw_only=True)
class RerunRequest:
    """What a retry or resume did: the run as requeued, and the tasks that will run again."""

    run: RunRecord
    tasks: tuple[str, ...]


def downstream_closure(downstream: Mapping[str, Sequence[str]], task_id: str) -> set[str]:
    """Every task reachable downstream of `task_id` (not itself)."""
    seen: set[str] = set()
    todo = list(downstream.get(task_id, ()))
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo.extend(downstream.get(t, ()))
    return seen


def tasks_to_rerun(states: Mapping[str, TaskState], downstream: Mapping[str, Sequence[str]],
                   *, task_id: str | None, downstream_too: bool, run_id: str = "",
                   pipeline: str | None = None) -> list[str]:
    """The task ids a retry reruns (cases 1-3 of the module docstring), sorted. Pure."""
    not_ok = {t for t, s in states.items() if s not in KEEP}
    if task_id is None:
        if not not_ok:
            raise StateConflict(
                f"run {run_id} has no failed, upstream_failed or cancelled task instances: "
                "nothing to retry", pipeline=pipeline,
                hint="trigger a new run, or retry one task with its downstream "
                "(task_id and downstream=true) to run it again")
        return sorted(not_ok)
    if task_id not in states:
        raise TaskNotFound(
            f"run {run_id} has no task '{task_id}'." + did_you_mean(task_id, sorted(states)),
            pipeline=pipeline, hint=f"its tasks: {', '.join(sorted(states))}")
    if task_id not in not_ok and not downstream_too:
        raise StateConflict(
            f"task '{task_id}' of run {run_id} ended {states[task_id]}: only failed, "
            "upstream_failed or cancelled tasks are retried", pipeline=pipeline, task=task_id,
            hint="retry it with downstream=true to run it and its downstream tasks again")
    below = downstream_closure(downstream, task_id) & set(states)
    chosen = {task_id} | (below if downstream_too else below & not_ok)
    return sorted(chosen)


def _ended(store: RunStore, run_id: str, verb: str) -> RunRecord:
    run = store.get_run(run_id)
    if not run.state.is_final:
        raise StateConflict(
            f"run {run_id} is {run.state}: only a run that has ended can be {verb}",
            pipeline=run.pipeline,
            hint="wait for it to end, or cancel it first (POST /api/v1/runs/{id}/cancel)"
            if run.state is RunState.RUNNING else "it has not started yet: a scheduler "
            "will drive it (cancel it first to change what it runs)")
    return run


def _requeue(store: RunStore, run: RunRecord, tasks: list[str] | None) -> RunRecord:
    new = requeue_run(run, ended_at=None, error=None, driver_id=None,
                      extra={**run.extra, RERUN: {"tasks": tasks}})
    if not store.requeue_run(new, expected=run.state):
        now = store.get_run(run.run_id)
        raise StateConflict(
            f"run {run.run_id} changed while it was being requeued (it is {now.state} now: "
            "another retry or resume came first)", pipeline=run.pipeline,
            hint="look at the run again before asking once more")
    return store.get_run(run.run_id)


def request_retry(store: RunStore, run_id: str, pipeline: Plan | HasPlan, *,
                  task_id: str | None = None, downstream: bool = False) -> RerunRequest:
    """Requeue ended run `run_id` so its chosen tasks run again (see the module docstring).

    Example:
        >>> req = request_retry(store, run_id, plan, task_id="validate")
        >>> req.run.state, req.tasks
        (<RunState.QUEUED: 'queued'>, ('train', 'validate'))
    """
    run = _ended(store, run_id, "retried")
    plan = plan_of(pipeline)
    states = {t.task_id: t.state for t in store.get_task_instances(run_id) if t.map_index < 0}
    tasks = tasks_to_rerun(states, plan.graph.downstream(), task_id=task_id,
                           downstream_too=downstream, run_id=run_id, pipeline=run.pipeline)
    return RerunRequest(run=_requeue(store, run, tasks), tasks=tuple(tasks))


def request_resume(store: RunStore, run_id: str) -> RerunRequest:
    """Requeue ended run `run_id` to go on from its point of failure (what `cadenza resume`
    does, driven by a scheduler instead of this process). StateConflict for a run that
    succeeded or has not ended."""
    run = _ended(store, run_id, "resumed")
    if run.state is RunState.SUCCESS:
        raise StateConflict(f"run {run_id} succeeded: nothing to resume",
                            pipeline=run.pipeline,
                            hint="trigger a new run, or retry a task with downstream=true")
    rows = store.get_task_instances(run_id)
    tasks = sorted({t.task_id for t in rows if t.map_index < 0 and t.state not in KEEP})
    return RerunRequest(run=_requeue(store, run, None), tasks=tuple(tasks))


__all__ = ["RerunRequest", "downstream_closure", "request_resume", "request_retry",
           "tasks_to_rerun"]
