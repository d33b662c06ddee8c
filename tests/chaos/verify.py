"""What the fault campaign counts after recovery, from the store and the ledger that the
chaos pipeline's tasks append to (tests/pipelines/chaos.py).

- committed_rerun: a task instance whose success (attempt a) was committed, yet whose body
  ran again afterwards (a ledger line for an attempt after a, or the same attempt twice).
  Must be 0.
- at_least_once: a body that ran to its end in an attempt the store records as not
  successful (killed mid-attempt: its outcome was never committed), so the task ran again.
  Allowed, counted apart.
- lost: a successful (or cached) task instance whose output is missing, unreadable or not
  the value the task returned.
- corrupt: an artifact whose bytes do not hash to the SHA-256 the store recorded.
- non_final: runs not in a final state; failed: runs final but not successful.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.core.states import TaskState
from tests.pipelines import chaos

# Tasks whose value depends on the run's cache group rather than its seed.
GROUP_TASKS = {"prepare", "stats"}
DONE = {TaskState.SUCCESS, TaskState.CACHED}


@dataclass
class LedgerLine:
    run_id: str
    task_id: str
    map_index: int
    attempt: int
    pid: int
    phase: str
    at: float


def read_ledger(path: Path) -> list[LedgerLine]:
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) != 7:
            continue  # never happens with O_APPEND writes; a torn line would show in counts
        run_id, task_id, mi, attempt, pid, phase, at = parts
        lines.append(LedgerLine(run_id, task_id, int(mi), int(attempt), int(pid), phase,
                                float(at)))
    return lines


@dataclass
class Counts:
    runs: int = 0
    task_instances: int = 0
    committed_rerun: int = 0
    at_least_once: int = 0
    lost: int = 0
    corrupt: int = 0
    non_final: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        for name in ("runs", "task_instances", "committed_rerun", "at_least_once", "lost",
                     "corrupt", "non_final", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems.extend(other.problems)

    @property
    def bad(self) -> int:
        return (self.committed_rerun + self.lost + self.corrupt + self.non_final
                + self.failed)


def check_runs(store: Any, run_ids: list[str], ledger: list[LedgerLine],
               params: dict[str, dict[str, Any]]) -> Counts:
    """Count, for `run_ids`, what the module docstring lists. `params[run_id]` holds the
    run's seed and cache_group (to know every output's value)."""
    by_instance: dict[tuple[str, str, int], list[LedgerLine]] = defaultdict(list)
    for line in ledger:  # in time order: each line is one O_APPEND write
        if line.phase == "end":
            by_instance[(line.run_id, line.task_id, line.map_index)].append(line)
    counts = Counts()
    for run_id in run_ids:
        counts.runs += 1
        run = store.get_run(run_id)
        if not run.state.is_final:
            counts.non_final += 1
            counts.problems.append(f"{run_id}: left {run.state}")
        elif str(run.state) != "success":
            counts.failed += 1
            counts.problems.append(f"{run_id}: {run.state}: {run.error}")
        seed, group = params[run_id]["seed"], params[run_id]["cache_group"]
        for ti in store.get_task_instances(run_id):
            if ti.map_index == -1 and ti.task_id in ("shard", "score"):
                continue  # the mapped task's summary row; its instances are counted
            counts.task_instances += 1
            ends = by_instance.get((run_id, ti.task_id, ti.map_index), [])
            if ti.state is TaskState.SUCCESS:
                # The committed body is the last one of the committed attempt: anything that
                # ended after it ran again after the task had finished.
                mine = [i for i, e in enumerate(ends) if e.attempt == ti.attempt]
                if not mine:
                    counts.problems.append(f"{run_id} {ti.task_id}[{ti.map_index}]: success "
                                           f"at attempt {ti.attempt}, which never ran")
                    counts.lost += 1
                    continue
                winner = mine[-1]
                again = ends[winner + 1:]
                if again:
                    counts.committed_rerun += 1
                    counts.problems.append(
                        f"{run_id} {ti.task_id}[{ti.map_index}]: committed at attempt "
                        f"{ti.attempt}, ran again: {[(e.attempt, e.pid) for e in again]}")
                counts.at_least_once += winner  # bodies that ended but were not committed
            else:
                counts.at_least_once += len(ends)
            if ti.state in DONE:
                counts.lost += _check_output(ti, seed, group, run_id, counts.problems)
                counts.corrupt += _check_artifact(ti, counts.problems)
    return counts


def _value_key(ti: Any, seed: int, group: int) -> bytes | str:
    if ti.task_id == "choose":
        return "left_1" if seed % 2 == 0 else "right_1"
    task = ti.task_id
    return chaos.expected(group if task in GROUP_TASKS else seed, task, ti.map_index)


def _check_output(ti: Any, seed: int, group: int, run_id: str, problems: list[str]) -> int:
    from cadenza.artifacts.store import ArtifactStore

    ref = ti.output
    where = f"{run_id} {ti.task_id}[{ti.map_index}]"
    if ref is None:
        problems.append(f"{where}: {ti.state} without an output")
        return 1
    try:
        value = ArtifactStore("/").get(ref)
    except Exception as exc:  # noqa: BLE001 - counted: the output cannot be read back
        problems.append(f"{where}: output unreadable: {exc}")
        return 1
    if value != _value_key(ti, seed, group):
        problems.append(f"{where}: output differs from what the task returned")
        return 1
    return 0


def _check_artifact(ti: Any, problems: list[str]) -> int:
    ref = ti.output
    if ref is None or ref.kind != "artifact" or not ref.uri:
        return 0
    path = Path(ref.uri.removeprefix("file://"))
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(f"{ref.uri}: {exc}")
        return 1
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        problems.append(f"{ref.uri}: SHA-256 differs from the store's")
        return 1
    return 0
