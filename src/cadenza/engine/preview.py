"""`cadenza plan`: before a run, which task instances the cache would serve and which would run, and why.

What belongs here: predicting the cache decisions of a run from the store, without running
anything. What does not: computing keys (`engine/cache.py`'s pure `cache_key_parts`, shared
with the driver so the two cannot disagree), printing (the CLI), the cache itself.

How the prediction works. Tasks are visited in topological order. A task with `cache=True`
whose data inputs are all known gets its key computed exactly as `CachePolicy` will compute
it, and the store is asked for an entry, with the same expiration rule. A hit makes its
output known (the reference the run would reuse), so the next task's key can be computed
in turn; a miss, or a task without cache, "will run", and its downstream tasks' keys cannot
be known before it has run ("upstream will run"). A mapped task whose list is known (a
parameter, or a cached upstream whose output is loaded from where it is stored) is planned
per instance; otherwise it is planned as a whole.

A miss is explained by comparing its key's parts with those recorded for the newest
successful instance of the same task in an earlier run of the pipeline
(`RunStore.latest_task_instance`): code (naming the functions whose source changed), then
the values the code reads ("global SCALE changed", "closure k changed"), then `version`,
then inputs (naming the arguments). A task that reads a value with no stable hash "will
run" as "not cacheable (global NAME)", with the run's one-line warning in `warning`. Branch
choices and trigger rules are not predicted: every task is planned as if the run reached it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cadenza.core.records import TaskInstanceRecord, ValueRef
from cadenza.core.settings import Settings, get_settings
from cadenza.engine.cache import (
    FingerprintMemo,
    artifact_exists,
    cache_key_parts,
    key_from_parts,
    not_before_for,
    uncacheable_message,
)
from cadenza.graph.envspec import lock_changes, lock_digest
from cadenza.graph.fingerprint import TaskFingerprint
from cadenza.graph.model import ParamValue, PipelineGraph, TaskNode, TaskOutput, substitute
from cadenza.graph.plan import HasPlan, Plan, plan_of

log = logging.getLogger(__name__)

CACHED: Final = "cached"
WILL_RUN: Final = "will run"
# The same requirement set resolved to other versions (its env was built again).
LOCK_CHANGED: Final = "environment's resolved lock changed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanEntry:
    """The predicted fate of one task instance.

    `map_index` is -1 for a task that is not mapped, i for instance i of a mapped task, and
    None for the line summarising a mapped task (reason "N of M instances cached", or why its
    instances could not be listed). `reason` is one of: "cache hit (from run X task Y)",
    "code changed (function f)", "global NAME changed", "closure NAME changed", "input
    changed (arg)", "version changed", "environment's resolved lock changed (pkg 1.0 ->
    1.1)", "environment not built on this machine yet", "expired", "no entry", "upstream will run", "cache
    off", "not cacheable (global NAME)", "N of M instances cached", and, rarely, "cached
    artifact missing (from run X task Y)" or "cannot list its instances: ...". `changes`
    lists every difference found when the key changed (`reason` is the first), `origin` the
    instance a hit would be served from, and `warning` the line the run will log about a
    task that is not cacheable.
    """

    task_id: str
    map_index: int | None
    decision: str  # CACHED | WILL_RUN
    reason: str
    cache_key: str | None = None
    origin: dict[str, Any] | None = None
    changes: tuple[str, ...] = ()
    warning: str | None = None

    @property
    def is_cached(self) -> bool:
        return self.decision == CACHED

    @property
    def label(self) -> str:
        if self.map_index is None:
            return f"{self.task_id}[*]"
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "map_index": self.map_index,
            "decision": self.decision,
            "reason": self.reason,
            "cache_key": self.cache_key,
            "origin": self.origin,
            "changes": list(self.changes),
            "warning": self.warning,
        }


def plan_pipeline(
    pipeline_def: Plan | HasPlan,
    params: Mapping[str, Any],
    *,
    settings: Settings | None = None,
    store: Any = None,
) -> list[PlanEntry]:
    """Predict, without running anything, which tasks a run with `params` would serve from
    the cache and which it would run, with the reason for each.

    Parameters are validated as `run()` validates them (ParameterError if wrong). `store`
    defaults to the one of `settings` (default: the process's settings).

    Example:
        >>> for entry in plan_pipeline(training, {"n": 500}):
        ...     print(entry.label, entry.decision, entry.reason)
        load cached cache hit (from run 20260301-1200-ab12 task load)
        train will run code changed (function build_model)
        evaluate will run upstream will run
    """
    plan = plan_of(pipeline_def)
    settings = settings or get_settings()
    values, _ = plan.validate_params(params)
    if store is None:
        from cadenza.store import open_store

        store = open_store(settings.database_url)
    planner = _Planner(plan.graph, values, store, settings.artifact_root)
    return planner.plan()


def format_plan(entries: Sequence[PlanEntry]) -> str:
    """The plan as plain text, one line per entry (the CLI renders its own table)."""
    if not entries:
        return ""
    width = max(len(e.label) for e in entries)
    lines = [f"{e.label:<{width}}  {e.decision:<8}  {e.reason}" for e in entries]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


class _Unknown:
    """The output of a task that will run: not known before the run."""

    __slots__ = ()


_UNKNOWN: Final = _Unknown()


@dataclass(slots=True)
class _Planner:
    graph: PipelineGraph
    params: dict[str, Any]
    store: Any
    artifact_root: str
    # task id -> the output reference a hit would reuse (a list of them for a mapped task),
    # or _UNKNOWN when the task will run.
    known: dict[str, Any] = field(default_factory=dict)
    entries: list[PlanEntry] = field(default_factory=list)
    fingerprints: FingerprintMemo = field(default_factory=FingerprintMemo)
    warned: set[int] = field(default_factory=set)  # id(fn) of the tasks warned about
    # (requirements, python) -> the resolved lock of its env in this machine's env cache
    # (None: not built here), read once per plan; the plan never builds one.
    locks: dict[tuple[tuple[str, ...], str | None], str | None] = field(default_factory=dict)

    def plan(self) -> list[PlanEntry]:
        for node in _topological(self.graph):
            if node.is_mapped:
                self._plan_mapped(node)
            else:
                self._plan_single(node)
        return self.entries

    # -- one task -------------------------------------------------------------------------
    def _upstream_runs(self, node: TaskNode) -> bool:
        return any(self.known.get(up, _UNKNOWN) is _UNKNOWN for up in node.data_upstream)

    def _ref_of(self, marker: TaskOutput | ParamValue) -> Any:
        if isinstance(marker, ParamValue):
            return self.params[marker.name]
        return self.known[marker.task_id]

    def _fingerprint(self, node: TaskNode) -> TaskFingerprint:
        """Taken once per task, as the run takes it (`CachePolicy.fingerprint`)."""
        return self.fingerprints.of(node)

    def _uncacheable(self, node: TaskNode, map_index: int | None) -> bool:
        """The task reads a value with no stable hash: it will run, and the run warns."""
        fp = self._fingerprint(node)
        if fp.is_cacheable:
            return False
        message = uncacheable_message(self.graph.name, node, fp)
        if id(node.fn) not in self.warned:  # once per function, as the run says it
            self.warned.add(id(node.fn))
            log.warning("%s", message)
        self.entries.append(PlanEntry(
            task_id=node.id, map_index=map_index, decision=WILL_RUN,
            reason=f"not cacheable ({fp.unhashable[0].name})", warning=message,
        ))
        self.known[node.id] = _UNKNOWN
        return True

    def _plan_single(self, node: TaskNode) -> None:
        if not node.options.cache:
            self._will_run(node, -1, "cache off")
            return
        if self._uncacheable(node, -1):
            return
        if self._upstream_runs(node):
            self._will_run(node, -1, "upstream will run")
            return
        entry, output = self._look_up(node, -1, None)
        self.entries.append(entry)
        self.known[node.id] = output

    def _will_run(self, node: TaskNode, map_index: int | None, reason: str) -> None:
        self.entries.append(
            PlanEntry(task_id=node.id, map_index=map_index, decision=WILL_RUN, reason=reason)
        )
        self.known[node.id] = _UNKNOWN

    # -- a mapped task --------------------------------------------------------------------
    def _plan_mapped(self, node: TaskNode) -> None:
        if not node.options.cache:
            self._will_run(node, None, "cache off")
            return
        if self._uncacheable(node, None):
            return
        if self._upstream_runs(node):
            self._will_run(node, None, "upstream will run")
            return
        try:
            axes = [self._axis(node.args[name]) for name in node.mapped]
        except Exception as exc:  # noqa: BLE001 - the run would fail the task the same way
            self._will_run(node, None, f"cannot list its instances: {exc}")
            return
        instances: list[PlanEntry] = []
        outputs: list[Any] = []
        for i, combo in enumerate(itertools.product(*axes)):
            entry, output = self._look_up(node, i, dict(zip(node.mapped, combo, strict=True)))
            instances.append(entry)
            outputs.append(output)
        hits = sum(1 for e in instances if e.is_cached)
        self.entries.append(
            PlanEntry(
                task_id=node.id,
                map_index=None,
                decision=CACHED if hits == len(instances) else WILL_RUN,
                reason=f"{hits} of {len(instances)} instances cached",
            )
        )
        self.entries.extend(instances)
        self.known[node.id] = outputs if hits == len(instances) else _UNKNOWN

    def _axis(self, value: Any) -> list[Any]:
        """The elements an expanded argument ranges over, as the driver's `_axis` sees them:
        a mapped upstream's per-instance references, or the loaded items of a list."""
        if type(value) is TaskOutput:
            up = self.graph.nodes[value.task_id]
            ref = self.known[value.task_id]
            if up.is_mapped:
                return list(ref)
            items = self._load(ref)
            if not isinstance(items, (list, tuple)):
                raise TypeError(
                    f"expand() needs a list, but task '{value.task_id}' returned "
                    f"{type(items).__name__}"
                )
            return list(items)
        if type(value) is ParamValue:
            items = self.params[value.name]
            if not isinstance(items, (list, tuple)):
                raise TypeError(
                    f"expand() needs a list, but parameter '{value.name}' is {type(items).__name__}"
                )
            return list(items)
        return list(substitute(value, self._ref_of))

    def _load(self, ref: ValueRef | None) -> Any:
        if ref is None:
            return None
        from cadenza.artifacts.store import load_value

        return load_value(ref, root=self.artifact_root)

    # -- the cache ------------------------------------------------------------------------
    def _look_up(
        self, node: TaskNode, map_index: int, mapped_inputs: dict[str, Any] | None
    ) -> tuple[PlanEntry, Any]:
        """The entry of one instance, and the output a run would give it (_UNKNOWN if it runs)."""
        lock = self._env_lock(node) if node.options.isolated else None
        parts = cache_key_parts(node, self._ref_of, mapped_inputs=mapped_inputs,
                                fingerprint=self._fingerprint(node),
                                env_lock=None if lock is None else lock_digest(lock))
        key = key_from_parts(parts)

        def entry(decision: str, reason: str, **kw: Any) -> PlanEntry:
            return PlanEntry(
                task_id=node.id,
                map_index=map_index,
                decision=decision,
                reason=reason,
                cache_key=key,
                **kw,
            )

        if node.options.isolated and lock is None:
            # The run builds it before looking the task up; its lock may be the one an entry
            # was made with, or not: the plan cannot say without building.
            return entry(WILL_RUN, "environment not built on this machine yet (its resolved "
                                   "lock is part of the key)"), _UNKNOWN
        hit = self.store.find_cached(key, not_before=not_before_for(node))

        if hit is not None and hit.output is not None:
            origin = _origin(hit)
            where = f"from run {hit.run_id} task {_label(hit)}"
            if hit.output.kind == "artifact" and not artifact_exists(hit.output.uri):
                return entry(WILL_RUN, f"cached artifact missing ({where})"), _UNKNOWN
            return entry(CACHED, f"cache hit ({where})", origin=origin), hit.output
        reason, changes = self._explain(node, map_index, parts, key)
        if reason == LOCK_CHANGED:
            reason = self._lock_change(node, map_index, lock or "")
            changes = (reason, *changes[1:])
        return entry(WILL_RUN, reason, changes=changes), _UNKNOWN

    def _env_lock(self, node: TaskNode) -> str | None:
        """The lock of `node`'s env in this machine's env cache, or None if not built here."""
        spec = (node.options.requirements, node.options.python)
        if spec not in self.locks:
            from cadenza.executors.base import get_executor

            self.locks[spec] = get_executor("inline").env_lock(*spec, build=False)
        return self.locks[spec]

    def _lock_change(self, node: TaskNode, map_index: int, lock: str) -> str:
        """LOCK_CHANGED with the packages that changed since the previous successful
        instance's attempt (its `env.lock` row), when that is recorded."""
        previous = self.store.latest_task_instance(
            self.graph.name, node.id, map_index=map_index, successful=True)
        if previous is None:
            return LOCK_CHANGED
        before = next((str(m.value) for m in self.store.get_metrics(previous.run_id)
                       if m.task_id == node.id and m.map_index == previous.map_index
                       and m.attempt == previous.attempt and m.name == "env.lock"
                       and m.kind == "env"), None)
        changes = lock_changes(before, lock) if before is not None else []
        if not changes:
            return LOCK_CHANGED
        shown = ", ".join(changes[:5]) + (f", {len(changes) - 5} more" if len(changes) > 5
                                          else "")
        return f"{LOCK_CHANGED} ({shown})"

    def _explain(
        self, node: TaskNode, map_index: int, parts: dict[str, Any], key: str
    ) -> tuple[str, tuple[str, ...]]:
        """Why `key` has no usable entry.

        1. An entry exists but ended before `cache_expiration` allows -> "expired".
        2. No earlier successful instance of this task (at this map index) in a run of this
           pipeline recorded its key parts -> "no entry".
        3. Its parts differ -> the first difference: code, values, version, inputs.
        4. They are the same (its entry was made by a run of another pipeline and has been
           deleted, or the key was computed differently by an older Cadenza) -> "no entry".
        """
        if node.options.cache_expiration_s:
            stale = self.store.find_cached(key)
            if stale is not None and stale.output is not None:  # case 1
                ended = f"{stale.ended_at:%Y-%m-%d %H:%M:%S} UTC"
                age = f"{node.options.cache_expiration_s:g} s"
                return "expired", (
                    f"entry from run {stale.run_id} ended at {ended}, over {age} ago",
                )
        previous = self.store.latest_task_instance(
            self.graph.name, node.id, map_index=map_index, successful=True
        )
        if previous is None or previous.cache_detail is None:  # case 2
            return "no entry", ()
        changes = differences(previous.cache_detail, parts)
        if not changes:  # case 4
            return "no entry", ()
        return changes[0], tuple(changes)  # case 3


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """How two cache key parts differ, most telling first: code, values read ("global SCALE
    changed", "closure k now read"), version, inputs.

    Example:
        >>> differences({"fingerprint": "a", "functions": {"f": "1", "helper": "2"},
        ...              "version": None, "inputs": {"n": "x"}},
        ...             {"fingerprint": "b", "functions": {"f": "1", "helper": "3"},
        ...              "version": None, "inputs": {"n": "y"}})
        ['code changed (function helper)', 'input changed (n)']
    """
    out: list[str] = []
    if old.get("fingerprint") != new.get("fingerprint"):
        before, after = old.get("functions") or {}, new.get("functions") or {}
        changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
        if not changed:
            out.append("code changed")
        elif len(changed) == 1:
            out.append(f"code changed (function {changed[0]})")
        else:
            out.append(f"code changed (functions {', '.join(changed)})")
    if "values" in old or "values" in new:
        before, after = old.get("values") or {}, new.get("values") or {}
        for name in sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n)):
            if name not in after:
                out.append(f"{name} no longer read")
            elif name not in before:
                out.append(f"{name} now read")
            else:
                out.append(f"{name} changed{_versions(before[name], after[name])}")
    if old.get("version") != new.get("version"):
        out.append("version changed")
    before_env, after_env = old.get("env") or {}, new.get("env") or {}
    if before_env != after_env:
        same_spec = all(before_env.get(k) == after_env.get(k) for k in ("requirements", "python"))
        if same_spec and before_env and after_env and "lock" in before_env:
            out.append(LOCK_CHANGED)
        elif same_spec and before_env and after_env:
            out.append("environment's resolved lock now in the key (entry made before it was)")
        else:
            out.append("environment changed (requirements or python)")
    before, after = old.get("inputs") or {}, new.get("inputs") or {}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        out.append(f"input changed ({', '.join(changed)})")
    return out


