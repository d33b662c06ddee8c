"""Admission: may this task instance start now? Pools and machine resources.

Pool slot counts come from the store (`cadenza pools set NAME SLOTS`); usage is counted in
this process, across every run it drives, so one scheduler process enforces a pool for all of
its runs. Resources (CPU, memory, GPUs) are counted against this machine's capacity; a task
that could never fit fails at once with the reason instead of waiting forever.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from cadenza.graph.model import TaskNode


@dataclass(frozen=True, slots=True, eq=False)
class Grant:
    """What one admitted attempt holds; it is also its holder token in the ledger."""

    pool: str
    gpus: tuple[str, ...] = ()
    holds_resources: bool = False
    token: object = field(default_factory=object)


DEFAULT_POOL = "default"


def default_pool_slots() -> int:
    """The default pool is sized to the machine: 4 slots per CPU core."""
    return 4 * (os.cpu_count() or 1)


class Admission:
    def __init__(self, pool_slots: dict[str, int], ledger: Any) -> None:
        self._slots = dict(pool_slots)
        self._used: dict[str, int] = {}
        self._ledger = ledger
        self._lock = threading.Lock()
        # A grant of a pool slot alone holds nothing else: one per pool serves every such
        # attempt (release reads only its pool), instead of a new Grant per task.
        self._pool_grants: dict[str, Grant] = {}

    def update_pools(self, pool_slots: dict[str, int]) -> None:
        with self._lock:
            self._slots = dict(pool_slots)

    def try_acquire(self, node: TaskNode, *,
                    local_resources: bool = True) -> tuple[str, Grant | None, str]:
        """("ok", grant, "") | ("wait", None, why) | ("never", None, why).

        `local_resources=False`: the executor places the task's resources on machines of
        its own (ray), so only its pool is admitted here."""
        pool = node.options.pool
        res = node.options.resources
        with self._lock:
            slots = self._slots.get(pool)
            if slots is None:
                return ("never", None,
                        f"pool '{pool}' does not exist. Fix: cadenza pools set {pool} 4")
            if slots <= 0:
                return ("never", None,
                        (f"pool '{pool}' has 0 slots, so task '{node.id}' can never start. "
                        f"Fix: cadenza pools set {pool} 4"))
            if self._used.get(pool, 0) >= slots:
                return ("wait", None, f"pool '{pool}' is full")
            grant = self._pool_grants.get(pool)
            if grant is None:
                grant = self._pool_grants[pool] = Grant(pool)
            if local_resources and not res.is_empty:
                ledger = self._ledger
                if not ledger.fits_machine(res.cpu, res.memory_bytes, res.gpu):
                    why = ledger.explain_misfit(res.cpu, res.memory_bytes, res.gpu)
                    return ("never", None,
                            (f"task '{node.id}' can never start on this machine: {why}. "
                            "Fix: lower its resources=... or run it where they fit"))
                if not ledger.can_fit(res.cpu, res.memory_bytes, res.gpu):
                    return ("wait", None, "waiting for resources")
                token = object()
                gpus = ledger.acquire(token, res.cpu, res.memory_bytes, res.gpu)
                grant = Grant(pool, gpus, True, token)
            self._used[pool] = self._used.get(pool, 0) + 1
            return ("ok", grant, "")

    def release(self, node: TaskNode, grant: Grant | None) -> None:
        if grant is None:
            return
        with self._lock:
            self._used[grant.pool] = max(0, self._used.get(grant.pool, 0) - 1)
            if grant.holds_resources:
                self._ledger.release(grant.token)


_shared: Admission | None = None
_shared_lock = threading.Lock()


def shared_admission(pool_slots: dict[str, int]) -> Admission:
    """The process-wide admission control, its pool sizes refreshed from the store."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from cadenza.engine.resources import ResourceLedger, machine_capacity

            _shared = Admission(pool_slots, ResourceLedger(machine_capacity()))
        else:
            _shared.update_pools(pool_slots)
        return _shared
