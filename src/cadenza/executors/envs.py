"""Per-task isolated environments: `@task(requirements=[...], python="3.11")`.

What belongs here: building virtual environments with uv and keeping them (the env cache),
and running calls in worker processes on such an environment's interpreter (parent side
`run_isolated`, worker side `child_loop`). Every executor hands its isolated calls here
(`TaskCall.isolated`): `processes` from a thread of its own, `threads` from its pool thread,
`inline` in the caller's thread; the task runs in an env worker process in all three, since
a task whose pins conflict with the driver's cannot run in the driver's interpreter. What does
not belong here: the requirement set's normal form and definition-time checks
(`graph/envspec.py`), running the call itself (`executors/worker.py`, here in the child).

The env cache. One environment per (normalised requirement set, interpreter, platform),
under `CADENZA_HOME/envs/<key>` (or `CADENZA_ENVS_DIR`), shared by every task and run that
asks for the same set. Building:
  1. fast path: `<key>/cadenza-env.json` exists -> the env is complete (it is written before
     the env is renamed into place), use it;
  2. else take `<key>.lock` (fcntl, so two processes building the same env wait for each
     other) and look again; the first one builds, the others find it done;
  3. build in `.build-<key>-<pid>-<random>` (`uv venv --relocatable`, `uv pip install`,
     `uv pip freeze` for the lock), write the marker, `rename()` it to `<key>` (atomic: a
     reader sees no env or a complete one), append one line to `builds.log`.
uv's output streams to the attempt's log (and this module's logger at DEBUG); the build's
start and end are INFO records carrying the run's id (`extra={"run_id": ...}`), which the
CLI's live progress shows as notes (`cli/progress.RunWatcher`). A build
that fails (a requirement that does not resolve, an interpreter that is not there) fails the
attempt with uv's own message and the fix, no traceback; the run goes on per trigger rules.

The env worker. The env's `bin/python` runs a bootstrap that appends the driver's `sys.path`
(and processes its site-packages' .pth files) *after* the env's own site-packages, then
imports Cadenza's worker from the driver's installation. Appending rather than installing
Cadenza into each env is what lets conflicting pins work: the env's pins come first on
`sys.path`, so a task pinning `six==1.15.0` imports that six even if the driver has 1.17,
while Cadenza and its pure-Python runtime needs (cloudpickle, fsspec) are found after it.
Installing Cadenza into the env would make uv resolve its dependencies together with the
user's pins, so a pin that conflicts with one of Cadenza's own would fail the build. The
worker's import path is standard library + Cadenza (+ cloudpickle for functions sent by
value), so an env on another Python minor version works too, for tasks whose functions are
importable by module (functions of `__main__` travel as bytecode, which is per version).

Workers are kept: after a call a worker goes back to its env's idle workers (up to
MAX_IDLE_PER_ENV per env folder, each for up to IDLE_TIMEOUT_S) and runs the next call of that
env, so the interpreter start and Cadenza's import (~250 ms) are paid once per worker, not per
call (bench/envs.py: ~520 ms per call with a new process each time, ~1.4 ms with a kept
worker, 0.4 ms on a `processes` pool worker). Each call carries what the driver's environment
variables and working directory changed by since the worker last ran one
(`_EnvWorker.catch_up`), so a kept worker's task sees them as a task on inline does. Calls go
to a worker on its stdin (length-prefixed pickles); outcomes come back on a pipe of their own
(the task may write to fd 1 and 2; those go to a file whose tail explains a worker that died).
A third pipe is never written: a watchdog thread in the worker kills the worker's process
group at its EOF, so a driver killed with `kill -9` leaves no task running. A timeout (counted
from the call reaching the worker, not from the build) or a cancel kills the worker's process
group (SIGTERM, then SIGKILL) and the worker is not kept; one that dies without an outcome is
a lost worker, retried per the task's policy. Executors' shutdown (and the process's exit)
stops idle workers.

The attempt records its env (metrics rows of kind "env": `env` the key, `env.python` the
interpreter version, `env.lock` the `uv pip freeze` of the env). The task's cache key holds
the requirement set, the python version and the digest of the resolved lock (`lock_digest`):
before looking a cached task up, the engine asks its executor for the lock of the env the
call would run in (`env_lock`: this machine's env cache, built first if needed; on Ray, a
node's), and an attempt that ran on an env with another lock (a node whose cache resolved the
set at another time) is keyed by the lock it ran with (`engine/cache.py`). So the same
requirement set resolving to other versions (a new release of an unpinned dependency, seen
after the env cache was cleared or on another machine) is a cache miss, not a stale hit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import logging
import os
import pickle
import platform
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cadenza.core.errors import CadenzaError, TaskCancelled, TaskTimeout, WorkerLost
from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.executors.base import TaskCall, TaskOutcome, describe_exception

log = logging.getLogger("cadenza.executors.envs")

ENVS_DIR_ENV = "CADENZA_ENVS_DIR"
MARKER = "cadenza-env.json"
BUILDS_LOG = "builds.log"
KILL_GRACE_S = 2.0
_TAIL_CHARS = 4000  # of a dead child's stdout/stderr, in its error
_CREDENTIALS = re.compile(r"://[^/@\s]+@")


Say = Callable[..., None]  # say(line, summary=False): one line of build progress


class EnvBuildError(CadenzaError):
    """A task's environment could not be built (uv failed); the message holds uv's own."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Env:
    """A built environment."""

    key: str
    path: Path
    python: Path  # its interpreter
    python_version: str
    lock: str  # `uv pip freeze` of the env
    built: bool = False  # this call built it (False: found in the cache)
    built_at: str = ""  # when it was built (the marker's): a folder built again is another env

    @property
    def slot(self) -> str:
        """Its kept workers' key: the folder, and which build of it (a worker started on an
        env that was deleted and built again still has the old packages imported)."""
        return f"{self.path}@{self.built_at}"


