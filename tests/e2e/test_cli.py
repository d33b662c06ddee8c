"""The `cadenza` command line, run as a real executable in a temporary project."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_support import (
    CADENZA,
    Project,
    clean_env,
    instances,
    make_project,
    output_of,
    project,
)
from tests.fixtures.waiting import wait_for

__all__ = ["project"]  # the fixture, imported for pytest


# --- startup, version, init ----------------------------------------------------------------


def test_help_lists_commands_without_importing_sqlalchemy(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cadenza", "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for command in ("init", "run", "resume", "logs", "pipelines", "runs", "tasks", "pools", "db",
                    "version"):
        assert command in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert imported, "python -X importtime printed nothing"
    assert not [m for m in imported if m.startswith("sqlalchemy")]
    assert "cadenza.store" not in imported and "cadenza.engine.driver" not in imported


def test_version_from_the_executable_and_python_dash_m(tmp_path: Path) -> None:
    from cadenza import __version__

    env = clean_env(tmp_path)
    for argv in ([*CADENZA, "version"], [sys.executable, "-m", "cadenza", "--version"],
                 [sys.executable, "-m", "cadenza.cli.main", "version"]):
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"cadenza {__version__} (Python ")


def test_init_creates_a_project_that_runs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    proc = p.ok("init", "demo")
    assert "cadenza run pipelines/example.py" in proc.stdout and "cd demo" in proc.stdout
    demo = tmp_path / "demo"
    assert (demo / "cadenza.toml").is_file() and (demo / "pipelines" / "example.py").is_file()
    assert ".cadenza/" in (demo / ".gitignore").read_text()

    again = p.ok("init", "demo", code=2)
    assert "already exist" in again.stderr and "--force" in again.stderr
    (demo / "pipelines" / "example.py").write_text("# mine\n")
    p.ok("init", "demo", "--force")
    assert "def example(" in (demo / "pipelines" / "example.py").read_text()

    listed = p.json("pipelines", "list", cwd=demo)
    assert [x["name"] for x in listed["pipelines"]] == ["example"] and listed["errors"] == []
    run = p.json("run", "pipelines/example.py", "--param", "n=5", "--executor", "threads",
                 cwd=demo)
    assert run["state"] == "success" and run["params"] == {"n": 5}
    assert output_of(run, "total") == 55  # 1 + 4 + 9 + 16 + 25
    assert p.ok("runs", "list", cwd=demo).stdout.count(run["run_id"]) == 1


def test_init_in_a_file_path_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    assert "not a folder" in p.ok("init", "afile", code=2).stderr


# --- cadenza run ---------------------------------------------------------------------------


def test_run_coerces_params_by_type_hints_and_reports_json(project: Project) -> None:
    run = project.json("run", "pipelines/cli_basic.py", "--param", "n=4", "--param", "scale=0.5",
                       "-p", 'labels={"k": 2}', "-p", 'words=["a", "b"]', "--executor", "inline")
    assert run["state"] == "success" and run["trigger"] == "manual"
    assert run["params"] == {"n": 4, "scale": 0.5, "labels": {"k": 2}, "words": ["a", "b"]}
    assert output_of(run, "total") == {"total": 15.0, "labels": {"k": 2}, "words": ["a", "b"],
                                       "types": ["float"] * 4}
    tis = instances(run)
    assert [tis[f"square[{i}]"]["map_index"] for i in range(4)] == [0, 1, 2, 3]
    assert tis["square"]["map_count"] == 4


def test_run_prints_progress_lines_and_summary_when_not_a_terminal(project: Project) -> None:
    proc = project.ok("run", "pipelines/cli_basic.py:basic", "--executor", "threads")
    out = proc.stdout
    run_id = project.last_run_id()
    assert f"Started run {run_id} of pipeline basic" in out
    for line in ("numbers", "square[0]", "square[2]", "total"):
        assert any(line in row and "success" in row for row in out.splitlines()), out
    assert f"Run {run_id} of pipeline basic succeeded" in out
    assert f"cadenza runs show {run_id}" in out
    assert "\x1b[" not in out  # no terminal: no escape codes


def test_run_finds_the_project_from_a_subfolder_by_pipeline_name(project: Project) -> None:
    proc = project.ok("run", "greet", "-p", "name=ada", "-e", "inline", cwd=project.pipelines)
    assert "succeeded" in proc.stdout
    run = project.json("runs", "show", project.last_run_id())
    assert run["pipeline"] == "greet" and output_of(run, "shout") == "HELLO ADA"


def test_run_a_file_without_any_project(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "one.py").write_text((Path(__file__).parents[1] / "pipelines" / "cli_multi.py")
                                   .read_text())
    p = Project(root=folder, env=clean_env(tmp_path / "home"))
    run = p.json("run", "one.py:greet", "-e", "inline")
    assert run["state"] == "success" and output_of(run, "hello") == "hello world"


def test_failed_run_exits_1_with_first_error_line_and_next_commands(project: Project) -> None:
    proc = project.ok("run", "pipelines/cli_failing.py", "-e", "threads", code=1)
    run_id = project.last_run_id()
    out = proc.stdout
    assert f"Run {run_id} of pipeline failing failed" in out
    assert "validate  ValueError: bad row 6: values must not end a week" in out
    assert "second line of the message" not in out
    assert f"cadenza logs {run_id} validate" in out
    assert f"cadenza resume {run_id}" in out
    run = project.json("runs", "show", run_id)
    states = {k: v["state"] for k, v in instances(run).items()}
    assert states == {"load": "success", "validate": "failed", "train": "upstream_failed"}


def test_run_json_of_a_failed_run_exits_1(project: Project) -> None:
    run = project.json("run", "pipelines/cli_failing.py", "-e", "inline", code=1)
    err = instances(run)["validate"]["error"]
    assert err["first_line"] == "ValueError: bad row 6: values must not end a week"
    assert "Traceback" in err["traceback"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "nope.py"], "no such file: nope.py"),
        (["run", "pipelines/cli_multi.py"], "defines 2 pipelines: greet, greet_twice"),
        (["run", "pipelines/cli_multi.py:gret"], "Did you mean 'greet'?"),
        (["run", "grete"], "no pipeline named 'grete'"),
        (["run", "basic", "--param", "nn=3"], "unknown parameter 'nn'. Did you mean 'n'?"),
        (["run", "basic", "--param", "n=three"], "'n': Input should be a valid integer"),
        (["run", "basic", "--param", "n"], "--param expects NAME=VALUE, got 'n'"),
        (["run", "basic", "--param", "words=[1,"], "'words'"),
        (["run", "basic", "--executor", "thread"], "unknown executor 'thread'. Did you mean"),
        (["runs", "show", "ffffffff"], "no run with id 'ffffffff'"),
        (["runs", "list", "--state", "done"], "unknown run state 'done'"),
        (["logs", "ffffffff", "total"], "no run with id 'ffffffff'"),
        (["tasks", "test", "pipelines/cli_basic.py", "totl"], "no task 'totl'. Did you mean 'total'?"),
        (["resume", "ffffffff"], "no run with id 'ffffffff'"),
    ],
)
def test_bad_input_is_one_readable_error_and_exit_2(project: Project, args: list[str],
                                                    expected: str) -> None:
    proc = project.ok(*args, code=2)
    assert expected in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert "fix: " in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert proc.stdout == ""
    assert project.json("runs", "list") == []  # nothing was recorded


def test_a_definition_error_lists_every_problem_and_exits_2(project: Project) -> None:
    (project.pipelines / "baddef.py").write_text(
        "from cadenza import pipeline, task\n\n"
        "@task(trigger_rule='all_dnoe')\ndef t(): ...\n\n"
        "@pipeline(schedule='0 2 * *')\ndef bad():\n    t()\n")
    proc = project.ok("run", "pipelines/baddef.py", code=2)
    assert "2 problems in pipeline 'bad'" in proc.stderr
    assert "Did you mean 'all_done'?" in proc.stderr and "has 4 fields" in proc.stderr


def test_debug_shows_the_traceback_of_an_import_error(project: Project) -> None:
    (project.pipelines / "broken.py").write_text("import nonexistent_module_xyz\n")
    plain = project.ok("run", "pipelines/broken.py", code=2)
    assert "ModuleNotFoundError: No module named 'nonexistent_module_xyz' (line 1)" in plain.stderr
    proc = project.cli("--debug", "run", "pipelines/broken.py")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "broken.py" in proc.stderr


def test_an_unreachable_store_is_a_readable_error(project: Project) -> None:
    # Exit 1, not the usage error's 2: the command was right, the store did not answer.
    env = dict(project.env, CADENZA_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    for args in (["runs", "list"], ["run", "basic", "-e", "inline"], ["pools", "list"]):
        proc = project.ok(*args, env=env, code=1)
        assert proc.stderr.startswith("error: metadata store postgresql+psycopg://nobody@"), proc.stderr
        assert "fix: is PostgreSQL running at 127.0.0.1:1" in proc.stderr


# --- pipelines list ------------------------------------------------------------------------


def test_pipelines_list_shows_import_errors_and_still_loads_the_rest(project: Project) -> None:
    (project.pipelines / "broken.py").write_text("x = 1\nraise RuntimeError('no data folder')\n")
    (project.pipelines / "syntax.py").write_text("def (:\n")
    proc = project.ok("pipelines", "list", code=1)
    for name in ("basic", "failing", "greet", "greet_twice", "slow"):
        assert name in proc.stdout
    assert "2 file(s) failed to import" in proc.stdout
    assert "pipelines/broken.py: RuntimeError: no data folder (line 2)" in proc.stdout
    assert "pipelines/syntax.py: SyntaxError" in proc.stdout

    data = project.json("pipelines", "list", code=1)
    by_name = {p["name"]: p for p in data["pipelines"]}
    assert sorted(by_name) == ["basic", "failing", "greet", "greet_twice", "slow"]
    assert by_name["basic"]["schedule"] == "0 2 * * *" and by_name["basic"]["tags"] == ["cli", "demo"]
    assert by_name["basic"]["tasks"] == 4 and by_name["slow"]["tasks"] == 3
    assert by_name["greet"]["schedule"] == "every 1:00:00"
    assert by_name["failing"]["schedule"] is None
    assert by_name["greet"]["target"] == "pipelines/cli_multi.py:greet"
    assert {"name": "n", "type": "int", "required": False, "default": 3} in by_name["basic"]["params"]
    assert sorted(e["file"] for e in data["errors"]) == ["pipelines/broken.py", "pipelines/syntax.py"]


def test_pipelines_list_without_a_project_says_how_to_make_one(tmp_path: Path) -> None:
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    proc = p.ok("pipelines", "list", code=2)
    assert "no cadenza.toml" in proc.stderr and "cadenza init" in proc.stderr
    (tmp_path / "one.py").write_text((Path(__file__).parents[1] / "pipelines" / "cli_multi.py")
                                     .read_text())
    data = p.json("pipelines", "list", "one.py")
    assert sorted(x["name"] for x in data["pipelines"]) == ["greet", "greet_twice"]


# --- runs list / show ----------------------------------------------------------------------


def test_runs_list_filters_and_json(project: Project) -> None:
    project.ok("run", "basic", "-e", "inline")
    project.ok("run", "failing", "-e", "inline", code=1)
    project.ok("run", "basic", "-e", "inline", "-p", "n=1")
    runs = project.json("runs", "list")
    assert [r["pipeline"] for r in runs] == ["basic", "failing", "basic"]  # newest first
    assert [r["state"] for r in project.json("runs", "list", "--state", "failed")] == ["failed"]
    assert {r["pipeline"] for r in project.json("runs", "list", "--pipeline", "basic")} == {"basic"}
    assert len(project.json("runs", "list", "--pipeline", "basic")) == 2
    assert len(project.json("runs", "list", "--limit", "1")) == 1
    table = project.ok("runs", "list").stdout
    assert all(r["run_id"] in table for r in runs)
    assert project.json("runs", "list", "--pipeline", "nobody") == []


def test_runs_show_tells_params_timings_instances_and_cache_origin(project: Project) -> None:
    first = project.json("run", "basic", "-e", "inline", "-p", "n=2")
    second = project.json("run", "basic", "-e", "inline", "-p", "n=2")
    run = project.json("runs", "show", second["run_id"][:14])  # a prefix is enough
    assert run["run_id"] == second["run_id"] and run["params"]["n"] == 2
    assert run["started_at"] and run["ended_at"] and run["duration_s"] >= 0
    tis = instances(run)
    assert set(tis) == {"numbers", "square", "square[0]", "square[1]", "total", "describe"}
    assert tis["describe"]["state"] == "cached"
    assert tis["describe"]["cache_origin"]["run_id"] == first["run_id"]
    assert tis["square[1]"]["attempts"] == 1 and tis["square[1]"]["duration_s"] is not None
    assert [m["name"] for m in run["metrics"]] == ["total"]

    table = project.ok("runs", "show", second["run_id"]).stdout
    assert "square (2 mapped)" in table and "square[1]" in table
    assert f"run {first['run_id']} describe" in table  # the cache origin
    assert '"n": 2' in table


# --- logs ----------------------------------------------------------------------------------


def test_logs_of_a_task_instance_and_of_a_failure(project: Project) -> None:
    ok = project.json("run", "basic", "-e", "threads")["run_id"]
    assert project.ok("logs", ok, "square", "--map-index", "1").stdout == "squaring 2\n"
    every = project.ok("logs", ok, "square").stdout
    assert "square[0] · attempt 1" in every and "squaring 1" in every and "squaring 3" in every
    assert "total of 3 values is 14.0" in project.ok("logs", ok, "total").stdout
    assert "wrote no output" in project.ok("logs", ok, "numbers").stderr

    bad = project.json("run", "failing", "-e", "threads", code=1)["run_id"]
    text = project.ok("logs", bad, "validate").stdout
    assert text.startswith("checking 10 rows\n")
    assert "Traceback" in text and "ValueError: bad row 6" in text
    assert "did not run (upstream_failed" in project.ok("logs", bad, "train").stderr
    assert "has no attempt 2" in project.ok("logs", bad, "validate", "--attempt", "2", code=2).stderr
    assert "Did you mean 'validate'" in project.ok("logs", bad, "valid", code=2).stderr
    assert "no map index 7" in project.ok("logs", ok, "square", "-m", "7", code=2).stderr
    assert "is not mapped" in project.ok("logs", ok, "total", "-m", "0", code=2).stderr
    # --follow on a finished task prints what there is and ends
    assert project.ok("logs", ok, "total", "--follow").stdout.count("total of 3 values is 14.0") == 1


def test_logs_follow_waits_for_the_running_task(project: Project, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    run = project.popen("run", "slow", "-e", "threads", "-p", f"folder={ctl}")
    follow = None
    try:
        wait_for(lambda: (ctl / "started").exists(), what="the task to start")
        run_id = project.last_run_id()
        follow = project.popen("logs", run_id, "wait_for_release", "--follow")
        assert follow.stderr is not None
        ready, _, _ = select.select([follow.stderr], [], [], 60)
        assert ready, "logs --follow printed nothing"
        assert "following wait_for_release" in follow.stderr.readline()
        assert follow.poll() is None  # still waiting: the task has not ended
        (ctl / "release").write_text("go")
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert "released" in out and "attempt 1 · success" in out
        assert run.wait(timeout=60) == 0
    finally:
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


# --- tasks test ----------------------------------------------------------------------------


def test_tasks_test_uses_upstream_outputs_of_the_latest_successful_run(project: Project) -> None:
    source = project.json("run", "basic", "-e", "inline", "-p", "n=3", "-p", "scale=2")
    proc = project.ok("tasks", "test", "pipelines/cli_basic.py:basic", "total")
    assert f"inputs from run {source['run_id']}" in proc.stdout
    assert "total of 3 values is 28.0" in proc.stdout  # (1 + 4 + 9) * 2, params of that run
    assert "returned: {'total': 28.0" in proc.stdout
    runs = project.json("runs", "list", "--limit", "1")
    assert runs[0]["trigger"] == "test" and runs[0]["state"] == "success"
    test_run = project.json("runs", "show", runs[0]["run_id"])
    assert list(instances(test_run)) == ["total"]

    given = project.json("tasks", "test", "pipelines/cli_basic.py", "total",
                         "--input", "values=[1, 2]", "--param", 'words=["w"]')
    assert given["output"]["total"] == 3 and given["output"]["words"] == ["w"]
    assert given["trigger"] == "test"

    mapped = project.json("tasks", "test", "pipelines/cli_basic.py", "square")
    assert mapped["output"] == [2.0, 8.0, 18.0]


def test_tasks_test_failures_and_missing_inputs(project: Project) -> None:
    proc = project.ok("tasks", "test", "pipelines/cli_failing.py", "validate", code=2)
    assert "no run of pipeline 'failing' has a successful 'load'" in proc.stderr
    assert "--input data=VALUE" in proc.stderr
    assert "no argument or upstream task" in project.ok(
        "tasks", "test", "pipelines/cli_failing.py", "validate", "--input", "rows=1", code=2).stderr

    project.ok("run", "failing", "-e", "inline", code=1)
    failed = project.ok("tasks", "test", "pipelines/cli_failing.py", "validate", code=1)
    assert "checking 10 rows" in failed.stdout and "ValueError: bad row 6" in failed.stdout
    assert "cadenza resume" not in failed.stdout  # a test run is not resumed
    failed_id = project.last_run_id()
    assert "cannot be resumed" in project.ok("resume", failed_id, code=2).stderr
    passed = project.ok("tasks", "test", "pipelines/cli_failing.py", "validate",
                        "--input", "data=[1, 2, 3]")
    assert "returned: [1, 2, 3]" in passed.stdout


# --- resume, pools, db ---------------------------------------------------------------------


def test_resume_a_failed_run_after_fixing_the_code(project: Project) -> None:
    project.ok("run", "failing", "-e", "threads", code=1)
    run_id = project.last_run_id()
    path = project.pipelines / "cli_failing.py"
    path.write_text(path.read_text().replace("x % 7 == 6", "x < 0"))
    proc = project.ok("resume", run_id)
    assert f"Resumed run {run_id}" in proc.stdout and "succeeded" in proc.stdout
    tis = instances(project.json("runs", "show", run_id))
    assert tis["load"]["attempts"] == 1  # kept, not run again
    assert tis["validate"]["attempts"] == 2 and tis["validate"]["state"] == "success"
    assert tis["train"]["state"] == "success"
    again = project.ok("resume", run_id)
    assert "already succeeded" in again.stdout


def test_pools_set_and_list(project: Project) -> None:
    assert "Created pool gpu with 2 slots" in project.ok("pools", "set", "gpu", "2").stdout
    assert "2 -> 4 slots" in project.ok("pools", "set", "gpu", "4", "-d", "two cards").stdout
    pools = {p["name"]: p for p in project.json("pools", "list")}
    assert pools["gpu"] == {"name": "gpu", "slots": 4, "description": "two cards"}
    assert "gpu" in project.ok("pools", "list").stdout
    assert "slots must be 0 or more" in project.ok("pools", "set", "gpu", "--", "-1", code=2).stderr
    assert project.ok("pools", "set", "gpu", "many", code=2).stderr  # typer's usage error


def test_db_upgrade_reports_the_revision(project: Project, tmp_path: Path) -> None:
    proc = project.ok("db", "upgrade")
    assert "is at schema revision" in proc.stdout
    other = tmp_path / "other.db"
    proc = project.ok("db", "upgrade", "--url", f"sqlite:///{other}")
    assert other.exists() and str(other) in proc.stdout


def test_executor_default_comes_from_cadenza_toml(tmp_path: Path) -> None:
    p = make_project(tmp_path, executor="inline")
    run = p.json("run", "greet")
    assert run["executor"] == "inline"


def test_readme_five_minute_tour_is_true(tmp_path: Path) -> None:
    """The commands of README's tour, in order, with the project's own settings."""
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    p.ok("init", "demo")
    demo = tmp_path / "demo"
    assert "example   pipelines/example.py  3" in p.ok("pipelines", "list", cwd=demo).stdout
    run = p.ok("run", "pipelines/example.py", "--param", "n=5", cwd=demo).stdout
    assert "executor processes" in run and "of pipeline example succeeded" in run
    run_id = p.json("runs", "list", cwd=demo)[0]["run_id"]
    assert run_id in p.ok("runs", "list", cwd=demo).stdout
    shown = p.ok("runs", "show", run_id[:8], cwd=demo).stdout
    assert "square (5 mapped)" in shown and "total  metric  total  55.0" in shown
    assert p.ok("logs", run_id[:8], "square", "--map-index", "2", cwd=demo).stdout == "squaring 3\n"
    tested = p.ok("tasks", "test", "pipelines/example.py", "total", cwd=demo).stdout
    assert f"inputs from run {run_id}" in tested and "returned: 55" in tested


GRAPH_ORDER = '''
from cadenza import pipeline, task


@task
def zeta() -> dict:
    return {"rows": 3}


@task
def alpha(z: dict) -> str:
    return "a" * 200  # small enough to stay inline, too long for the table


@task
def mid(a: str) -> list:
    return [len(a)]


@pipeline
def ordered():
    mid(alpha(zeta()))
'''


def test_runs_show_lists_tasks_in_graph_order_with_small_json_outputs(tmp_path: Path) -> None:
    p = make_project(tmp_path, files={"pipelines/ordered.py": GRAPH_ORDER})
    rid = p.json("run", "ordered", "-e", "inline")["run_id"]
    data = p.json("runs", "show", rid)
    assert [t["task_id"] for t in data["task_instances"]] == ["zeta", "alpha", "mid"]
    lines = p.ok("runs", "show", rid).stdout.splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("TASK"))
    rows = [x for x in lines[header + 1:] if x.strip()]
    assert [r.split()[0] for r in rows] == ["zeta", "alpha", "mid"], rows
    assert '{"rows": 3}' in rows[0]
    assert '"aaaa' in rows[1] and "…" in rows[1] and "a" * 200 not in rows[1]
    assert "[200]" in rows[2]


def test_runs_list_outside_a_project_says_so_and_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-project"
    folder.mkdir()
    env = {k: v for k, v in clean_env(tmp_path / "home").items()
           if k not in ("CADENZA_HOME", "CADENZA_DATABASE_URL")}
    p = Project(root=folder, env=env)
    for args in (["runs", "list"], ["runs", "show", "abc"], ["logs", "abc", "t"],
                 ["lineage", "abc"], ["gc", "--dry-run"], ["pools", "list"]):
        proc = p.ok(*args, code=2)
        assert "no Cadenza project here" in proc.stderr, proc.stderr
        assert "cadenza init" in proc.stderr and "CADENZA_HOME" in proc.stderr
    assert not (folder / ".cadenza").exists()
    # Each of these makes it a project: CADENZA_HOME, CADENZA_DATABASE_URL, a cadenza.toml.
    assert "No runs yet" in p.ok("runs", "list", env=dict(
        env, CADENZA_HOME=str(tmp_path / "h1"))).stdout
    assert "No runs yet" in p.ok("runs", "list", env=dict(
        env, CADENZA_DATABASE_URL=f"sqlite:///{tmp_path / 'h2' / 'c.db'}")).stdout
    assert not (folder / ".cadenza").exists()
    (folder / "cadenza.toml").write_text("")
    assert "No runs yet" in p.ok("runs", "list").stdout
    (folder / "cadenza.toml").unlink()
    # A run of a file here makes its store in .cadenza/: from then on, this folder has runs.
    (folder / "one.py").write_text(GRAPH_ORDER)
    rid = p.json("run", "one.py", "-e", "inline")["run_id"]
    assert [r["run_id"] for r in p.json("runs", "list")] == [rid]


SMALL_ASSET = '''
from cadenza import Asset, pipeline, task

scores = Asset("metrics/scores")


@task(outlets=[scores])
def score() -> dict:
    return {"auc": 0.91}


@pipeline
def scoring():
    score()
'''


def test_lineage_of_an_asset_with_a_small_json_value_names_its_task(tmp_path: Path) -> None:
    p = make_project(tmp_path, files={"pipelines/scoring.py": SMALL_ASSET})
    rid = p.json("run", "scoring", "-e", "inline")["run_id"]
    text = " ".join(p.ok("lineage", "metrics/scores").stdout.split())
    assert f"asset metrics/scores v1 (value stored inline) score run {rid} attempt 1" in text
    data = p.json("lineage", "metrics/scores")
    assert (data["asset"]["task_id"], data["asset"]["run_id"]) == ("score", rid)


UNGUARDED = '''
from pathlib import Path

from cadenza import pipeline, task


@task
def touch() -> str:
    Path(__file__).with_name("ran.txt").write_text("the pipeline ran")
    return "ran"


@pipeline
def unguarded():
    touch()


unguarded.run(executor="inline")  # no `if __name__ == "__main__":` guard
'''


def test_cli_commands_refuse_a_file_that_starts_a_run_when_imported(tmp_path: Path) -> None:
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    (tmp_path / "unguarded.py").write_text(UNGUARDED)
    for args in (["plan", "unguarded.py"], ["run", "unguarded.py"],
                 ["tasks", "test", "unguarded.py", "touch"]):
        proc = p.ok(*args, code=2)
        assert "unguarded.py starts a run when it is imported" in proc.stderr, proc.stderr
        assert 'if __name__ == "__main__":' in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "ran.txt").exists(), f"`cadenza {args[0]}` ran the pipeline"
    listed = p.ok("pipelines", "list", "unguarded.py", code=1)
    assert "starts a run when it is imported" in listed.stdout + listed.stderr
    assert not (tmp_path / "ran.txt").exists()
    # `python unguarded.py` is what the file is for: it runs.
    subprocess.run([sys.executable, "unguarded.py"], cwd=tmp_path, env=p.env, check=True,
                   capture_output=True, timeout=120)
    assert (tmp_path / "ran.txt").read_text() == "the pipeline ran"
