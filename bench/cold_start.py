"""Where a one-task cold start goes, in instructions counted by callgrind (deterministic).

    python bench/cold_start.py

The wall-clock line of `bench/overhead.py` ("one-task pipeline as a fresh process") is the
figure to quote, but on a shared machine it moves by ±30% or more; this counts the
instructions of each part once, so two versions can be compared on a loaded machine (a
difference of a few million instructions is noise: allocator and hash-seed effects).
Needs valgrind. Every probe starts from cached bytecode (a private PYTHONPYCACHEPREFIX,
written by a native warm-up run), as an installed package does.

Probes (each a fresh interpreter, SQLite store in a new CADENZA_HOME):
  interpreter        python -c pass
  import cadenza     python -c "import cadenza"
  import sqlalchemy  python -c "import sqlalchemy"
  store, new db      import the store and open a new SQLite database (schema created)
  worker preload     what the processes executor's forkserver imports before forking workers
  one-task run       the whole driver process of bench/overhead.py's one-task script
                     (worker processes run natively and are not counted)
  run until fork-    the same driver's instructions (all its threads) until it spawns the
    server spawned   forkserver (multiprocessing's second fork_exec: the resource tracker's
                     is the first), from callgrind's dumps at `subprocess_fork_exec`

The one-task script's critical path on the processes executor (its default) is roughly:
"run until forkserver spawned", then the forkserver's "worker preload" (the driver imports
the engine and opens the store meanwhile, on the other core), then the run itself and the
driver's exit (a few percent of "one-task run"). So a cold start shortens with either of
those two lines, and only with "one-task run" where the driver's work after the spawn
outlasts the preload.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

QUICK = textwrap.dedent("""
    from cadenza import pipeline, task

    @task
    def hello(name: str) -> str:
        return f"hello {name}"

    @pipeline
    def quick(name: str = "world"):
        hello(name)

    if __name__ == "__main__":
        assert quick.run().ok
""")

STORE = ("import sys\nfrom cadenza.store import open_store\n"
         "open_store('sqlite:///' + sys.argv[1]).dispose()\n")
PRELOAD = "import cadenza.executors.processes.child, cadenza.executors.worker"


def _instructions(args: list[str], env: dict[str, str], cwd: Path) -> int:
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=cwd)  # warm .pyc
    for leftover in cwd.glob("home*"):
        shutil.rmtree(leftover)
    for leftover in cwd.glob("new*.db*"):
        leftover.unlink()
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--trace-children=no",
         "--callgrind-out-file=/dev/null", sys.executable, *args],
        check=True, env=env, cwd=cwd, capture_output=True, text=True,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if not found:
        raise SystemExit(f"no instruction count in valgrind's output:\n{proc.stderr}")
    return int(found.group(1))


def _until_forkserver(args: list[str], env: dict[str, str], cwd: Path) -> int:
    """Instructions of the driver until its second `subprocess_fork_exec` (multiprocessing
    spawns the resource tracker, then the forkserver): callgrind dumps its counts before
    each call; the first two dumps add up to that point."""
    for leftover in cwd.glob("home*"):
        shutil.rmtree(leftover)
    dumps = cwd / "dumps"
    dumps.mkdir()
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--trace-children=no", "--dump-instr=no",
         "--dump-before=subprocess_fork_exec", f"--callgrind-out-file={dumps / 'cg'}",
         sys.executable, *args],
        check=True, env=env, cwd=cwd, capture_output=True, text=True,
    )
    parts = sorted((int(p.suffix[1:]), p) for p in dumps.glob("cg.*") if p.suffix[1:].isdigit())
    if len(parts) < 2:
        raise SystemExit(f"the driver spawned fewer than two processes:\n{proc.stderr}")
    total = 0
    for _, part in parts[:2]:
        found = re.search(r"^summary: (\d+)", part.read_text(), re.MULTILINE)
        if not found:
            raise SystemExit(f"no summary in {part}")
        total += int(found.group(1))
    shutil.rmtree(dumps)
    return total


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="cadenza-cold-"))
    (work / "quick.py").write_text(QUICK)
    (work / "store.py").write_text(STORE)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "CADENZA_DATABASE_URL")}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["CADENZA_HOME"] = str(work / "home")
    probes = [
        ("interpreter", ["-c", "pass"]),
        ("import cadenza", ["-c", "import cadenza"]),
        ("import sqlalchemy", ["-c", "import sqlalchemy"]),
        ("store, new db", ["store.py", str(work / "new.db")]),
        ("worker preload", ["-c", PRELOAD]),
        ("one-task run", ["quick.py"]),
    ]
    counts = {name: _instructions(args, env, work) for name, args in probes}
    counts["run until forkserver spawned"] = _until_forkserver(["quick.py"], env, work)
    shutil.rmtree(work, ignore_errors=True)
    whole = counts["one-task run"]
    print(f"{'probe':<30}{'Minstr':>10}{'of run':>9}")
    for name, n in counts.items():
        print(f"{name:<30}{n / 1e6:>10.0f}{n / whole:>9.0%}")


if __name__ == "__main__":
    main()
