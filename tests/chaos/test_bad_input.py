"""The bad-input campaign: hypothesis fuzzes CLI arguments, pipeline definitions and
parameter values, and whatever it sends, the user sees no Python traceback, never the
"probably a bug in Cadenza" line, and an error that says what is wrong and how to fix it;
exit codes are 2 for usage and definition errors, 1 for a failed run, 0 for success.

The CLI runs in-process (`cadenza.cli.main.main(argv)`, the executable's entry point) with
its consoles pointed at buffers, in a fresh project per test; runs use the inline executor.
"""

from __future__ import annotations

import io
import keyword
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.chaos

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


class Cli:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, *argv: str) -> tuple[int, str]:
        from cadenza.cli import console
        from cadenza.cli import main as cli_main
        from cadenza.core.settings import set_settings

        buf = io.StringIO()
        saved = console._STDOUT, console._STDERR
        console._STDOUT = console._STDERR = buf
        console._consoles.clear()
        set_settings(None)
        try:
            with redirect_stdout(buf), redirect_stderr(buf):
                code = cli_main.main(list(argv))
        finally:
            console._STDOUT, console._STDERR = saved
            console._consoles.clear()
            set_settings(None)
        return code, buf.getvalue()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    root = tmp_path / "proj"
    (root / "pipelines").mkdir(parents=True)
    (root / "cadenza.toml").write_text('pipelines = ["pipelines/"]\nexecutor = "inline"\n')
    (root / "pipelines" / "typed.py").write_text(TYPED)
    for key in ("CADENZA_DATABASE_URL", "CADENZA_ARTIFACT_ROOT", "CADENZA_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(root)
    yield Cli(root)


def assert_clean(code: int, text: str, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    assert "Traceback (most recent call last)" not in text, text
    assert "probably a bug in Cadenza" not in text, text
    assert code in allowed, (code, text)
    if code == 2:
        low = text.lower()
        # Cadenza's errors end with a "fix:" line; click's usage errors print the usage and
        # point at -h, except "Option '-p' requires an argument." (what, and so the fix).
        assert ("fix:" in low or "usage:" in low or "requires an argument" in low), text


TYPED = '''
from datetime import date
from cadenza import pipeline, task

@task
def use(n: int, ratio: float, flag: bool, names: list[str], sizes: dict[str, int],
        label: str, day: date) -> str:
    return f"{n} {ratio} {flag} {names} {sizes} {label} {day}"

@pipeline
def typed(n: int = 1, ratio: float = 0.5, flag: bool = False, names: list[str] = ["a"],
          sizes: dict[str, int] = {"a": 1}, label: str = "x", day: date = date(2026, 1, 1)):
    use(n, ratio, flag, names, sizes, label, day)

@task
def boom() -> None:
    raise ValueError("this task always fails")

@pipeline
def failing():
    boom()
'''

WORDS = ["run", "resume", "runs", "list", "show", "plan", "lineage", "backfill", "pipelines",
         "pause", "unpause", "pools", "set", "delete", "events", "gc", "logs", "tasks", "test",
         "db", "upgrade", "version", "typed", "failing", "pipelines/typed.py",
         "pipelines/typed.py:typed", "pipelines/typed.py:nope", "missing.py", "-p", "--param",
         "n=1", "n=x", "=", "n=", "--executor", "inline", "sideways", "--json", "--limit",
         "-1", "0", "999999999999999999999", "--start", "--end", "2026-13-45", "yesterday",
         "--keep-last", "--dry-run", "--state", "bogus", "abc123", "", "-", "--", ":", "::",
         "\x00", "é", "a" * 300, "a/" * 2100, "--grace", "1e309", "nan", "x\x00y.py"]
COMMANDS = [["run"], ["resume"], ["runs", "list"], ["runs", "show"], ["plan"], ["lineage"],
            ["backfill"], ["pipelines", "list"], ["pipelines", "pause"], ["pools", "set"],
            ["pools", "delete"], ["events", "list"], ["gc"], ["logs"], ["tasks", "test"],
            ["version"], ["runs", "delete"], ["runs", "cancel"]]
tokens = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))


@FUZZ
@given(command=st.sampled_from(COMMANDS), args=st.lists(tokens, max_size=5))
def test_any_cli_arguments_get_an_answer_not_a_traceback(cli: Cli, command: list[str],
                                                         args: list[str]) -> None:
    if command[0] == "gc" and "--dry-run" not in args:
        args = [*args, "--dry-run"]
    code, text = cli(*command, *args)
    assert_clean(code, text)


VALUES = st.one_of(st.text(max_size=20), st.integers().map(str), st.floats().map(str),
                   st.sampled_from(["true", "false", "yes", "[]", "[1]", '["a"]', "{}",
                                    '{"a": 1}', '{"a": "x"}', "2026-02-30", "2026-02-03",
                                    "null", "1e999", "-0", "[" * 50]))
