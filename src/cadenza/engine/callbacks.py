"""Task and pipeline hooks (on_success, on_failure, on_retry, ...), run after the commit.

A callback sees what was already recorded; one that raises is logged and never changes the
run. Callables receive a CallbackContext.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cadenza.core.records import ErrorInfo
from cadenza.core.states import TaskState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackContext:
    pipeline: str
    run_id: str
    task_id: str | None
    map_index: int
    attempt: int
    state: TaskState | str
    error: ErrorInfo | None = None

    @property
    def label(self) -> str:
        if self.task_id is None:
            return self.pipeline
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


class CallbackQueue:
    def __init__(self) -> None:
        self._items: list[tuple[Callable[..., Any], CallbackContext]] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, callbacks: Iterable[Callable[..., Any]], ctx: CallbackContext) -> None:
        for cb in callbacks:
            self._items.append((cb, ctx))

    def run_all(self) -> None:
        items, self._items = self._items, []
        for cb, ctx in items:
            try:
                cb(ctx)
            except Exception as exc:  # noqa: BLE001 - a hook never fails the run
                log.warning("callback %r for %s (run %s) raised %s: %s",
                            getattr(cb, "__name__", cb), ctx.label, ctx.run_id,
                            type(exc).__name__, exc)
