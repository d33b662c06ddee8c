"""The scheduler commands of the CLI (SPEC §4, §7): `cadenza scheduler [--once]`, `cadenza
backfill`, `cadenza pipelines pause|unpause` and `cadenza events list`, run as the real
executable in a temporary project with its own SQLite store.

The CLI has no injectable clock, so the pipelines start in 2024 with catchup off: their
latest interval has always ended, and a tick creates exactly one run for it."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from cadenza.store import open_store
from tests.e2e.test_cli_support import Project, clean_env, deliver_events, make_project
from tests.fixtures.waiting import wait_for

STAMP = '''
from cadenza import get_context, pipeline, task


@task
def stamp(fail_day: int) -> str:
    ctx = get_context()
    if ctx.logical_date is not None and fail_day in (-1, ctx.logical_date.day):
        raise ValueError(f"day {ctx.logical_date.day} is bad")
    return ctx.logical_date.isoformat() if ctx.logical_date else "none"
'''

# The project's pipelines (pipelines/ in cadenza.toml).
JOBS = STAMP + '''

@pipeline(schedule="@monthly", start_date="2024-01-01", catchup=False)
def monthly(fail_day: int = 0):
    stamp(fail_day)


@pipeline
def unscheduled(fail_day: int = 0):
    stamp(fail_day)
'''

# Outside the project's folder: only reached when named.
DAILY = STAMP + '''

@pipeline(schedule="@daily", start_date="2024-01-01", catchup=False)
def daily(fail_day: int = 0):
    stamp(fail_day)


@pipeline(schedule="@daily", start_date="2024-01-01", catchup=False)
def flaky(fail_day: int = 2):
    stamp(fail_day)


@task
def stamp_unless_listed() -> str:
    from pathlib import Path

    ctx = get_context()
    bad = Path("bad-days.txt")  # the project folder: the test changes it between calls
    if bad.exists() and str(ctx.logical_date.day) in bad.read_text().split():
        raise ValueError(f"day {ctx.logical_date.day} is bad")
    return ctx.logical_date.isoformat()


@pipeline(schedule="@daily", start_date="2024-01-01", catchup=False)
def mendable():
    stamp_unless_listed()
'''

BROKEN = STAMP + '''

@pipeline(schedule="@monthly", start_date="2024-01-01", catchup=False)
def broken(fail_day: int = -1):
    stamp(fail_day)
'''


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    return make_project(tmp_path, files={"pipelines/jobs.py": JOBS, "extra/daily.py": DAILY,
                                         "extra/broken.py": BROKEN})


def db_url(p: Project) -> str:
    return p.env["CADENZA_DATABASE_URL"]


def runs_of(p: Project, pipeline: str) -> list[Any]:
    store = open_store(db_url(p))
    return sorted(store.list_runs(pipeline=pipeline, limit=1000),
                  key=lambda r: (r.logical_date is None, r.logical_date, r.created_at))


def once(p: Project, *targets: str, code: int = 0) -> dict[str, Any]:
    return p.json("scheduler", "--once", *targets, code=code)  # type: ignore[no-any-return]


# --- cadenza scheduler -------------------------------------------------------------------------


def test_scheduler_once_creates_the_due_run_drives_it_and_a_second_tick_creates_none(proj):
    first = proj.ok("scheduler", "--once")  # no TARGETS: the project's pipelines
    out = first.stdout
    assert "watching 2 pipelines" in out and db_url(proj) in out
    assert any("monthly" in line and "@monthly" in line for line in out.splitlines()), out
    assert any("unscheduled" in line for line in out.splitlines()), out
    assert "created  monthly: 1 run scheduled, logical date" in out
    assert "daily" not in out and "broken" not in out  # files outside pipelines/

    runs = proj.json("runs", "list")
    assert len(runs) == 1, runs
    assert (runs[0]["pipeline"], runs[0]["trigger"], runs[0]["state"]) == (
        "monthly", "schedule", "success")
    assert f"{runs[0]['run_id']}" in out  # listed among the runs it drove

    # The same pipeline named as module:PIPELINE this time: its interval has a run already.
    second = once(proj, "pipelines.jobs:monthly")
    assert second["created"] == [] and second["started"] == [] and second["ok"] is True
    assert second["pipelines"] == [{"name": "monthly", "schedule": "@monthly", "triggers": None,
                                    "paused": False}]
    assert len(runs_of(proj, "monthly")) == 1


def test_scheduler_once_on_a_file_exits_1_when_a_run_it_drove_failed(proj):
    proc = proj.ok("scheduler", "--once", "extra/broken.py", "-e", "inline", code=1)
    assert "created  broken: 1 run scheduled" in proc.stdout
    assert "1 run did not succeed" in proc.stdout and "cadenza runs show" in proc.stdout
    [run] = runs_of(proj, "broken")
    assert str(run.state) == "failed" and run.trigger == "schedule"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_scheduler_service_runs_until_sigterm_then_exits_0(proj):
    port = _free_port()
    proc = proj.popen("scheduler", "pipelines/jobs.py:monthly", "--metrics-port", str(port))
    try:
        wait_for(lambda: [r for r in runs_of(proj, "monthly") if str(r.state) == "success"],
                 timeout_s=60, what="the scheduler to create and finish the monthly run")
        metrics = _metrics(port)
        assert 'cadenza_runs_created_total{pipeline="monthly",trigger="schedule"} 1.0' \
            in metrics, metrics
        ticks = next(line for line in metrics.splitlines()
                     if line.startswith("cadenza_scheduler_ticks_total "))
        assert float(ticks.split()[1]) >= 1
        assert "cadenza_scheduler_tick_seconds_bucket" in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert "watching 1 pipeline" in out and "monthly" in out
    assert "stopped (SIGTERM)" in out
    assert "Traceback" not in err
    assert "ended success" in err  # the service logs how runs end
    assert len(runs_of(proj, "monthly")) == 1


# --- cadenza backfill --------------------------------------------------------------------------


def test_backfill_creates_three_runs_and_a_second_call_creates_none(proj):
    first = proj.ok("backfill", "extra/daily.py:daily", "--start", "2024-01-01",
                    "--end", "2024-01-03", "-e", "inline")
    assert "created 3 runs, 0 already existed" in first.stdout
    assert "3 success" in first.stdout
    assert first.stdout.count("] run ") == 3  # plain progress lines: not a terminal
    runs = runs_of(proj, "daily")
    assert [r.logical_date.date().isoformat() for r in runs] == [
        "2024-01-01", "2024-01-02", "2024-01-03"]
    assert all(r.trigger == "backfill" and str(r.state) == "success" for r in runs)

    second = proj.ok("backfill", "extra/daily.py:daily", "--start", "2024-01-01", "--end", "2024-01-03")
    assert "created 0 runs, 3 already existed" in second.stdout
    again = proj.json("backfill", "extra/daily.py:daily", "--start", "2024-01-01T00:00",
                      "--end", "2024-01-03T00:00")
    assert again["created"] == [] and again["existing"] == 3 and again["ok"] is True
    assert len(runs_of(proj, "daily")) == 3


def test_backfill_exits_1_when_a_run_fails(proj):
    proc = proj.ok("backfill", "extra/daily.py:flaky", "--start", "2024-01-01", "--end",
                   "2024-01-03", "--max-active", "1", "-e", "inline", code=1)
    assert "created 3 runs" in proc.stdout
    assert "2 success" in proc.stdout and "1 failed" in proc.stdout
    assert "cadenza runs show" in proc.stdout


def test_backfill_names_its_failed_intervals_exits_1_and_rerun_failed_resumes_them(proj):
    (proj.root / "bad-days.txt").write_text("2 3\n")
    first = proj.ok("backfill", "extra/daily.py:mendable", "--start", "2024-01-01", "--end",
                    "2024-01-04", "-e", "inline", code=1)
    out = first.stdout
    assert "2 intervals of the range did not succeed" in out, out
    by_day = {r.logical_date.date().isoformat(): r for r in runs_of(proj, "mendable")}
    for day in ("2024-01-02", "2024-01-03"):
        line = next(x for x in out.splitlines() if x.strip().startswith(day))
        assert by_day[day].run_id in line and "failed" in line, line
    assert "--rerun-failed" in out
    # Asked again without --rerun-failed: nothing new, and still not a success.
    again = proj.ok("backfill", "extra/daily.py:mendable", "--start", "2024-01-01", "--end",
                    "2024-01-04", code=1)
    assert "created 0 runs, 4 already existed" in again.stdout
    assert "2 intervals of the range did not succeed" in again.stdout

    (proj.root / "bad-days.txt").write_text("")
    mended = proj.json("backfill", "extra/daily.py:mendable", "--start", "2024-01-01",
                       "--end", "2024-01-04", "-e", "inline", "--rerun-failed")
    assert mended["ok"] is True and mended["failed"] == [] and mended["created"] == []
    assert sorted(mended["rerun"]) == sorted(
        by_day[d].run_id for d in ("2024-01-02", "2024-01-03"))
    runs = runs_of(proj, "mendable")
    assert len(runs) == 4 and {str(r.state) for r in runs} == {"success"}


def test_runs_list_shows_each_runs_logical_date(proj):
    proj.ok("backfill", "extra/daily.py:daily", "--start", "2024-01-05", "--end",
            "2024-01-06", "-e", "inline")
    proj.ok("run", "pipelines/jobs.py:unscheduled", "-e", "inline")
    table = proj.ok("runs", "list").stdout
    header = next(x for x in table.splitlines() if "RUN ID" in x)
    assert "LOGICAL DATE" in header
    col = header.index("LOGICAL DATE")
    rows = {r.run_id: r for r in runs_of(proj, "daily") + runs_of(proj, "unscheduled")}
    for line in table.splitlines():
        rid = line.split(" ", 1)[0]
        if rid in rows:
            shown = line[col:].split()[0]
            ld = rows[rid].logical_date
            assert shown == (ld.astimezone().strftime("%Y-%m-%d") if ld else "-"), line


def test_backfill_before_start_date_says_which_dates_it_dropped(proj):
    proc = proj.ok("backfill", "extra/daily.py:daily", "--start", "2023-12-30", "--end",
                   "2024-01-01", "-e", "inline")
    assert ("--start 2023-12-30 is before the pipeline's start_date 2024-01-01: dropped 2 "
            "logical dates (2023-12-30, 2023-12-31)") in " ".join(proc.stdout.split()), proc.stdout
    assert "created 1 run," in proc.stdout
    data = proj.json("backfill", "extra/daily.py:daily", "--start", "2023-12-31", "--end",
                     "2024-01-01")
    assert [d[:10] for d in data["dropped"]] == ["2023-12-31"]


def test_backfill_no_run_leaves_queued_runs_that_the_scheduler_drives(proj):
    data = proj.json("backfill", "extra/daily.py:daily", "--start", "2024-03-01",
                     "--end", "2024-03-02", "--no-run")
    assert len(data["created"]) == 2 and data["runs"] == {}
    assert [str(r.state) for r in runs_of(proj, "daily")] == ["queued", "queued"]
    report = once(proj, "extra/daily.py:daily")
    assert {r["run_id"] for r in report["started"]} >= set(data["created"])
    states = {r.run_id: str(r.state) for r in runs_of(proj, "daily")}
    assert all(states[rid] == "success" for rid in data["created"])


# --- cadenza pipelines pause|unpause -----------------------------------------------------------


def test_pause_stops_the_scheduler_creating_runs_until_unpause(proj):
    paused = proj.ok("pipelines", "pause", "monthly")
    assert "now paused" in paused.stdout
    listed = {p["name"]: p["paused"] for p in proj.json("pipelines", "list")["pipelines"]}
    assert listed == {"monthly": True, "unscheduled": False}
    table = proj.ok("pipelines", "list").stdout
    assert "PAUSED" in table

    assert once(proj, "pipelines/jobs.py:monthly")["created"] == []
    assert runs_of(proj, "monthly") == []

    assert "now active" in proj.ok("pipelines", "unpause", "monthly").stdout
    report = once(proj, "pipelines/jobs.py:monthly")
    assert len(report["created"]) == 1 and report["started"][0]["state"] == "success"
    assert len(runs_of(proj, "monthly")) == 1


def test_pipelines_list_creates_no_store_and_shows_no_paused_column_without_one(proj):
    listed = proj.json("pipelines", "list")
    assert all(p["paused"] is None for p in listed["pipelines"])
    assert "PAUSED" not in proj.ok("pipelines", "list").stdout
    assert not (Path(proj.env["CADENZA_HOME"]) / "cadenza.db").exists()


# --- cadenza events list -----------------------------------------------------------------------


def test_events_list_shows_an_invalid_message_with_its_error(proj, project_settings):
    trigger = deliver_events(proj, "on_event", "cli.events",
                             [("1-0", b"not json"), ("2-0", b'{"n": 2}')])

    events = proj.json("events", "list")
    assert [(e["message_id"], e["status"]) for e in events] == [("2-0", "run"), ("1-0", "invalid")]
    invalid = events[1]
    assert invalid["pipeline"] == "on_event" and invalid["run_id"] is None
    assert "not JSON" in invalid["error"] and invalid["payload"] == {"raw": "not json"}
    assert invalid["source"] == trigger.source
    assert events[0]["run_id"] == runs_of(proj, "on_event")[0].run_id

    only = proj.json("events", "list", "--status", "invalid", "--pipeline", "on_event")
    assert [e["message_id"] for e in only] == ["1-0"]
    table = proj.ok("events", "list", "--limit", "1").stdout
    assert "2-0" in table and "1-0" not in table and "MESSAGE ID" in table


# --- errors: one line, the fix, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (("scheduler", "--once", "nosuch.py"), "no such file: nosuch.py"),
    (("scheduler", "--once", "nosuch_module:p"), "no module named 'nosuch_module'"),
    (("scheduler", "--once", "pipelines/jobs.py:montly"), "Did you mean 'monthly'?"),
    (("scheduler", "--once", "empty/"), "no pipelines found in empty"),
    (("scheduler", "--json"), "--json only goes with --once"),
    (("backfill", "pipelines/jobs.py:unscheduled", "--start", "2024-01-01", "--end",
      "2024-01-02"), "pipeline 'unscheduled': backfill needs a pipeline with a schedule"),
    (("backfill", "extra/daily.py:daily", "--start", "2024-02-30", "--end", "2024-03-01"),
     "--start '2024-02-30' is not a date"),
    (("backfill", "extra/daily.py:daily", "--start", "2024-03-02", "--end", "2024-03-01"),
     "--start 2024-03-02 is after --end 2024-03-01"),
    (("pipelines", "pause", "montly"), "Did you mean 'monthly'?"),
    (("events", "list", "--status", "bogus"), "unknown event status 'bogus'"),
])
def test_usage_errors_exit_2_with_the_problem_and_the_fix(proj, args, expected):
    (proj.root / "empty").mkdir()
    proc = proj.ok(*args, code=2)
    assert expected in proc.stderr
    assert "fix:" in proc.stderr
    assert proc.stdout == ""


def test_scheduler_without_a_project_or_targets_exits_2_naming_the_fix(tmp_path):
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    proc = p.ok("scheduler", code=2)
    assert "no pipelines to watch" in proc.stderr and "cadenza init" in proc.stderr


def test_backfill_again_runs_what_a_no_run_backfill_left_queued(proj):
    data = proj.json("backfill", "extra/daily.py:daily", "--start", "2024-03-01",
                     "--end", "2024-03-02", "--no-run")
    again = proj.ok("backfill", "extra/daily.py:daily", "--start", "2024-03-01",
                    "--end", "2024-03-02", "-e", "inline")
    assert "created 0 runs, 2 already existed" in again.stdout
    assert "2 of those were still queued from an earlier backfill and were run now" in again.stdout
    states = {r.run_id: str(r.state) for r in runs_of(proj, "daily")}
    assert [states[rid] for rid in data["created"]] == ["success", "success"]
