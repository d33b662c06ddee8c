"""CLI review findings, run as the real `cadenza` executable in a temporary project with its
own SQLite store: `scheduler --once` interrupted, `runs show` and `logs` of a waiting sensor
step, `logs` of an attempt whose record lost its log path, `events list` at 80 columns."""

from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cadenza.core.logfiles import attempt_log_path
from cadenza.store import open_store
from tests.e2e.test_cli_support import Project, deliver_events, make_project
from tests.fixtures.waiting import wait_for

# Two sensor steps that wait until the test makes their files: a FileSensor (pokes write
# nothing) and a custom sensor that prints at every poke (its log grows while it waits).
WAITS = '''
import os
from pathlib import Path

from cadenza import pipeline, task
from cadenza.triggers.sensors import FileSensor, sensor

HERE = Path(__file__).resolve().parent.parent
CSV = FileSensor(str(HERE / "incoming" / "*.csv"), poke_interval=0.2, name="wait_for_csv")


@sensor(poke_interval=0.2)
def flag_ready(flag: str = "flag") -> bool:
    "the flag file exists"
    print(f"poking for {flag}", flush=True)
    return (HERE / flag).exists()


@task
def silent() -> None:
    import time

    while not (HERE / "flag").exists():  # holds a worker of the threads executor
        time.sleep(0.05)


@task
def done(files, ready, nothing) -> int:
    return len(files)


@pipeline(schedule="@daily", start_date="2024-01-01", catchup=False)
def waits():
    done(CSV(), flag_ready(), silent())
'''

HELLO = '''
from cadenza import pipeline, task


@task
def hello() -> str:
    print("hello from the task", flush=True)
    return "hi"


@pipeline
def greet():
    hello()
'''


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = make_project(tmp_path, files={"pipelines/waits.py": WAITS, "pipelines/hello.py": HELLO})
    (p.root / "incoming").mkdir()
    return p


def db_path(p: Project) -> str:
    return p.env["CADENZA_DATABASE_URL"].removeprefix("sqlite:///")


def instance(run: dict[str, Any], task_id: str) -> dict[str, Any]:
    return next(t for t in run["task_instances"] if t["task_id"] == task_id)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- scheduler --once interrupted; runs show and logs of a waiting sensor step -----------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_interrupted_once_exits_130_naming_the_runs_left_and_how_to_finish_them(proj, sig):
    proc = proj.popen("scheduler", "--once", "pipelines/waits.py")
    try:
        def waiting() -> dict[str, Any] | None:
            runs = proj.json("runs", "list")
            if not runs:
                return None
            run: dict[str, Any] = proj.json("runs", "show", runs[0]["run_id"])
            csv, flag = instance(run, "wait_for_csv"), instance(run, "flag_ready")
            if (csv["state"] == "running" and (csv["reason"] or "").startswith("waiting for")
                    and flag["state"] == "running" and flag["reason"]
                    and instance(run, "silent")["state"] == "running"):
                return run
            return None

        run = wait_for(waiting, timeout_s=60, what="both sensor steps to wait")
        rid = run["run_id"]
        pattern = str(proj.root / "incoming" / "*.csv")
        assert instance(run, "wait_for_csv")["reason"] == (
            f"waiting for a file matching '{pattern}'")

        # runs show: the running sensor step says what it waits for (like skipped/upstream).
        shown = proj.ok("runs", "show", rid).stdout
        line = next(x for x in shown.splitlines() if x.startswith("wait_for_csv"))
        assert "running" in line and "waiting for a file matching" in line, shown
        assert "waiting for condition 'flag_ready' (the flag file exists)" in shown, shown

        # logs: the live log of a waiting sensor step that prints, not "has not run yet".
        logs = proj.ok("logs", rid, "flag_ready")
        assert "poking for flag" in logs.stdout, (logs.stdout, logs.stderr)
        assert "has not run yet" not in logs.stderr
        assert "flag_ready is still running (attempt 1" in flat(logs.stderr)
        assert proj.ok("logs", rid, "flag_ready", "--attempt", "1").stdout.startswith(
            "poking for flag")
        csv_log = proj.ok("logs", rid, "wait_for_csv")  # its pokes log "not yet"
        assert f"a file matching '{pattern}': not yet" in csv_log.stdout, csv_log
        assert ("wait_for_csv is still running (attempt 1, waiting for a file matching"
                in flat(csv_log.stderr)), csv_log.stderr
        assert "has not run yet" not in csv_log.stderr
        quiet = proj.ok("logs", rid, "silent")
        assert quiet.stdout == ""
        assert "silent is running (attempt 1) and has written no output yet" in flat(
            quiet.stderr), quiet.stderr

        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    text = flat(err)
    assert f"interrupted ({sig.name}); 1 run left running until its lease expires" in text, err
    assert f"`cadenza scheduler` or `cadenza resume {rid}` finishes it" in text, err
    assert str(open_store(proj.env["CADENZA_DATABASE_URL"]).get_run(rid).state) == "running"

    # What the message says works: resume takes the dead scheduler's run and finishes it.
    (proj.root / "incoming" / "a.csv").write_text("x\n")
    (proj.root / "flag").write_text("")
    proj.ok("resume", rid)
    assert proj.json("runs", "show", rid)["state"] == "success"