# -- the env cache --------------------------------------------------------------------------


def envs_root() -> Path:
    """Where environments are kept: CADENZA_ENVS_DIR, else CADENZA_HOME/envs."""
    explicit = os.environ.get(ENVS_DIR_ENV)
    if explicit:
        return Path(explicit)
    from cadenza.core.settings import get_settings

    return get_settings().home / "envs"


def uv_binary() -> str:
    try:
        import uv  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # a dependency of cadenza; missing only in a broken install
        found = shutil.which("uv")
        if found:
            return found
        raise EnvBuildError("uv is not installed, and tasks with requirements are built with "
                            "it", hint="pip install uv") from None
    return str(uv.find_uv_bin())


def env_key(requirements: tuple[str, ...], python: str | None) -> str:
    """The env's cache key: normalised requirements + interpreter + platform."""
    from cadenza.graph.envspec import normalize_requirements

    interpreter = (f"request {python}" if python is not None
                   else f"{os.path.realpath(sys.executable)} {sys.version}")
    body = {
        "requirements": list(normalize_requirements(requirements)),
        "interpreter": interpreter,
        "platform": f"{sys.platform}-{platform.machine()}",
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def env_lock(requirements: tuple[str, ...], python: str | None, *, build: bool,
             run_id: str | None = None) -> str | None:
    """The resolved lock (`uv pip freeze`) of the env this machine runs such a call in: from
    the env cache, or built now when `build` (None when not built and `build` is False).
    Raises EnvBuildError (uv's message) when it cannot be built. Build progress goes to this
    module's logger, as INFO records carrying `run_id` (the CLI shows them)."""
    if not build:
        found = _read_env(envs_root() / env_key(requirements, python),
                          env_key(requirements, python))
        return None if found is None else found.lock

    def say(line: str, summary: bool = False) -> None:
        log.log(logging.INFO if summary else logging.DEBUG, "%s",
                _CREDENTIALS.sub("://***@", line), extra={"run_id": run_id})

    return ensure_env(requirements, python, say=say).lock


def _read_env(path: Path, key: str) -> Env | None:
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return Env(key=key, path=path, python=path / "bin" / "python",
               python_version=str(data.get("python_version", "")), lock=str(data.get("lock", "")),
               built_at=str(data.get("built_at", "")))


@contextlib.contextmanager
def _file_lock(path: Path, say: Say) -> Iterator[None]:
    import fcntl

    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another process is building this environment; waiting for it", True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_env(requirements: tuple[str, ...], python: str | None, *,
               say: Say = lambda line, summary=False: None,
               root: Path | None = None) -> Env:
    """The environment for this requirement set, built once (see the module docstring).

    Raises EnvBuildError with uv's message when it cannot be built.
    """
    root = root or envs_root()
    key = env_key(requirements, python)
    final = root / key
    found = _read_env(final, key)  # case 1
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{key}.lock", say):  # case 2
        found = _read_env(final, key)
        if found is not None:
            say(f"environment {key} was built by another process", True)
            return found
        for stale in root.glob(f".build-{key}-*"):  # left by a builder that died
            shutil.rmtree(stale, ignore_errors=True)
        return _build(root, key, requirements, python, say)  # case 3


