"""`cadenza plan` and `cadenza lineage`, run as the real executable in a temporary project.

The pipeline is tests/pipelines/plan_cli.py (cached tasks returning NumPy arrays, a helper
the tests edit, a mapped task and the asset "features/plan"), copied into the project.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_support import FIXTURES, Project, clean_env, instances, make_project

PIPELINE = "pipelines/plan_cli.py"
TASKS = ["make_data", "normalise", "features", "score"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = make_project(tmp_path)
    shutil.copy(FIXTURES / "plan_cli.py", p.pipelines / "plan_cli.py")
    return p


def by_label(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Plan entries (from `plan --json`) by label: "score[*]" for a mapped task's summary."""
    out = {}
    for e in entries:
        index = e["map_index"]
        name = e["task_id"] if index == -1 else f"{e['task_id']}[{'*' if index is None else index}]"
        out[name] = e
    return out


def rows(stdout: str) -> dict[str, str]:
    """The plan table's rows: task label -> the rest of the line, spaces squeezed."""
    found = {}
    for line in stdout.splitlines()[2:]:  # the summary line, then the header
        name, _, rest = line.strip().partition(" ")
        found[name] = " ".join(rest.split())
    return found


def edit_helper(project: Project) -> None:
    path = project.pipelines / "plan_cli.py"
    text = path.read_text(encoding="utf-8")
    assert "return 0.5" in text
    path.write_text(text.replace("return 0.5", "return 0.25"), encoding="utf-8")


# --- startup ---------------------------------------------------------------------------------