def test_scheduler_help_documents_exit_codes_2_and_130(proj):
    text = flat(proj.ok("scheduler", "--help").stdout)
    assert "2 no pipelines found, a bad target or a bad option" in text, text
    assert "pipelines without a schedule are watched, not an error" in text, text
    assert "130 interrupted" in text, text
    assert "2 nothing to watch" not in text


def test_runs_show_json_keeps_the_reason_of_a_running_instance(proj):
    proc = proj.popen("scheduler", "--once", "pipelines/waits.py")
    try:
        def reason() -> str | None:
            runs = proj.json("runs", "list")
            if not runs:
                return None
            r = instance(proj.json("runs", "show", runs[0]["run_id"]), "wait_for_csv")
            return r["reason"] if r["state"] == "running" else None

        assert wait_for(reason, timeout_s=60).startswith("waiting for a file matching")
        (proj.root / "incoming" / "a.csv").write_text("x\n")
        (proj.root / "flag").write_text("")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)


# --- logs: an attempt record without log_path -------------------------------------------------


def test_logs_reads_the_attempt_file_when_the_record_has_no_log_path(proj):
    proj.ok("run", "pipelines/hello.py:greet")
    rid = proj.last_run_id()
    with sqlite3.connect(db_path(proj)) as conn:
        paths = conn.execute("SELECT log_path FROM attempts WHERE run_id = ?", (rid,)).fetchall()
        conn.execute("UPDATE attempts SET log_path = NULL WHERE run_id = ?", (rid,))
    home = Path(proj.env["CADENZA_HOME"])
    [(stored,)] = paths
    assert stored == attempt_log_path(str(home / "logs"), rid, "hello", -1, 1)

    logs = proj.ok("logs", rid, "hello")
    assert "hello from the task" in logs.stdout, (logs.stdout, logs.stderr)
    assert "wrote no output" not in logs.stderr


# --- events list at 80 columns -----------------------------------------------------------------


def test_events_list_at_80_columns_keeps_the_error_and_whole_message_ids(proj, project_settings):
    # Redis ids of one millisecond share everything but their sequence number.
    deliver_events(proj, "train_on_new_orders", "orders.created", [
        ("1718900000000-0", b"not json"),
        ("1718900000000-1", b'{"n": "x"}'),
        ("1718900000001-0", b'{"n": 2}'),
    ])
    run_id = proj.json("events", "list")[0]["run_id"]

    table = proj.ok("events", "list", env={**proj.env, "COLUMNS": "80"}).stdout
    lines = table.splitlines()
    assert all(len(x) <= 80 for x in lines), table
    for message_id in ("1718900000000-0", "1718900000000-1", "1718900000001-0"):
        assert message_id in table, table  # whole, on one line: never cut to "17189…"
    assert "…" not in table
    header = lines[0]
    assert re.search(r"MESSAGE ID\s+OUTCOME$", header.rstrip()), header
    outcome = flat("\n".join(x[header.index("OUTCOME"):] for x in lines[1:]))
    assert f"run {run_id}" in outcome, table
    assert "invalid: wrong parameters: 'n': Input should be a valid integer" in outcome, table
    assert "invalid: message is not JSON: Expecting value: line 1 column 1" in outcome, table
    assert "redis:orders.created" in table  # the source, shortened