def _build(root: Path, key: str, requirements: tuple[str, ...], python: str | None,
           say: Say) -> Env:
    from cadenza.graph.envspec import normalize_requirements

    reqs = normalize_requirements(requirements)
    tmp = root / f".build-{key}-{os.getpid()}-{secrets.token_hex(3)}"
    uv = uv_binary()
    interpreter = python if python is not None else sys.executable
    began = time.monotonic()
    say(f"building environment {key} (python {python or 'of the driver'}): "
        f"{' '.join(reqs) or 'no requirements'}", True)
    try:
        _uv(uv, ["venv", "--relocatable", "--no-project", "--python", interpreter, str(tmp)],
            say, what=f"create a python {interpreter} environment",
            hint=None if python is None else (
                f"install Python {python} on this machine (uv finds it on PATH, or runs "
                f"`uv python install {python}` itself where it may download), or set "
                "python= to a version that is installed (`uv python list --only-installed`)"))
        env_python = tmp / "bin" / "python"
        if reqs:
            req_file = tmp / "cadenza-requirements.txt"
            req_file.write_text("\n".join(reqs) + "\n")
            _uv(uv, ["pip", "install", "--python", str(env_python), "-r", str(req_file)],
                say, what="install the requirements")
        lock = _uv(uv, ["pip", "freeze", "--python", str(env_python)], None,
                   what="list the installed packages")
        version = _pyvenv_version(tmp)
        elapsed = time.monotonic() - began
        marker = {"key": key, "requirements": list(reqs), "python_request": python,
                  "python_version": version, "lock": lock,
                  "built_at": datetime.now(UTC).isoformat(), "build_s": round(elapsed, 3)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        os.rename(tmp, root / key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with open(root / BUILDS_LOG, "a") as fh:
        fh.write(json.dumps({"key": key, "requirements": list(reqs), "python": version,
                             "build_s": round(elapsed, 3), "pid": os.getpid()}) + "\n")
    say(f"environment {key} built in {elapsed:.1f} s (python {version}); "
        f"{_packages(lock)}", True)
    return Env(key=key, path=root / key, python=root / key / "bin" / "python",
               python_version=version, lock=lock, built=True,
               built_at=str(marker["built_at"]))


def _packages(lock: str) -> str:
    count = len(lock.splitlines())
    return f"{count} package{'' if count == 1 else 's'}"


def _pyvenv_version(env: Path) -> str:
    try:
        for line in (env / "pyvenv.cfg").read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in ("version_info", "version"):
                return value.strip()
    except OSError:
        pass
    return ""


def _uv(uv: str, args: list[str], say: Say | None, *, what: str,
        hint: str | None = None) -> str:
    """Run uv; stream its stderr lines to `say`; return its stdout. EnvBuildError with uv's
    own message when it fails."""
    env = {**os.environ, "NO_COLOR": "1", "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)  # `--python` says which env; never the driver's
    proc = subprocess.Popen([uv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env)
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout
                                                               else ""), daemon=True)
    reader.start()
    errors: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip()
        if not line:
            continue
        errors.append(line)
        if say is not None:
            say(line)
    rc = proc.wait()
    reader.join()
    if rc != 0:
        # One line, so that the first line of the task's error (what run summaries show)
        # holds uv's reason; uv's own line breaks are continuation indents.
        detail = _CREDENTIALS.sub("://***@", " ".join(
            ln.strip() for ln in errors if not ln.startswith("Using ")))
        raise EnvBuildError(f"could not {what}; uv says: {detail or f'exit status {rc}'}",
                            hint=hint)
    return "".join(out_chunks)


# -- running a call in an environment (parent side) -----------------------------------------


class _Child:
    """An isolated call in flight: its process once started, and why it is being stopped."""

    __slots__ = ("call", "proc", "stop_reason")

    def __init__(self, call: TaskCall) -> None:
        self.call = call
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_reason: str | None = None


_running: dict[tuple[str, str, int], _Child] = {}
_running_lock = threading.Lock()


def cancel(run_id: str, task_id: str, map_index: int, *, reason: str = "cancelled") -> bool:
    """Stop an isolated call of that task instance, building or running. True if found."""
    with _running_lock:
        child = _running.get((run_id, task_id, map_index))
        if child is None:
            return False
        if child.stop_reason is None:
            child.stop_reason = reason
        proc = child.proc
    if proc is not None:
        _kill(proc)
    return True


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it KILL_GRACE_S later if still there."""
    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def force() -> None:
        if proc.poll() is None:
            send(signal.SIGKILL)

    send(signal.SIGTERM)
    timer = threading.Timer(KILL_GRACE_S, force)
    timer.daemon = True
    timer.start()


class _AttemptLog:
    """Build progress into the attempt's log (the worker appends the task's output after)."""

    def __init__(self, call: TaskCall) -> None:
        self.path = call.log_path
        self.run_id = call.run_id
        self.label = f"task {call.label}"
        self.written = False

    def say(self, line: str, summary: bool = False) -> None:
        line = _CREDENTIALS.sub("://***@", line)  # https://user:token@host/... in a URL
        log.log(logging.INFO if summary else logging.DEBUG, "%s: %s", self.label, line,
                extra={"run_id": self.run_id})
        if not self.path:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"[cadenza env] {line}\n")
            self.written = True
        except OSError as exc:
            log.warning("could not write task log %s: %s", self.path, exc)


def _outcome(call: TaskCall, error: ErrorInfo, started_at: datetime | None,
             worker: str | None = None) -> TaskOutcome:
    return TaskOutcome(run_id=call.run_id, task_id=call.task_id, map_index=call.map_index,
                       attempt=call.attempt, ok=False, error=error, started_at=started_at,
                       ended_at=datetime.now(UTC), worker=worker)


def _build_failed(call: TaskCall, exc: EnvBuildError) -> ErrorInfo:
    reqs = ", ".join(f'"{r}"' for r in call.requirements)
    failure = EnvBuildError(
        f"its environment could not be built: {exc.message}",
        pipeline=call.pipeline, task=call.label,
        hint=exc.hint or (f"correct @task(requirements=[{reqs}]"
                          + (f', python="{call.python}"' if call.python else "")
                          + "): each name must exist on the package index (PyPI unless "
                          "UV_INDEX_URL says otherwise) with a version matching its pin, and "
                          "the pins must agree with each other; `uv pip install --dry-run "
                          "REQUIREMENTS` shows the same error faster"),
    )
    return describe_exception(failure)


def _parent_paths() -> tuple[list[str], list[str]]:
    """(sys.path entries for the child, the site dirs among them), the standard library and
    the empty entry left out: the child has its own."""
    paths = sysconfig.get_paths()
    stdlib = tuple(p for p in {paths.get("stdlib"), paths.get("platstdlib")} if p)
    out: list[str] = []
    for p in sys.path:
        if not p or p in out:
            continue
        if stdlib and (p.startswith(stdlib) and "site-packages" not in p) or p.endswith(".zip"):
            continue
        out.append(p)
    import site

    own = str(Path(__file__).resolve().parents[2])  # the folder holding the cadenza package
    if own not in out:
        out.append(own)
    candidates = set(site.getsitepackages())
    with contextlib.suppress(Exception):
        candidates.add(site.getusersitepackages())
    return out, [p for p in out if p in candidates]


# The child's bootstrap: the first message carries the paths to add before Cadenza can be
# imported; `child_loop` then runs that call and every later one.
BOOT = (
    "import pickle,site,struct,sys\n"
    "n=struct.unpack('>Q',sys.stdin.buffer.read(8))[0]\n"
    "first=pickle.loads(sys.stdin.buffer.read(n))\n"
    "sys.path.extend(p for p in first[0] if p not in sys.path)\n"
    "for d in first[1]: site.addsitedir(d)\n"
    "from cadenza.executors.envs import child_loop\n"
    "child_loop(int(sys.argv[1]),int(sys.argv[2]),first)\n"
)


def _child_environ(env: Env, driver: Mapping[str, str]) -> dict[str, str]:
    """An env worker's environment variables for the driver's `driver`: the env's packages
    come first (no PYTHONPATH, PYTHONHOME), its bin first on PATH."""
    child = {k: v for k, v in driver.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    child["VIRTUAL_ENV"] = str(env.path)
    child["PATH"] = os.pathsep.join(p for p in (str(env.path / "bin"), child.get("PATH")) if p)
    return child


class _EnvWorker:
    """A persistent child process on one env's interpreter: runs calls one at a time, kept
    idle between them (per env key) so that the interpreter start and Cadenza's import
    (~250 ms on the bench VM) are paid once per worker, not once per call."""

    def __init__(self, env: Env, driver_env: tuple[dict[str, str], str | None]) -> None:
        self.env = env
        self.out_path = env.path / ".children" / f"{os.getpid()}-{secrets.token_hex(4)}.out"
        self.out_path.parent.mkdir(exist_ok=True)
        # the driver's variables and working directory the worker has last been given
        self.driver_env = driver_env
        result_r, result_w = os.pipe()
        life_r, self._life_w = os.pipe()  # never written: its EOF tells the child we are gone
        try:
            with open(self.out_path, "wb") as out_fh:
                self.proc = subprocess.Popen(
                    [str(env.python), "-c", BOOT, str(result_w), str(life_r)],
                    stdin=subprocess.PIPE, stdout=out_fh, stderr=subprocess.STDOUT,
                    pass_fds=(result_w, life_r), start_new_session=True,
                    env=_child_environ(env, self.driver_env[0]), cwd=self.driver_env[1])
        except BaseException:
            for fd in (result_r, self._life_w):
                os.close(fd)
            raise
        finally:
            os.close(result_w)
            os.close(life_r)
        self._result = os.fdopen(result_r, "rb")
        self.name = f"pid:{self.proc.pid}@{platform.node()} env:{env.key}"
        self.idle_since = time.monotonic()

    def catch_up(self, now: tuple[dict[str, str], str | None]
                 ) -> tuple[dict[str, str], list[str], str | None] | None:
        """What the driver's environment variables and working directory changed by since the
        worker was last given them, to `now` (None: nothing), sent with the next call: a kept
        worker's task sees them as they are now, as on inline and threads."""
        from cadenza.executors.environ import environment_change

        if now == self.driver_env:
            return None
        changed, removed = environment_change(_child_environ(self.env, self.driver_env[0]),
                                              _child_environ(self.env, now[0]))
        self.driver_env = now
        return changed, removed, now[1]

    def call(self, payload: bytes, on_start: Callable[[], None] | None = None) -> bytes | None:
        """Send one call, wait for its reply; None when the worker died first. `on_start`
        runs when the child says the task's function is about to run (an empty frame):
        a new worker's interpreter start and imports come before it."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(struct.pack(">Q", len(payload)) + payload)
            self.proc.stdin.flush()
        except OSError:
            return None  # it died: its exit says why
        while True:
            header = self._result.read(8)
            if len(header) < 8:
                return None
            (size,) = struct.unpack(">Q", header)
            if size:
                break
            if on_start is not None:
                on_start()
        data = self._result.read(size)
        return data if len(data) == size else None

    def discard(self) -> str:
        """Kill it and what its task started; return the tail of its stdout/stderr."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for closing in (self._result.close, lambda: os.close(self._life_w)):
            with contextlib.suppress(OSError):
                closing()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        tail = _tail(self.out_path)
        with contextlib.suppress(OSError):
            self.out_path.unlink()
        return tail


# env folder and build (`Env.slot`) -> idle workers, the warmest last. By folder, not key: one
# key under two homes (two test stores, two projects in one process) is two environments.
_idle: dict[str, list[_EnvWorker]] = {}
BOOT_GRACE_S = 60.0  # a new worker's interpreter start + imports, not counted in a timeout
MAX_IDLE_PER_ENV = 4  # more idle workers of one env than this are stopped, not kept
IDLE_TIMEOUT_S = 300.0  # an idle worker older than this is stopped at the next take/give


def _expired_locked(now: float) -> list[_EnvWorker]:
    """Take out the workers idle for longer than IDLE_TIMEOUT_S (swept at every take and give
    back, so a long-lived process that stopped using an env does not keep its workers)."""
    gone: list[_EnvWorker] = []
    for path, stack in list(_idle.items()):
        keep = [w for w in stack if now - w.idle_since <= IDLE_TIMEOUT_S]
        gone.extend(w for w in stack if now - w.idle_since > IDLE_TIMEOUT_S)
        if keep:
            _idle[path] = keep
        else:
            del _idle[path]
    return gone


def _take_worker(env: Env, driver_env: tuple[dict[str, str], str | None]) -> _EnvWorker:
    while True:
        with _running_lock:
            expired = _expired_locked(time.monotonic())
            stack = _idle.get(env.slot)
            worker = stack.pop() if stack else None
        for old in expired:
            old.discard()
        if worker is None:
            return _EnvWorker(env, driver_env)
        if worker.proc.poll() is None:
            return worker
        worker.discard()  # died while idle (OOM killer, kill): start another


def _give_back(worker: _EnvWorker) -> None:
    now = time.monotonic()
    worker.idle_since = now
    with _running_lock:
        expired = _expired_locked(now)
        stack = _idle.setdefault(worker.env.slot, [])
        kept = len(stack) < MAX_IDLE_PER_ENV
        if kept:
            stack.append(worker)
    for old in expired if kept else [*expired, worker]:
        old.discard()


def stop_idle_workers() -> None:
    """Stop the idle env workers of this process (an executor shutting down)."""
    with _running_lock:
        workers = [w for stack in _idle.values() for w in stack]
        _idle.clear()
    for worker in workers:
        worker.discard()


atexit.register(stop_idle_workers)


def run_isolated(call: TaskCall) -> TaskOutcome:
    """Run `call` in its environment (built first if needed) on a worker process of that
    environment; return how the attempt ended. Blocks the calling thread; `cancel()` from any
    other thread stops it.

    How it can end:
      1. the env cannot be built -> failed, uv's message and the fix (no traceback);
      2. the worker returns an outcome (success, or whatever the task raised); the worker
         goes back to the env's idle workers;
      3. the timeout passes -> the worker is killed, kind="timeout";
      4. cancel() -> the build is abandoned or the worker killed, kind="cancelled";
      5. the worker dies without an outcome -> kind="worker_lost" (retried per policy).
    """
    key = (call.run_id, call.task_id, call.map_index)
    child = _Child(call)
    with _running_lock:
        _running[key] = child
    try:
        return _run(call, child)
    finally:
        with _running_lock:
            if _running.get(key) is child:
                del _running[key]


def _run(call: TaskCall, child: _Child) -> TaskOutcome:
    from cadenza.executors.processes.wire import (
        Unpicklable,
        decode_outcome,
        pickle_call,
        pickle_fn,
    )

    logfile = _AttemptLog(call)
    began = datetime.now(UTC)
    try:
        env = ensure_env(call.requirements, call.python, say=logfile.say)
    except EnvBuildError as exc:
        logfile.say(f"its environment could not be built: {exc.message}")
        return _logged(_outcome(call, _build_failed(call, exc), began), logfile)
    env_metrics = (("env", env.key, "env"), ("env.python", env.python_version, "env"),
                   ("env.lock", env.lock, "env"))
    if not env.built:
        logfile.say(f"using environment {env.key} (python {env.python_version}), "
                    f"{_packages(env.lock)}, from the cache")
    try:
        parts = (*_parent_paths(), pickle_fn(call), pickle_call(call, call.fn_key))
    except Unpicklable as exc:
        return _with_env(_outcome(call, exc.error, began), env_metrics, logfile)
    with _running_lock:
        stopped = child.stop_reason
    if stopped is not None:
        return _with_env(_stopped(call, stopped, began, None), env_metrics, logfile)
    # Taken before the worker: nothing between taking a worker and its call may raise (the
    # worker would be neither given back nor stopped).
    from cadenza.executors.environ import driver_environment

    driver_env = driver_environment()
    try:
        worker = _take_worker(env, driver_env)
    except OSError as exc:
        error = describe_exception(WorkerLost(
            f"could not start the environment's python {env.python}: {exc}",
            pipeline=call.pipeline, task=call.label,
            hint=f"delete {env.path} so that it is built again"), kind=ErrorKind.WORKER_LOST)
        return _with_env(_outcome(call, error, began), env_metrics, logfile)
    payload = pickle.dumps((*parts, worker.catch_up(driver_env)), protocol=4)
    started = datetime.now(UTC)
    with _running_lock:
        child.proc = worker.proc
        stopped = child.stop_reason
    if stopped is not None:  # cancelled while starting
        _kill(worker.proc)
    timers: list[threading.Timer] = []

    def arm(seconds: float) -> None:
        for old in timers:
            old.cancel()
        timer = threading.Timer(seconds, cancel,
                                args=(call.run_id, call.task_id, call.map_index),
                                kwargs={"reason": "timeout"})
        timer.daemon = True
        timer.start()
        timers.append(timer)

    timeout_s = call.timeout_s if call.timeout_s is not None and call.timeout_s > 0 else None
    if timeout_s is not None:
        # The task's timeout counts from its function's start (the child's start frame); a
        # child that never gets there (a new interpreter hanging while it boots) is still
        # stopped, BOOT_GRACE_S later.
        arm(timeout_s + BOOT_GRACE_S)
    try:
        data = worker.call(payload, on_start=None if timeout_s is None
                           else functools.partial(arm, timeout_s))
    finally:
        for timer in timers:
            timer.cancel()
    with _running_lock:
        stopped = child.stop_reason
        child.proc = None
    if stopped is not None:
        worker.discard()
        return _with_env(_stopped(call, stopped, started, worker.name), env_metrics, logfile)
    if data is not None:
        try:
            msg = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - a garbled reply: the worker is not trusted
            log.debug("unreadable outcome from %s: %s", worker.name, exc)
        else:
            _give_back(worker)
            if msg[0] == "ok":
                return _with_env(replace(decode_outcome(msg[1]), worker=worker.name),
                                 env_metrics, logfile)
            return _with_env(_outcome(call, msg[1], started, worker.name), env_metrics,
                             logfile)
    tail = worker.discard()
    from cadenza.executors.processes.jobs import describe_exit

    what, fix = describe_exit(worker.proc.returncode)
    said = f"; its last output:\n{tail}" if tail else ""
    error = describe_exception(WorkerLost(
        f"the process running the task in environment {env.key} {what}{said}",
        pipeline=call.pipeline, task=call.label, hint=fix), kind=ErrorKind.WORKER_LOST)
    return _with_env(_outcome(call, error, started, worker.name), env_metrics, logfile)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_CHARS))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _stopped(call: TaskCall, reason: str, started: datetime | None,
             worker: str | None) -> TaskOutcome:
    if reason == "timeout":
        error = describe_exception(TaskTimeout(f"timed out after {call.timeout_s:g} s"),
                                   kind=ErrorKind.TIMEOUT)
    else:
        text = "cancelled while running" if worker else "cancelled before it started"
        if reason == "shutdown":
            text += ": the executor shut down"
        error = describe_exception(TaskCancelled(text), kind=ErrorKind.CANCELLED)
    return _outcome(call, error, started, worker)