def test_plan_and_lineage_are_listed_and_their_help_does_not_import_the_store(
        tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    top = subprocess.run([sys.executable, "-m", "cadenza", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert top.returncode == 0 and "plan" in top.stdout and "lineage" in top.stdout
    for command in ("plan", "lineage"):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cadenza", command,
                               "--help"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:")]
        assert imported and not [m for m in imported if m.startswith("sqlalchemy")]


# --- plan ------------------------------------------------------------------------------------


def test_plan_before_any_run_says_no_entry_then_upstream_will_run(project: Project) -> None:
    proc = project.ok("plan", PIPELINE)
    assert "0 of 4 tasks cached, 4 will run" in proc.stdout
    table = rows(proc.stdout)
    assert table["make_data"] == "will run no entry"
    for name in ("normalise", "features", "score[*]"):
        assert table[name] == "will run upstream will run"
    entries = project.json("plan", PIPELINE)
    assert [e["task_id"] for e in entries] == TASKS
    assert [e["decision"] for e in entries] == ["will run"] * 4
    assert project.json("runs", "list") == []  # planning records nothing


def test_plan_after_a_run_is_all_cached_and_hides_instances_unless_all(
        project: Project) -> None:
    run = project.json("run", PIPELINE)
    assert run["state"] == "success"
    proc = project.ok("plan", PIPELINE)
    assert "4 of 4 tasks cached, 0 will run" in proc.stdout
    table = rows(proc.stdout)
    assert list(table) == ["make_data", "normalise", "features", "score[*]"]
    assert table["make_data"] == f"cached cache hit (from run {run['run_id']} task make_data)"
    assert table["score[*]"] == "cached 2 of 2 instances cached"
    assert "2 per-instance lines of mapped tasks hidden; --all shows them" in proc.stderr

    every = rows(project.ok("plan", PIPELINE, "--all").stdout)
    assert every["score[1]"] == f"cached cache hit (from run {run['run_id']} task score[1])"

    entries = by_label(project.json("plan", PIPELINE))
    assert set(entries) == {"make_data", "normalise", "features", "score[*]", "score[0]",
                            "score[1]"}
    assert all(e["decision"] == "cached" for e in entries.values())
    made = instances(run)["make_data"]
    assert entries["make_data"]["cache_key"] == made["cache_key"]
    assert entries["make_data"]["origin"] == {"run_id": run["run_id"], "task_id": "make_data",
                                              "map_index": -1, "attempt": 1}

    # The run the plan predicted: everything is served from the cache.
    again = project.json("run", PIPELINE)
    assert {t["state"] for t in again["task_instances"]} == {"cached", "success"}
    assert instances(again)["make_data"]["state"] == "cached"


def test_plan_names_the_edited_helper_and_the_changed_parameter(project: Project) -> None:
    project.ok("run", PIPELINE)
    changed = by_label(project.json("plan", PIPELINE, "--param", "n=7"))
    assert changed["make_data"]["decision"] == "will run"
    assert changed["make_data"]["reason"] == "input changed (n)"
    assert changed["normalise"]["reason"] == "upstream will run"

    # A list parameter is read as `cadenza run` reads it: a new weight misses, an old one hits.
    mapped = by_label(project.json("plan", PIPELINE, "--param", "weights=[2, 5]"))
    assert mapped["score[0]"]["decision"] == "cached"
    assert mapped["score[1]"]["reason"] == "input changed (weight)"
    assert mapped["score[*]"]["reason"] == "1 of 2 instances cached"

    edit_helper(project)
    proc = project.ok("plan", PIPELINE)
    table = rows(proc.stdout)
    assert table["make_data"].startswith("cached cache hit")
    assert table["normalise"] == "will run code changed (function shift)"
    assert table["features"] == "will run upstream will run"
    assert "1 of 4 tasks cached, 3 will run" in proc.stdout


def test_plan_usage_errors_exit_2_without_a_traceback(project: Project) -> None:
    for args, message in (
        (["plan", PIPELINE, "--param", "n=lots"], "n"),
        (["plan", PIPELINE, "--param", "n"], "--param expects NAME=VALUE"),
        (["plan", "pipelines/nothere.py"], "no such file: pipelines/nothere.py"),
    ):
        proc = project.ok(*args, code=2)
        assert proc.stderr.startswith("error:") and message in proc.stderr, proc.stderr
        assert proc.stdout == ""


# --- lineage ---------------------------------------------------------------------------------


def two_runs(project: Project) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run, then one with another n (so nothing is cached and "features/plan" gets v2).
    `run --json` prints what `runs show --json` does."""
    first = project.json("run", PIPELINE)
    second = project.json("run", PIPELINE, "--param", "n=7")
    assert first["state"] == second["state"] == "success"
    assert "cached" not in {t["state"] for t in second["task_instances"]}
    return first, second


def sha_of(run: dict[str, Any], label: str) -> str:
    output = instances(run)[label]["output"]
    assert output["kind"] == "artifact", output
    return str(output["sha256"])


def test_lineage_of_an_asset_walks_to_what_it_was_computed_from(project: Project) -> None:
    first, second = two_runs(project)
    text = project.ok("lineage", "features/plan").stdout.splitlines()
    assert text[0] == "asset features/plan v2"
    assert text[1].startswith(f"{sha_of(second, 'features')[:12]}  features  run "
                              f"{second['run_id']}  attempt 1  code ")
    assert "numpy.ndarray" in text[1]
    # Upstream only (features has no consumer), so its inputs hang directly under it.
    assert text[2].startswith(f"└── {sha_of(second, 'normalise')[:12]}  normalise  ")
    assert text[3].startswith(f"    └── {sha_of(second, 'make_data')[:12]}  make_data  ")
    assert len(text) == 4

    older = project.ok("lineage", "features/plan@1", "--upstream").stdout
    assert older.startswith("asset features/plan v1\n")
    assert f"run {first['run_id']}" in older and second["run_id"] not in older

    tree = project.json("lineage", "features/plan")
    assert tree["asset"]["version"] == 2 and tree["asset"]["run_id"] == second["run_id"]
    assert tree["sha256"] == sha_of(second, "features") and tree["downstream"] == []
    (normalise,) = tree["upstream"]
    assert normalise["artifact"]["task_id"] == "normalise"
    assert normalise["artifact"]["input_sha256s"] == [sha_of(second, "make_data")]
    assert [n["artifact"]["task_id"] for n in normalise["upstream"]] == ["make_data"]


def test_lineage_of_an_artifact_prefix_from_runs_show(project: Project) -> None:
    first, _ = two_runs(project)
    sha = sha_of(project.json("runs", "show", first["run_id"]), "make_data")
    prefix = sha[:10]
    # The text of `runs show` has the prefix to copy, too.
    assert sha[:12] in project.ok("runs", "show", first["run_id"]).stdout

    down = project.json("lineage", prefix, "--downstream")
    assert down["sha256"] == sha and down["upstream"] == [] and down["asset"] is None
    (normalise,) = down["downstream"]
    assert normalise["sha256"] == sha_of(first, "normalise")
    assert sorted(n["artifact"]["task_id"] + str(n["artifact"]["map_index"])
                  for n in normalise["downstream"]) == ["features-1", "score0", "score1"]

    text = project.ok("lineage", prefix, "--downstream", "--depth", "1").stdout.splitlines()
    assert text[0].startswith(f"{sha[:12]}  make_data  run {first['run_id']}")
    assert text[1].startswith(f"└── {sha_of(first, 'normalise')[:12]}  normalise")
    assert text[1].endswith("(more beyond --depth)") and len(text) == 2

    # Both ways from the middle: inputs and consumers in their own branches.
    both = project.ok("lineage", sha_of(first, "normalise")[:12]).stdout
    assert "├── upstream (computed from)" in both and "└── downstream (used by)" in both
    assert f"│   └── {sha[:12]}  make_data" in both

    up = project.json("lineage", prefix, "--upstream")
    assert up["upstream"] == [] and up["downstream"] == []  # make_data reads no artifact


def test_lineage_of_something_unknown_exits_2_with_the_fix(project: Project) -> None:
    project.ok("run", PIPELINE)
    for args, message in (
        (["lineage", "deadbeef"], "no artifact with SHA-256 'deadbeef'"),
        (["lineage", "features/plan@9"], "asset 'features/plan' has no version 9"),
        (["lineage", "features/plan", "--upstream", "--downstream"],
         "--upstream and --downstream exclude each other"),
    ):
        proc = project.ok(*args, code=2)
        assert proc.stderr.startswith(f"error: {message}"), proc.stderr
        assert "\n  fix: " in proc.stderr and proc.stdout == ""
    assert "cadenza runs show RUN_ID" in project.ok("lineage", "deadbeef", "--json",
                                                    code=2).stderr


# --- README ----------------------------------------------------------------------------------


def test_readme_tour_plan_lines_are_true(tmp_path: Path) -> None:
    """README's tour: `cadenza plan` on the `cadenza init` example, then with cache=True."""
    p = Project(root=tmp_path, env=clean_env(tmp_path / "home"))
    p.ok("init", "demo")
    demo = tmp_path / "demo"
    plan = ["plan", "pipelines/example.py", "--param", "n=5"]
    table = rows(p.ok(*plan, cwd=demo).stdout)
    assert table == {"numbers": "will run cache off", "square[*]": "will run cache off",
                     "total": "will run cache off"}

    example = demo / "pipelines" / "example.py"
    text = example.read_text(encoding="utf-8")
    example.write_text(text.replace("@task\ndef numbers", "@task(cache=True)\ndef numbers"),
                       encoding="utf-8")
    run_id = p.json("run", "pipelines/example.py", "--param", "n=5", cwd=demo)["run_id"]
    assert rows(p.ok(*plan, cwd=demo).stdout)["numbers"] == (
        f"cached cache hit (from run {run_id} task numbers)")
    assert rows(p.ok("plan", "pipelines/example.py", "--param", "n=6", cwd=demo).stdout)[
        "numbers"] == "will run input changed (n)"
    text = example.read_text(encoding="utf-8")
    example.write_text(text.replace("range(1, n + 1)", "range(n, 0, -1)"), encoding="utf-8")
    assert rows(p.ok(*plan, cwd=demo).stdout)["numbers"] == (
        "will run code changed (function numbers)")
