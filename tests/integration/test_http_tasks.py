"""`@task.http` and `http_task` (SPEC §9) against a real HTTP server on a free local port:
JSON and text answers, a POST with a header from a secret, 5xx and connection errors retried
by the task's retries, a 4xx failing at once with the status and the body, a request timeout,
caching on the request, and resume."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from cadenza import DefinitionError, RunState, TaskState, http_task, pipeline, task
from cadenza.store import open_store
from tests.fixtures.ports import refusing_port


class Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(self, status: int, body: str, kind: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(json.loads(self.rfile.read(length) or b"null"))

            def _answer(self, body: Any) -> None:
                url = urlparse(self.path)
                server.hits[url.path] += 1
                server.headers.append(dict(self.headers))
                hits = server.hits[url.path]
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/json":
                    self._send(200, json.dumps({"ok": True, "query": query}))
                elif url.path == "/echo":
                    self._send(200, json.dumps({"got": body,
                                                "token": self.headers.get("X-Token")}))
                elif url.path.startswith("/flaky"):
                    if hits < 3:
                        self._send(503, "try later: overloaded", "text/plain")
                    else:
                        self._send(200, json.dumps({"hits": hits}))
                elif url.path == "/missing":
                    self._send(404, '{"detail": "no such model: fraud-v9"}')
                elif url.path == "/text":
                    self._send(200, "plain words", "text/plain")
                elif url.path == "/html":
                    self._send(200, "<html><body>hello</body></html>", "text/html")
                elif url.path == "/slow":
                    server.release.wait(30)
                    self._send(200, "{}")
                else:
                    self._send(404, "{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


def test_json_text_and_a_post_with_a_secret_header(sqlite_env: Any, server: Server,
                                                  executor: str) -> None:
    from cadenza.core.security import secret_key
    from cadenza.store.security import security_store

    token = "tok-0a1b2c3d4e5f"
    key = secret_key(sqlite_env.home, create=True)
    security_store(open_store(sqlite_env.database_url)).set_secret("SCORER", token, key=key)
    base = server.base

    @task.http(method="POST", headers={"X-Token": "secret://SCORER",
                                       "Authorization": "Bearer secret://SCORER"})
    def score(rows: list[int]) -> dict[str, Any]:
        return {"url": f"{base}/echo", "json": {"rows": rows}}

    @task
    def count(answer: dict[str, Any]) -> int:
        return len(answer["got"]["rows"])

    @pipeline
    def calls(limit: int = 3):
        got = http_task("fetch", f"{base}/json", params={"limit": limit})
        http_task("words", f"{base}/text", output="text")
        count(score([1, 2, 3]))
        got >> score

    result = calls.run(executor=executor)
    assert result.state is RunState.SUCCESS, result.failed
    assert result.outputs["fetch"] == {"ok": True, "query": {"limit": "3"}}
    assert result.outputs["words"] == "plain words"
    # The header reached the server resolved (the echo is data: the API masks it on display).
    assert result.outputs["score"] == {"got": {"rows": [1, 2, 3]}, "token": token}
    assert result.outputs["count"] == 3
    # A reference inside a longer value is resolved too.
    assert any(h.get("Authorization") == f"Bearer {token}" for h in server.headers)
    log = "".join(p.read_text() for p in Path(sqlite_env.logs_dir).rglob("fetch.1.log"))
    assert f"GET {base}/json?limit=3 -> 200 OK" in log


def test_a_4xx_fails_at_once_with_the_status_and_body(sqlite_env: Any, server: Server) -> None:
    @pipeline
    def refused():
        http_task("model", f"{server.base}/missing", retries=3)

    result = refused.run(executor="inline")
    err = result.failed["model"]
    assert err.type == "cadenza.core.errors.HttpFailed" and err.traceback == ""
    assert "pipeline 'refused', task 'model'" in err.first_line()
    assert f"GET {server.base}/missing answered 404 Not Found" in err.message
    assert "no such model: fraud-v9" in err.message and "not retried" in err.message
    assert server.hits["/missing"] == 1


def test_a_5xx_is_retried_until_the_server_answers(sqlite_env: Any, server: Server,
                                                  executor: str) -> None:
    @pipeline
    def flaky():
        http_task("wobbly", f"{server.base}/flaky", retries=3)

    result = flaky.run(executor=executor)
    assert result.state is RunState.SUCCESS and result.outputs["wobbly"] == {"hits": 3}
    attempts = open_store(sqlite_env.database_url).get_attempts(result.run_id, "wobbly", -1)
    assert [a.state for a in attempts] == [TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RETRY,
                                           TaskState.SUCCESS]
    assert attempts[0].error is not None
    assert "answered 503 Service Unavailable: try later: overloaded" in attempts[0].error.message


def test_a_refused_connection_is_retried_then_fails_naming_the_url(sqlite_env: Any) -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/health"

        @pipeline
        def nobody_home():
            http_task("health", url, retries=1)

        result = nobody_home.run(executor="inline")
    err = result.failed["health"]
    assert err.type == "cadenza.core.errors.HttpUnavailable"
    assert f"GET {url} could not connect" in err.message
    attempts = open_store(sqlite_env.database_url).get_attempts(result.run_id, "health", -1)
    assert len(attempts) == 2


def test_a_request_timeout_and_a_body_that_is_not_json(sqlite_env: Any, server: Server) -> None:
    @pipeline
    def odd_answers():
        http_task("slow", f"{server.base}/slow", request_timeout=0.5)
        http_task("page", f"{server.base}/html")

    result = odd_answers.run(executor="threads")
    slow, page = result.failed["slow"], result.failed["page"]
    assert slow.type == "cadenza.core.errors.HttpUnavailable"
    assert "got no answer within 0.5 s" in slow.message
    assert page.type == "cadenza.core.errors.HttpFailed"
    assert "not JSON (text/html)" in page.message and 'output="text"' in page.message


def test_an_http_task_is_cached_on_its_request(sqlite_env: Any, server: Server) -> None:
    @pipeline
    def cached_http(limit: int = 1):
        http_task("fetch", f"{server.base}/json", params={"limit": limit}, cache=True)

    first = cached_http.run(executor="inline")
    hit = cached_http.run(executor="inline")
    assert hit.task_states["fetch"] is TaskState.CACHED
    assert hit.outputs["fetch"] == first.outputs["fetch"]
    miss = cached_http.run(limit=2, executor="inline")
    assert miss.task_states["fetch"] is TaskState.SUCCESS
    assert server.hits["/json"] == 2


def test_resume_does_not_send_a_finished_request_again(sqlite_env: Any, server: Server,
                                                       tmp_path: Path) -> None:
    flag = tmp_path / "fixed"

    @task
    def use(answer: dict[str, Any]) -> bool:
        if not flag.exists():
            raise RuntimeError("not yet")
        return bool(answer["ok"])

    @pipeline
    def resumable_http():
        use(http_task("fetch", f"{server.base}/json"))

    result = resumable_http.run(executor="inline")
    assert result.state is RunState.FAILED
    flag.write_text("")
    again = result.resume()
    assert again.state is RunState.SUCCESS and again.outputs["use"] is True
    assert server.hits["/json"] == 1


def test_http_settings_are_checked_at_definition() -> None:
    with pytest.raises(DefinitionError) as info:
        @pipeline
        def wrong_http():
            http_task("a", "http://x", method="FETCH", output="xml", request_timeout=0)

    text = str(info.value)
    assert "task 'a': method must be one of GET" in text
    assert "output must be one of json, text, none" in text
    assert "request_timeout must be a number of seconds > 0" in text
