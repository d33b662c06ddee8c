"""Notifications through apprise: `on_failure=Notify("slack://...")` and friends.

What belongs here: `Notify`, a callable that the engine's hooks (on_failure, on_retry,
on_success, on_sla_miss; task or pipeline level) call with a CallbackContext, which writes a
short message naming the pipeline, the run, the task, the first line of the error and the
command that shows the logs, and sends it to every apprise URL it holds. What does not:
deciding when to notify (the engine calls hooks after committing the state they report).

Sending happens on one background thread per process, so a slow or dead endpoint never holds
up the scheduler loop; the queue is drained (for at most FLUSH_AT_EXIT_S) when the process
exits. A notification that cannot be sent is logged as a warning and never fails anything.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cadenza.core.errors import ConfigError
from cadenza.core.states import RunState, TaskState

log = logging.getLogger(__name__)

FLUSH_AT_EXIT_S = 10.0

# event -> (apprise notify type, what happened, in words)
_EVENTS = {
    "failure": ("failure", "failed"),
    "retry": ("warning", "failed and will be retried"),
    "success": ("success", "succeeded"),
    "sla_miss": ("warning", "missed its SLA"),
    "other": ("info", "changed state"),
}


# A callback's state is a task's or a run's (the two share the names they have in common).
_FAILURE_STATES = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED,
                             RunState.FAILED, RunState.CANCELLED})
_SUCCESS_STATES = frozenset({TaskState.SUCCESS, TaskState.CACHED, RunState.SUCCESS})


def _event_of(ctx: Any) -> str:
    explicit = getattr(ctx, "event", None)
    if explicit:
        return str(explicit)
    state = str(getattr(ctx, "state", "") or "").lower()
    if state in _FAILURE_STATES:
        return "failure"
    if state == TaskState.UP_FOR_RETRY:
        return "retry"
    if state in _SUCCESS_STATES:
        return "success"
    if "sla" in state:
        return "sla_miss"
    return "other"


def _mask(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://***" if sep else "***"


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str
    notify_type: str


def render(ctx: Any, *, title: str | None = None) -> Message:
    """The message for one hook call (public so it can be previewed or tested)."""
    event = _event_of(ctx)
    notify_type, verb = _EVENTS.get(event, _EVENTS["other"])
    pipeline = getattr(ctx, "pipeline", "?")
    run_id = getattr(ctx, "run_id", "?")
    task_id = getattr(ctx, "task_id", None)
    raw_index = getattr(ctx, "map_index", -1)
    map_index = raw_index if isinstance(raw_index, int) else -1
    attempt = getattr(ctx, "attempt", 0) or 0
    state = str(getattr(ctx, "state", "") or "")
    error = getattr(ctx, "error", None)
    if task_id is not None:
        label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        subject = f"task {label}"
        logs = f"cadenza logs {run_id} {task_id}" + (f" --map-index {map_index}"
                                                      if map_index >= 0 else "")
    else:
        subject, label = "run", None
        logs = f"cadenza runs show {run_id}"
    head = title or f"[cadenza] {pipeline}: {subject} {verb}"
    lines = []
    if error is not None:
        first = error.first_line() if hasattr(error, "first_line") else str(error).splitlines()[0]
        lines.append(f"Error: {first}")
    lines.append(f"Pipeline: {pipeline}")
    lines.append(f"Run: {run_id}")
    if label is not None:
        lines.append(f"Task: {label}" + (f" (attempt {attempt})" if attempt else ""))
    if state:
        lines.append(f"State: {state}")
    lines.append(f"Logs: {logs}")
    return Message(title=head, body="\n".join(lines), notify_type=notify_type)


class Notify:
    """Send a notification through apprise when a hook fires.

    Args:
        *urls: apprise URLs (`slack://...`, `mailto://...`, `json://host/path`, ...); see
            https://github.com/caronc/apprise/wiki for every service.
        title: a fixed title instead of "[cadenza] <pipeline>: task <id> failed".

    Example:
        alert = Notify("slack://tokenA/tokenB/tokenC/#ml-alerts")

        @task(retries=2, on_failure=alert, on_retry=alert)
        def train(df): ...

        @pipeline(on_failure=alert)
        def fraud_detection(): ...
    """

    def __init__(self, *urls: str, title: str | None = None) -> None:
        flat: list[str] = []
        for u in urls:
            if isinstance(u, (list, tuple)):
                flat.extend(u)
            else:
                flat.append(u)
        if not flat or not all(isinstance(u, str) and u.strip() for u in flat):
            raise ConfigError(f"Notify needs one or more apprise URLs, got {urls!r}",
                              hint='Notify("slack://tokenA/tokenB/tokenC") or Notify("json://host/hook")')
        self.urls = tuple(u.strip() for u in flat)
        self.title = title
        self.__name__ = "Notify"  # the callback runner names hooks by __name__

    def __repr__(self) -> str:  # URLs carry tokens: never print them
        return f"Notify({', '.join(_mask(u) for u in self.urls)})"

    def __call__(self, ctx: Any) -> None:
        """Queue the message for `ctx`; returns at once and never raises."""
        try:
            message = render(ctx, title=self.title)
        except Exception as exc:  # noqa: BLE001 - a hook never fails the run
            log.warning("Notify: could not build a message for %r: %s", ctx, exc)
            return
        _sender().put(self.urls, message, getattr(ctx, "run_id", "?"))

    def send(self, ctx: Any) -> bool:
        """Send now, in this thread; True if every URL took it. Never raises."""
        message = render(ctx, title=self.title)
        return _deliver(self.urls, message, getattr(ctx, "run_id", "?"))

    @staticmethod
    def flush(timeout_s: float = FLUSH_AT_EXIT_S) -> bool:
        """Wait until queued notifications are sent (or failed); False on timeout."""
        return _sender().flush(timeout_s)


def _deliver(urls: Iterable[str], message: Message, run_id: str) -> bool:
    try:
        import apprise
    except ImportError:
        log.warning("Notify: apprise is not installed, so '%s' (run %s) was not sent. Fix: "
                    "pip install 'cadenza[ml]' (or pip install apprise)", message.title, run_id)
        return False
    urls = list(urls)
    try:
        box = apprise.Apprise()
        bad = [u for u in urls if not box.add(u)]
        if bad:
            log.warning("Notify: apprise does not understand %s; '%s' (run %s) not sent there",
                        ", ".join(_mask(u) for u in bad), message.title, run_id)
        if len(box) == 0:
            return False
        ok = bool(box.notify(body=message.body, title=message.title,
                             notify_type=apprise.NotifyType(message.notify_type)))
    except Exception as exc:  # noqa: BLE001 - a notification never fails the run
        log.warning("Notify: sending '%s' (run %s) failed: %s: %s", message.title, run_id,
                    type(exc).__name__, exc)
        return False
    if not ok:
        log.warning("Notify: '%s' (run %s) could not be delivered to %s (apprise's log says "
                    "why)", message.title, run_id, ", ".join(_mask(u) for u in urls))
    return ok and not bad


class _Sender:
    """One daemon thread per process sends queued notifications in order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[tuple[str, ...], Message, str]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def put(self, urls: tuple[str, ...], message: Message, run_id: str) -> None:
        with self._cond:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cadenza-notify",
                                                daemon=True)
                self._thread.start()
        self._queue.put((urls, message, run_id))

    def _loop(self) -> None:
        while True:
            urls, message, run_id = self._queue.get()
            try:
                _deliver(urls, message, run_id)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


_sender_lock = threading.Lock()
_the_sender: _Sender | None = None


def _sender() -> _Sender:
    global _the_sender
    with _sender_lock:
        if _the_sender is None:
            _the_sender = _Sender()
            atexit.register(_flush_at_exit)
        return _the_sender


def _flush_at_exit() -> None:
    sender = _the_sender
    if sender is not None and not sender.flush(FLUSH_AT_EXIT_S):
        log.warning("Notify: notifications still unsent after %.0f s at exit were dropped",
                    FLUSH_AT_EXIT_S)
