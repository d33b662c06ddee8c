"""Notifications through apprise (SPEC §2): delivered to a real local HTTP receiver with
apprise's `json://` service; a notification that cannot be sent is logged, never fails a run."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cadenza import Notify, RunState, TaskState, get_context, pipeline, task
from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.core.settings import Settings
from cadenza.engine.callbacks import CallbackContext
from tests.fixtures.ports import refusing_port

pytest.importorskip("apprise", reason="apprise is not installed: pip install 'cadenza[ml]'")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # apprise imports imghdr

DELIVERY_TIMEOUT_S = 30.0


@dataclass
class Receiver:
    url: str  # the apprise URL that posts here
    inbox: queue.Queue[dict[str, Any]]

    def next(self) -> dict[str, Any]:
        """The next message received (waits for it, with a deadline)."""
        try:
            return self.inbox.get(timeout=DELIVERY_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no notification within {DELIVERY_TIMEOUT_S} s") from None

    def take(self, n: int) -> list[dict[str, Any]]:
        return [self.next() for _ in range(n)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on a free loopback port, in a thread, keeping what it is sent."""
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            inbox.put({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(url=f"json://127.0.0.1:{server.server_address[1]}/hook", inbox=inbox)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _pipeline(body: Any, name: str, **options: Any) -> Any:
    return pipeline(name=name, **options)(body)


@task
def explode() -> None:
    raise ValueError("the input has no rows\nsecond line of detail")


@task
def fine() -> int:
    return 1


def _failing_body():
    explode()
    fine()


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_task_failure_names_pipeline_run_task_error_and_the_logs_command(
        sqlite_env: Settings, receiver: Receiver, executor: str) -> None:
    explode_hooked = explode.with_options(on_failure=Notify(receiver.url))

    def body() -> None:
        explode_hooked()
        fine()

    p = _pipeline(body, "notify_failing")
    result = p.run(executor=executor)

    assert result.state is RunState.FAILED
    message = receiver.next()
    assert message["path"] == "/hook"
    payload = message["json"]
    assert payload["type"] == "failure"
    assert payload["title"] == "[cadenza] notify_failing: task explode failed"
    lines = payload["message"].splitlines()
    assert lines[0] == "Error: ValueError: the input has no rows"  # the error comes first
    assert "Pipeline: notify_failing" in lines
    assert f"Run: {result.run_id}" in lines
    assert "Task: explode (attempt 1)" in lines
    assert "State: failed" in lines
    assert f"Logs: cadenza logs {result.run_id} explode" in lines
    assert receiver.inbox.empty()


@task(retries=1)
def second_time_lucky(x: int) -> int:
    if get_context().attempt == 1:
        raise ConnectionError("flaky upstream")
    return x


def test_retry_and_success_of_mapped_instances(sqlite_env: Settings, receiver: Receiver) -> None:
    hook = Notify(receiver.url)
    hooked = second_time_lucky.with_options(on_retry=hook, on_success=hook)

    def body() -> None:
        hooked.expand(x=[7])

    result = _pipeline(body, "notify_retry").run(executor="threads")

    assert result.state is RunState.SUCCESS
    retry, success = (m["json"] for m in receiver.take(2))
    assert retry["type"] == "warning"
    assert retry["title"] == ("[cadenza] notify_retry: task second_time_lucky[0] failed and "
                              "will be retried")
    assert retry["message"].splitlines()[0] == "Error: ConnectionError: flaky upstream"
    assert "Task: second_time_lucky[0] (attempt 1)" in retry["message"]
    assert (f"Logs: cadenza logs {result.run_id} second_time_lucky --map-index 0"
            in retry["message"])
    assert success["type"] == "success"
    assert success["title"] == "[cadenza] notify_retry: task second_time_lucky[0] succeeded"
    assert "Task: second_time_lucky[0] (attempt 2)" in success["message"]


def test_pipeline_level_failure_points_at_the_run(sqlite_env: Settings,
                                                  receiver: Receiver) -> None:
    result = _pipeline(_failing_body, "notify_run",
                       on_failure=Notify(receiver.url, title="fraud run broke")).run(
        executor="inline")

    assert result.state is RunState.FAILED
    payload = receiver.next()["json"]
    assert payload["title"] == "fraud run broke"
    assert payload["type"] == "failure"
    assert f"Logs: cadenza runs show {result.run_id}" in payload["message"]
    assert "Task:" not in payload["message"]


def test_sla_miss_message(receiver: Receiver) -> None:
    ctx = CallbackContext(pipeline="nightly", run_id="r-1", task_id=None, map_index=-1,
                          attempt=0, state="sla_miss")

    assert Notify(receiver.url).send(ctx) is True

    payload = receiver.next()["json"]
    assert payload["title"] == "[cadenza] nightly: run missed its SLA"
    assert payload["type"] == "warning"


def test_failure_to_send_is_logged_and_never_fails_the_run(
        sqlite_env: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with refusing_port() as port, caplog.at_level(logging.WARNING,
                                                  logger="cadenza.integrations.notify"):
        dead = f"json://127.0.0.1:{port}/hook"
        hook = Notify(dead, "notaservice://nowhere")
        result = _pipeline(_failing_body, "notify_dead", on_failure=hook).run(executor="inline")
        assert Notify.flush(timeout_s=DELIVERY_TIMEOUT_S)

    assert result.state is RunState.FAILED
    assert result.task_states["fine"] is TaskState.SUCCESS
    warnings = [r.getMessage() for r in caplog.records if r.name == "cadenza.integrations.notify"]
    assert any("does not understand notaservice://***" in w for w in warnings), warnings
    assert any("could not be delivered" in w and "notify_dead" in w and result.run_id in w
               for w in warnings), warnings


def test_repr_hides_the_tokens_in_urls() -> None:
    hook = Notify("slack://T000/B000/XXXXSECRET", "json://host/hook")
    assert repr(hook) == "Notify(slack://***, json://***)"
    assert "SECRET" not in repr(hook)


def test_message_of_a_task_error_without_message() -> None:
    from cadenza.integrations.notify import render

    ctx = CallbackContext(pipeline="p", run_id="r", task_id="t", map_index=-1, attempt=3,
                          state="failed",
                          error=ErrorInfo(kind=ErrorKind.TIMEOUT, type="cadenza.core.errors.TaskTimeout",
                                          message=""))
    assert render(ctx).body.splitlines()[0] == "Error: TaskTimeout"