def _versions(before: str, after: str) -> str:
    """" (numpy 1.26.4 -> 2.1.0)" when both are a distribution's version, else ""."""
    dist, sep, old = before.partition("==")
    other, sep2, new = after.partition("==")
    if sep and sep2 and dist == other:
        return f" ({dist} {old} -> {new})"
    return ""


def _topological(graph: PipelineGraph) -> list[TaskNode]:
    """Nodes with every upstream (data or `>>`) first; ties keep definition order."""
    nodes = graph.nodes
    waiting = {nid: sum(1 for up in n.upstream if up in nodes) for nid, n in nodes.items()}
    downstream = graph.downstream()
    order: list[TaskNode] = []
    ready = [nid for nid, count in waiting.items() if count == 0]
    position = {nid: i for i, nid in enumerate(nodes)}
    while ready:
        ready.sort(key=position.__getitem__)
        nid = ready.pop(0)
        order.append(nodes[nid])
        for down in downstream[nid]:
            waiting[down] -= 1
            if waiting[down] == 0:
                ready.append(down)
    if len(order) != len(nodes):  # a validated graph has no cycle; be safe anyway
        order.extend(n for nid, n in nodes.items() if n not in order)
    return order


def _origin(hit: TaskInstanceRecord) -> dict[str, Any]:
    return {
        "run_id": hit.run_id,
        "task_id": hit.task_id,
        "map_index": hit.map_index,
        "attempt": hit.attempt,
    }


def _label(ti: TaskInstanceRecord) -> str:
    return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"


__all__ = ["CACHED", "WILL_RUN", "PlanEntry", "differences", "format_plan", "plan_pipeline"]
