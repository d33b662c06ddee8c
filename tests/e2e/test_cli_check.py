"""`cadenza pipelines check` (SPEC §7, for CI) as a real executable on a project folder: every
problem of every file, each file imported in its own process (a crash or a hang takes only
that file down), pools checked against the store or `--pool`, exit 1 with problems, 0 clean."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.e2e.test_cli_support import make_project

GOOD = '''
from cadenza import pipeline, task

@task(pool="etl")
def extract() -> int:
    return 1

@pipeline(schedule="0 2 * * *")
def nightly():
    extract()
'''

# Three pipelines with problems in one file: every one is reported, not only the first.
DEFINITIONS = '''
from cadenza import pipeline, task

@task(trigger_rule="all_dnoe")
def a() -> int:
    return 1

@task
def b() -> int:
    return 1

@pipeline(schedule="61 2 * * *")
def bad_cron():
    b()

@pipeline
def bad_rule():
    a()

@pipeline
def bad_default(cfg=lambda: 1):
    b()

@pipeline(start_date="2026-02-01", end_date="2026-01-01", schedule="@daily")
def never_fires():
    b()
'''

IMPORT_ERROR = '''
from cadenza import pipeline
import not_a_module_xyz
'''

TRIGGERS = '''
from cadenza import AnyOf, Asset, pipeline, task

@task
def c() -> int:
    return 1

@pipeline(name="nightly", triggers=[Asset("x"), AnyOf(Asset("y"), Asset("z"))])
def mixed():
    c()
'''

CRASH = "import os\nos._exit(3)\n"
HANG = "import time\ntime.sleep(600)\n"


def _project(tmp_path: Path, files: dict[str, str]):  # type: ignore[no-untyped-def]
    return make_project(tmp_path, files={f"pipelines/{k}": textwrap.dedent(v)
                                         for k, v in files.items()})


def test_a_folder_with_broken_files_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    p = _project(tmp_path, {"good.py": GOOD, "definitions.py": DEFINITIONS,
                            "import_error.py": IMPORT_ERROR, "triggers.py": TRIGGERS})
    report = p.json("pipelines", "check", "pipelines/", code=1)
    assert report["ok"] is False
    by_file: dict[str, list[dict[str, str]]] = {}
    for problem in report["problems"]:
        by_file.setdefault(problem["file"], []).append(problem)
    assert set(by_file) == {"pipelines/definitions.py", "pipelines/import_error.py",
                            "pipelines/triggers.py", "pipelines/good.py"}
    definitions = {(x["pipeline"], x["task"], x["message"]) for x in by_file["pipelines/definitions.py"]}
    assert ("bad_cron", None, "schedule '61 2 * * *' is not a valid cron expression") in definitions
    assert any(pl == "bad_rule" and t == "a" and "unknown trigger_rule 'all_dnoe'" in m
               for pl, t, m in definitions)
    assert any(pl == "bad_default" and "parameter 'cfg' is a lambda" in m
               for pl, _, m in definitions)
    assert any(pl == "never_fires" and "the schedule never fires" in m
               for pl, _, m in definitions)
    (imp,) = by_file["pipelines/import_error.py"]
    assert "No module named 'not_a_module_xyz' (line 3)" in imp["message"]
    assert "import not_a_module_xyz" in imp["detail"] and "cadenza/engine" not in imp["detail"]
    triggers = {x["kind"]: x for x in by_file["pipelines/triggers.py"]}
    assert "mixes plain assets" in triggers["definition"]["message"]
    assert "also defined in pipelines/good.py" in triggers["duplicate"]["message"]
    good = {x["kind"]: x for x in by_file["pipelines/good.py"]}
    assert "pool 'etl' does not exist" in good["pool"]["message"]
    assert good["pool"]["hint"].startswith("cadenza pools set etl 4")
    # The human form says the same, with the fix for each, and no traceback of ours.
    proc = p.ok("pipelines", "check", code=1)
    assert "FAIL pipelines/definitions.py: 4 problems" in proc.stdout
    assert "Fix: @task(trigger_rule=\"all_done\")" in proc.stdout
    assert "4 file(s), 3 pipeline(s) checked: 9 problem(s) in 4 file(s)" in proc.stdout


def test_a_crashing_or_hanging_file_does_not_take_the_others_down(tmp_path: Path) -> None:
    p = _project(tmp_path, {"crash.py": CRASH, "hang.py": HANG, "good.py": GOOD})
    report = p.json("pipelines", "check", "--timeout", "5", "--pool", "etl", code=1)
    messages = {x["file"]: x["message"] for x in report["problems"]}
    assert messages == {
        "pipelines/crash.py": "importing the file exited with code 3 before it could be checked",
        "pipelines/hang.py": "importing the file took longer than 5 s and was stopped",
    }
    files = {f["file"]: f for f in report["files"]}
    assert files["pipelines/good.py"] == {"file": "pipelines/good.py", "pipelines": ["nightly"],
                                          "problems": 0}


def test_a_clean_project_exits_0_and_pools_in_the_store_count(tmp_path: Path) -> None:
    p = _project(tmp_path, {"good.py": GOOD})
    p.ok("pipelines", "check", code=1)  # pool 'etl' is nowhere yet
    p.ok("pools", "set", "etl", "2")
    proc = p.ok("pipelines", "check")
    assert "ok   pipelines/good.py (1 pipeline(s))" in proc.stdout
    assert "1 file(s), 1 pipeline(s) checked: no problems" in proc.stdout