PARAMS = ["n", "ratio", "flag", "names", "sizes", "label", "day", "nope", "", "N"]


@FUZZ
@given(values=st.lists(st.tuples(st.sampled_from(PARAMS), VALUES), min_size=1, max_size=3))
def test_any_parameter_values_run_or_are_refused_naming_the_parameter(
        cli: Cli, values: list[tuple[str, str]]) -> None:
    argv = ["run", "pipelines/typed.py:typed", "--json"]
    for name, value in values:
        argv += ["-p", f"{name}={value}"]
    code, text = cli(*argv)
    assert_clean(code, text, allowed=(0, 2))  # the task never fails: 1 would be a bug
    if code == 2:  # names the pipeline, or the parameter (given twice, unknown, ...)
        assert ("typed" in text or "--param" in text
                or any(name and name in text for name, _ in values)), text


def test_a_failed_run_exits_1_and_names_the_task(cli: Cli) -> None:
    code, text = cli("run", "pipelines/typed.py:failing")
    assert_clean(code, text, allowed=(1,))
    assert "boom" in text and "this task always fails" in text


OPTION_VALUES = {
    "retries": ["0", "2", "-1", "'x'", "1.5", "None", "True"],
    "retry_delay": ["0", "1.5", "-3", "'soon'"],
    "timeout": ["None", "5", "0", "-5", "'soon'", "float('nan')"],
    "trigger_rule": ["'all_success'", "'all_done'", "'one_failed'", "'sometimes'", "''", "3"],
    "cache": ["True", "False", "'yes'"],
    "pool": ["None", "'default'", "''", "7"],
    "retries_typo": ["2"],
}


@st.composite
def pipeline_sources(draw: st.DrawFn) -> tuple[str, bool]:
    """A pipeline file with a few tasks and random options; whether it may be valid."""
    n = draw(st.integers(1, 3))
    lines = ["from cadenza import pipeline, task", ""]
    names = []
    for i in range(n):
        opts = draw(st.dictionaries(st.sampled_from(sorted(OPTION_VALUES)),
                                    st.sampled_from(["0"]), max_size=3))
        parts = []
        for key in opts:
            value = draw(st.sampled_from(OPTION_VALUES[key]))
            parts.append(f"{'retires' if key == 'retries_typo' else key}={value}")
        name = draw(st.sampled_from([f"step{i}", "step0", "pipeline", "_x", "class_"]))
        if keyword.iskeyword(name):
            name = f"step{i}"
        names.append(name)
        lines += [f"@task({', '.join(parts)})", f"def {name}(x: int = 0) -> int:",
                  "    return x + 1", ""]
    wiring = draw(st.sampled_from(["chain", "same_twice", "self_loop", "fan"]))
    body = []
    if wiring == "chain":
        prev = "0"
        for i, name in enumerate(names):
            body.append(f"    v{i} = {name}({prev})")
            prev = f"v{i}"
    elif wiring == "same_twice":
        body += [f"    a = {names[0]}()", f"    b = {names[0]}()", "    a >> b", "    b >> a"]
    elif wiring == "self_loop":
        body += [f"    a = {names[0]}()", "    a >> a"]
    else:
        body += [f"    r{i} = {name}()" for i, name in enumerate(names)]
    lines += ["@pipeline", "def fuzzed():", *body, ""]
    return "\n".join(lines), wiring in ("chain", "fan")


@FUZZ
@given(source=pipeline_sources())
def test_any_pipeline_definition_runs_or_is_refused_with_the_fix(
        cli: Cli, source: tuple[str, bool]) -> None:
    text_src, _ = source
    path = cli.root / "pipelines" / "fuzzed.py"
    path.write_text(textwrap.dedent(text_src))
    code, text = cli("run", "pipelines/fuzzed.py:fuzzed")
    assert_clean(code, text, allowed=(0, 2))
    if code == 2:
        assert "fuzzed" in text or "fuzzed.py" in text, text  # names the pipeline or file


@pytest.mark.parametrize("argv", [
    ["run", ""], ["plan", ""], ["tasks", "test", "", "x"], ["run", "a" * 300],
    ["run", "a/" * 2100], ["pipelines", "list", "a" * 300], ["run", "x\x00y.py"]])
def test_paths_no_file_could_have_are_usage_errors(cli: Cli, argv: list[str]) -> None:
    """Found by the fuzz test: an empty target was a ValueError from pathlib and a name
    over 255 bytes an OSError (ENAMETOOLONG), both shown as 'probably a bug in Cadenza'."""
    code, text = cli(*argv)
    assert_clean(code, text, allowed=(2,))
    assert "path" in text or "file name" in text, text