def _logged(outcome: TaskOutcome, logfile: _AttemptLog) -> TaskOutcome:
    if logfile.written and outcome.log_path is None:
        return replace(outcome, log_path=logfile.path)
    return outcome


def _with_env(outcome: TaskOutcome, metrics: tuple[tuple[str, float | str, str], ...],
              logfile: _AttemptLog) -> TaskOutcome:
    return _logged(replace(outcome, metrics=tuple(outcome.metrics) + metrics), logfile)


# -- the child ------------------------------------------------------------------------------


def _watch_parent(life_fd: int) -> None:
    """Child watchdog: the parent holds the other end of `life_fd` and never writes it; EOF
    means it is gone: take the task and whatever it started down."""
    with contextlib.suppress(OSError):
        while os.read(life_fd, 1):
            pass
    with contextlib.suppress(OSError):
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


def child_loop(result_fd: int, life_fd: int, first: tuple[Any, ...]) -> None:
    """The worker's main, after BOOT set up sys.path: run calls until stdin closes."""
    from cadenza.executors import worker
    from cadenza.executors.environ import apply_environment
    from cadenza.executors.processes.lifeline import start_guard
    from cadenza.executors.processes.main_module import adopt_main_names
    from cadenza.executors.processes.wire import (
        CALL_FIELDS,
        PROTOCOL,
        encode_outcome,
        error_info,
        fail_message,
    )

    # A process that kills this one's group when the driver goes (the life pipe's end) or
    # this one dies, with no GIL of ours to wait for; the thread below is the last resort.
    start_guard(life_fd)
    threading.Thread(target=_watch_parent, args=(life_fd,), name="cadenza-watchdog",
                     daemon=True).start()
    ident = f"pid:{os.getpid()}@{platform.node()}"
    stdin = sys.stdin.buffer

    def send(data: bytes) -> None:
        view = memoryview(struct.pack(">Q", len(data)) + data)
        while view:
            view = view[os.write(result_fd, view):]

    message: tuple[Any, ...] | None = first
    while message is not None:
        paths, _sitedirs, fn_blob, call_blob, environment = message
        sys.path.extend(p for p in paths if p not in sys.path)  # a server may add folders
        if environment is not None:  # what the driver's changed by since this worker last ran
            apply_environment(*environment)
        try:
            fn: Any = pickle.loads(fn_blob)
            if getattr(fn, "__module__", None) == "__main__":
                adopt_main_names(fn)
            _, _, values = pickle.loads(call_blob)
            call = TaskCall(fn=fn, **dict(zip(CALL_FIELDS, values, strict=True)))
        except Exception as exc:  # noqa: BLE001 - reported as the call's outcome
            send(fail_message(error_info(
                exc, ErrorKind.SERIALIZATION,
                f"the task could not be loaded in its environment ({sys.executable}, python "
                f"{platform.python_version()}): {type(exc).__name__}: {exc}. Fix: define the "
                "task in an importable module (functions of a script travel as bytecode, "
                "which only the same Python version reads), or pin what it needs in "
                "requirements=")))
        else:
            send(b"")  # the function starts now: the parent's timeout counts from here
            outcome = worker.execute(call, enforce_timeout=False, worker=ident)
            send(pickle.dumps(("ok", encode_outcome(outcome)), protocol=PROTOCOL))
        header = stdin.read(8)
        if len(header) < 8:
            break  # the parent is done with us
        (size,) = struct.unpack(">Q", header)
        message = pickle.loads(stdin.read(size))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
