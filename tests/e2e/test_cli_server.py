"""`cadenza server` as the real executable on a free port, in a temporary project with its own
SQLite store: it serves /healthz and /metrics and stops cleanly on SIGTERM or SIGINT; with
--scheduler a run triggered over HTTP is executed to success by the server's scheduler child
process (restarted when it dies, stopped with the server) while its live events stream in
order; a non-loopback bind without auth is refused with the fix."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_cli_support import Project, make_project, strip_ansi
from tests.fixtures.server import PIPELINES
from tests.fixtures.waiting import wait_for

# `hold` waits for the file `release` in the project folder, so the test sees it running.
STEPS = (PIPELINES / "gated_steps.py").read_text(encoding="utf-8")


NIGHTLY = '''
from cadenza import pipeline, task


@task
def stamp() -> int:
    return 1


@pipeline(schedule="@daily", start_date="2024-01-01", catchup=False)
def nightly():
    stamp()
'''


# `check` fails until the file `gate` exists in the project folder.
GATED = '''
from pathlib import Path

from cadenza import pipeline, task


@task
def check() -> str:
    if not Path("gate").exists():
        raise ValueError("the gate is closed")
    return "open"


@task
def after(value: str) -> str:
    return value.upper()


@pipeline
def gated():
    after(check())
'''

# Each run of `count` appends one line to ran.txt in the project folder.
COUNT = '''
import os

from cadenza import pipeline, task


@task
def record(i: int) -> int:
    with open("ran.txt", "a") as fh:
        fh.write(f"{i} {os.getpid()}\\n")
    return i


@pipeline
def count(i: int = 0):
    record(i)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def server(p: Project, *args: str) -> Iterator[tuple[httpx.Client, subprocess.Popen[str]]]:
    port = free_port()
    proc = p.popen("server", "--port", str(port), *args)
    base = f"http://127.0.0.1:{port}"
    try:
        # Slow only on a loaded machine: --workers N imports the app in each worker.
        wait_for(lambda: proc.poll() is not None or answers(f"{base}/healthz"), timeout_s=180,
                 what="cadenza server to answer /healthz")
        assert proc.poll() is None, proc.communicate()
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client, proc
    finally:
        if proc.poll() is None:
            # Its worker and scheduler processes first: left running, they would hold the
            # pipes open and communicate() would wait for them forever.
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            proc.communicate(timeout=60)


def stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, strip_ansi(out), strip_ansi(err)


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in fields:
                yield {"id": fields["id"], "event": fields["event"], **json.loads(fields["data"])}
            fields = {}
        elif not line.startswith(":") and ": " in line:
            key, _, value = line.partition(": ")
            fields[key] = value


def trigger(client: httpx.Client, name: str, params: dict[str, Any]) -> str:
    """A queued run of `name`, over HTTP."""
    created = client.post(f"/api/v1/pipelines/{name}/runs", json={"params": params})
    assert created.status_code in (200, 201, 202), created.text
    assert created.json()["state"] == "queued"
    return str(created.json()["run_id"])


def labels(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [("run" if e["event"] == "run" else e["task_id"], e["state"]) for e in events]


def test_the_server_serves_health_and_metrics_and_stops_cleanly_on_sigterm(tmp_path):
    p = make_project(tmp_path, files={"pipelines/steps.py": STEPS,
                                      "pipelines/nightly.py": NIGHTLY})
    with server(p) as (client, proc):
        assert client.get("/healthz").json()["status"] == "ok"
        # The scheduler's time rules reach the API: a scheduled pipeline has a next run.
        pipes = {x["name"]: x for x in client.get("/api/v1/pipelines").json()["items"]}
        assert pipes["nightly"]["next_run_at"] is not None
        assert pipes["steps"]["next_run_at"] is None
        got = metrics(client)
        assert got[("cadenza_runs", (("state", "running"),))] == 0
        code, out, err = stop(proc, signal.SIGTERM)

    assert code == 0, err
    assert "stopped" in out
    assert "Traceback" not in err


def test_with_the_scheduler_a_run_triggered_over_http_streams_its_events_and_succeeds(tmp_path):
    p = make_project(tmp_path, executor="threads", files={"pipelines/steps.py": STEPS})
    with server(p, "--scheduler") as (client, proc):
        run_id = trigger(client, "steps", {"n": 4})

        seen: list[dict[str, Any]] = []
        with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(stream.iter_lines()):
                seen.append(event)
                if event.get("task_id") == "hold" and event["state"] == "running":
                    (p.root / "release").write_text("go")
        # The stream ended by itself after the run's final state.
        states = [("run" if e["event"] == "run" else e["task_id"], e["state"]) for e in seen]
        assert states[-1] == ("run", "success"), states
        assert states.index(("hold", "running")) < states.index(("hold", "success"))
        assert states.index(("first", "success")) < states.index(("hold", "success"))
        assert states.index(("hold", "success")) < states.index(("last", "success"))

        got = metrics(client)
        assert got[("cadenza_runs", (("state", "success"),))] == 1
        assert got[("cadenza_task_duration_seconds_count",
                    (("pipeline", "steps"), ("task", "hold")))] == 1
        assert got[("cadenza_scheduler_ticks_total", ())] >= 1
        code, out, err = stop(proc, signal.SIGINT)

    assert code == 0, err
    assert "stopped" in out
    assert "Traceback" not in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_non_loopback_bind_without_auth_is_refused_with_the_fix(tmp_path, host):
    p = make_project(tmp_path, files={"pipelines/steps.py": STEPS})

    proc = p.cli("server", "--host", host, "--port", str(free_port()), timeout=60)

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    text = " ".join(strip_ansi(proc.stderr).split())
    assert f"refusing to serve on {host}" in text
    assert "cadenza users create" in text and "cadenza tokens create" in text
    assert "Traceback" not in proc.stderr


def test_with_a_user_the_server_binds_every_address_and_wants_a_token(tmp_path):
    p = make_project(tmp_path, files={"pipelines/steps.py": STEPS})
    p.ok("users", "create", "ana", "--role", "viewer", "--password", "pw-for-the-test")
    token = json.loads(p.ok("tokens", "create", "--user", "ana", "--json").stdout)["token"]

    with server(p, "--host", "0.0.0.0") as (client, proc):
        assert client.get("/api/v1/pipelines").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        names = [x["name"] for x in client.get("/api/v1/pipelines", headers=auth).json()["items"]]
        assert names == ["steps"]
        code, _, err = stop(proc, signal.SIGTERM)

    assert code == 0, err


def test_a_retried_run_streams_on_after_its_end_for_a_client_that_saw_it(tmp_path):
    p = make_project(tmp_path, executor="threads", files={"pipelines/gated.py": GATED})
    with server(p, "--scheduler") as (client, proc):
        run_id = trigger(client, "gated", {})
        url = f"/api/v1/runs/{run_id}/events"
        with client.stream("GET", url) as stream:
            first = list(sse_events(stream.iter_lines()))  # ends with the run's failure
        assert labels(first)[-1] == ("run", "failed")
        assert ("after", "upstream_failed") in labels(first)

        (p.root / "gate").write_text("open")
        assert client.post(f"/api/v1/runs/{run_id}/retry", json={}).status_code == 200
        with client.stream("GET", url, headers={"Last-Event-ID": first[-1]["id"]}) as stream:
            assert stream.status_code == 200
            rest = list(sse_events(stream.iter_lines()))
        code, _, err = stop(proc, signal.SIGTERM)

    assert code == 0, err
    assert labels(rest)[-1] == ("run", "success")
    assert labels(rest).index(("check", "success")) < labels(rest).index(("after", "success"))
    ids = [int(e["id"].rsplit(".", 1)[1]) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))  # the same log, going on


@pytest.mark.postgres
def test_two_servers_with_schedulers_on_one_postgresql_store_run_each_run_once(
        tmp_path, pg_url):
    p = make_project(tmp_path, executor="threads", files={"pipelines/count.py": COUNT})
    p.env["CADENZA_DATABASE_URL"] = pg_url
    with server(p, "--scheduler") as (a, pa), server(p, "--scheduler") as (b, pb):
        ids = [trigger(a if i % 2 else b, "count", {"i": i}) for i in range(12)]

        def states() -> list[str]:
            return [a.get(f"/api/v1/runs/{r}").json()["state"] for r in ids]

        wait_for(lambda: all(s == "success" for s in states()), timeout_s=120,
                 what="the 12 runs to succeed")
        for proc in (pa, pb):
            code, _, err = stop(proc, signal.SIGTERM)
            assert code == 0, err

    lines = (p.root / "ran.txt").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == list(range(12))  # once each


def test_a_port_in_use_is_a_usage_error_naming_the_fix(tmp_path):
    p = make_project(tmp_path, files={"pipelines/steps.py": STEPS})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = p.cli("server", "--port", str(port), timeout=60)

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"cannot serve on 127.0.0.1:{port}" in " ".join(strip_ansi(proc.stderr).split())


def test_server_help_names_the_options(tmp_path: Path):
    p = make_project(tmp_path, files={"pipelines/steps.py": STEPS})
    text = strip_ansi(p.ok("server", "--help").stdout)
    for option in ("--host", "--port", "--scheduler", "--workers"):
        assert option in text


def test_several_workers_serve_the_api_and_stop_cleanly(tmp_path):
    p = make_project(tmp_path, files={"pipelines/steps.py": STEPS})
    with server(p, "--workers", "2") as (client, proc):
        names = [x["name"] for x in client.get("/api/v1/pipelines").json()["items"]]
        assert names == ["steps"]
        assert ("cadenza_runs", (("state", "success"),)) in metrics(client)
        code, out, err = stop(proc, signal.SIGTERM)

    assert code == 0, err
    assert "stopped" in out


def test_the_scheduler_without_pipelines_is_a_usage_error(tmp_path):
    p = make_project(tmp_path, files={"pipelines/README.txt": "no pipelines here"})

    proc = p.cli("server", "--scheduler", "--port", str(free_port()), timeout=60)

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "no pipelines found" in strip_ansi(proc.stderr)
    assert "Traceback" not in proc.stderr


def scheduler_child(proc: subprocess.Popen[str]) -> psutil.Process:
    """The `cadenza scheduler` process `server --scheduler` started."""
    found: list[psutil.Process] = []

    def is_scheduler(c: psutil.Process) -> bool:
        try:
            return "scheduler" in c.cmdline()
        except psutil.Error:  # gone, or a zombie its parent has not reaped yet
            return False

    def child() -> bool:
        found[:] = [c for c in psutil.Process(proc.pid).children() if is_scheduler(c)]
        return len(found) == 1

    wait_for(child, timeout_s=60, what="the server's scheduler child process")
    return found[0]


def test_the_scheduler_drives_runs_in_a_child_it_restarts_and_stops(tmp_path):
    """--scheduler drives runs in a child process (the task runs there, not in the server,
    with the threads executor), which the server starts again when it dies and stops when
    it stops; its metrics are in the server's /metrics."""
    p = make_project(tmp_path, executor="threads", files={"pipelines/count.py": COUNT})
    with server(p, "--scheduler") as (client, proc):
        first = scheduler_child(proc)
        run_id = trigger(client, "count", {"i": 1})
        wait_for(lambda: client.get(f"/api/v1/runs/{run_id}").json()["state"] == "success",
                 timeout_s=120, what="the run to succeed")
        pid = int((p.root / "ran.txt").read_text().split()[1])
        assert pid == first.pid and pid != proc.pid
        wait_for(lambda: metrics(client).get(("cadenza_scheduler_ticks_total", ()), 0) >= 1,
                 timeout_s=60, what="the child's metrics in the server's /metrics")
        assert sum(1 for key in metrics(client) if key[0] == "process_cpu_seconds_total") == 1

        first.kill()  # the server starts another
        wait_for(lambda: scheduler_child(proc).pid != first.pid, timeout_s=60,
                 what="a new scheduler child")
        second = scheduler_child(proc)
        again = trigger(client, "count", {"i": 2})
        wait_for(lambda: client.get(f"/api/v1/runs/{again}").json()["state"] == "success",
                 timeout_s=120, what="a run driven by the new child")
        code, out, err = stop(proc, signal.SIGTERM)

    assert code == 0, err
    assert "Scheduler" in out and "stopped" in out  # the child's line, then the server's
    assert "exited with code -9" in err and "starting it again" in err
    wait_for(lambda: not second.is_running() or second.status() == psutil.STATUS_ZOMBIE,
             timeout_s=30, what="the scheduler child to stop with the server")


def test_a_killed_server_takes_its_scheduler_child_down(tmp_path):
    p = make_project(tmp_path, executor="threads", files={"pipelines/count.py": COUNT})
    with server(p, "--scheduler") as (_client, proc):
        child = scheduler_child(proc)
        proc.kill()
        proc.communicate()
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
             timeout_s=60, what="the orphaned scheduler child to exit")
