"""Sensors: conditions checked every `poke_interval` until they hold (or `timeout` passes).

What belongs here: `FileSensor`, the `@sensor` decorator, the `Sensor` base with `poke()`
and `describe()`, and turning a sensor into a pipeline step. What does not: when the
scheduler pokes a trigger sensor (`loop.py`).

A sensor is used two ways:
  1. As a pipeline trigger, `@pipeline(triggers=[FileSensor("data/incoming/*.csv")])`: the
     scheduler pokes it in its own loop (no worker, no pool slot) and creates one run per
     new value it returns (the value is the run's dedupe key; see `Sensor.run_key`).
  2. As a step inside a pipeline body, `files = wait_for_files()`: the engine pokes it on
     its own threads (not on the run's executor, not in a pool) every `poke_interval`
     until it returns something truthy, which becomes the step's output. Waiting holds no
     worker and no pool slot and writes nothing: the whole wait is one attempt. When
     `timeout` has passed since the first poke the step fails with `SensorTimeout`, whose
     message names the condition; a poke still running then is abandoned (the step does
     not wait for it). A timed-out sensor is not retried (its `retries` are for pokes that
     raise, as in Airflow), and retries do not extend the wait: as in Airflow, `timeout`
     counts from the first poke of the first attempt, so an attempt that starts after it
     has passed times out at once. A resumed run starts the wait again. A poke that raises
     fails the step like any task.

A poke returns a falsy value for "not yet" and anything truthy for "yes": `True`, or a
JSON-able value describing what it found (FileSensor: the matching files), which becomes the
step's output and the triggered run's `get_context().extra["trigger"]["value"]`.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cadenza.core.errors import DefinitionError, SensorNotReady, SensorTimeout
from cadenza.graph.model import SensorSpec

log = logging.getLogger(__name__)


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise DefinitionError.single(f"{what} must be positive, got {value!r}",
                                     hint=f"{what}=30 (seconds) or timedelta(minutes=1)")
    return seconds


class Sensor:
    """A condition to wait for. Subclasses implement `poke()` and `describe()`."""

    def __init__(self, *, name: str, poke_interval: float | timedelta = 30.0,
                 timeout: float | timedelta | None = None) -> None:
        self.name = name
        self.poke_interval_s = _seconds(poke_interval, "poke_interval") or 30.0
        self.timeout_s = _seconds(timeout, "timeout")
        self._task: Any = None

    def poke(self, *args: Any, **kwargs: Any) -> Any:
        """Falsy: not yet. Truthy: the condition holds (a JSON-able value says what)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The condition in words, for timeouts and logs."""
        return f"sensor '{self.name}'"

    def timeout_error(self) -> SensorTimeout:
        """What a trigger sensor that waited too long raises (steps: the engine's message)."""
        waited = f" after {self.timeout_s:g} s" if self.timeout_s is not None else ""
        return SensorTimeout(
            f"sensor '{self.name}' timed out{waited} waiting for {self.describe()}",
            hint="check that the condition can become true, or raise the sensor's timeout",
        )

    def run_key(self, value: Any, *, slot: int) -> str:
        """The dedupe key of a run triggered by `value`.

        A plain True says nothing about *what* appeared, so the key is the poke slot
        (one run per poke_interval at most, whichever scheduler pokes); any other value
        is hashed, so the same files (or the same custom value) never trigger twice.
        """
        if value is True:
            return f"sensor:{self.name}:slot:{slot}"
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode())
        return f"sensor:{self.name}:{digest.hexdigest()[:32]}"

    # -- as a step inside a pipeline -----------------------------------------------------------

    def _step_fn(self) -> Callable[..., Any]:
        sensor = self

        def step(*args: Any, **kwargs: Any) -> Any:
            value = sensor.poke(*args, **kwargs)
            if value:
                return value
            raise SensorNotReady(f"{sensor.describe()}: not yet")

        return step

    def spec(self) -> SensorSpec:
        return SensorSpec(poke_interval_s=self.poke_interval_s, timeout_s=self.timeout_s,
                          condition=self.describe())

    def as_task(self) -> Any:
        """The TaskDef that runs this sensor as a step (built once)."""
        if self._task is None:
            from cadenza.authoring.task import task

            self._task = task(name=self.name, sensor=self.spec())(self._step_fn())
        return self._task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside a pipeline body: add this sensor as a step (returns its output ref)."""
        return self.as_task()(*args, **kwargs)


class FileSensor(Sensor):
    """Waits until at least `min_count` files match a glob pattern (`**` recurses).

    Example:
        @pipeline(triggers=[FileSensor("data/incoming/*.csv", poke_interval=10)])
        def ingest(): ...

        @pipeline
        def train():
            files = FileSensor("data/ready/*.parquet", timeout=3600)()
            fit(files)
    """

    def __init__(self, pattern: str, *, poke_interval: float | timedelta = 30.0,
                 timeout: float | timedelta | None = None, name: str | None = None,
                 min_count: int = 1) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise DefinitionError.single(f"FileSensor needs a glob pattern, got {pattern!r}",
                                         hint='FileSensor("data/incoming/*.csv")')
        digest = hashlib.sha256(pattern.encode()).hexdigest()[:8]
        super().__init__(name=name or f"file_sensor_{digest}", poke_interval=poke_interval,
                         timeout=timeout)
        self.pattern = pattern
        self.min_count = min_count

    def __repr__(self) -> str:
        return f"FileSensor({self.pattern!r})"

    def describe(self) -> str:
        many = f"{self.min_count} files" if self.min_count > 1 else "a file"
        return f"{many} matching '{self.pattern}'"

    def poke(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = []
        for path in sorted(glob.glob(os.path.expanduser(self.pattern), recursive=True)):
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed between glob and stat
                continue
            if os.path.isfile(path):
                found.append({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return found if len(found) >= self.min_count else None

    def _step_fn(self) -> Callable[..., Any]:
        step = super()._step_fn()
        # Each FileSensor is its own function to the executors (they cache by qualname).
        step.__qualname__ = f"FileSensor.{self.name}"
        step.__name__ = self.name
        return step


class SensorDef(Sensor):
    """What `@sensor` makes: a custom condition from a function."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 poke_interval: float | timedelta = 30.0,
                 timeout: float | timedelta | None = None) -> None:
        super().__init__(name=name or fn.__name__, poke_interval=poke_interval, timeout=timeout)
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<sensor '{self.name}'>"

    def describe(self) -> str:
        doc = (self.fn.__doc__ or "").strip().splitlines()
        return f"condition '{self.name}'" + (f" ({doc[0].rstrip('.')})" if doc else "")

    def poke(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def _step_fn(self) -> Callable[..., Any]:
        step = super()._step_fn()
        # Keep the user's signature, name and module: the task's parameters are the
        # function's, and executors cache it under the user's qualname.
        return functools.wraps(self.fn)(step)


def sensor(fn: Any = None, /, *, poke_interval: float | timedelta = 30.0,
           timeout: float | timedelta | None = None, name: str | None = None) -> Any:
    """Declare a custom sensor: a function returning falsy ("not yet") or truthy.

    Example:
        @sensor(poke_interval=60, timeout=timedelta(hours=2))
        def upstream_table_ready() -> bool:
            "the partition of today is loaded"
            return warehouse.has_partition("events", date.today())
    """
    if fn is not None:
        return SensorDef(fn, name=name, poke_interval=poke_interval, timeout=timeout)

    def wrap(f: Callable[..., Any]) -> SensorDef:
        return SensorDef(f, name=name, poke_interval=poke_interval, timeout=timeout)

    return wrap
