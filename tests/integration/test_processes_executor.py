"""The processes executor with real worker processes: shipping functions, reuse, parallelism,
and every way a call can end (returned, raised, killed, timed out, cancelled, unpicklable).

Calls are built directly (no engine). Synchronisation is by queues and deadline waits on
conditions; the only sleeps are inside tasks, standing for work.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cadenza.core.errors import ConfigError
from cadenza.executors import base
from cadenza.executors.base import TaskCall, TaskOutcome
from cadenza.executors.processes import ProcessExecutor
from cadenza.executors.processes import pool as processes_pool
from tests.fixtures.waiting import wait_for

DEADLINE_S = 30.0


# --- tasks (module level: shipped by reference) ---------------------------------------------


def add(a: int, b: int) -> int:
    return a + b


def whoami() -> int:
    return os.getpid()


def boom() -> None:
    raise RuntimeError("boom")


def exit_hard(code: int) -> None:
    os._exit(code)


def call_sys_exit() -> None:
    sys.exit(4)


def meet(mine: str, other: str) -> int:
    """Say "I'm running", then wait until the other call says so too: returns only if both
    ran at the same time (fails after the deadline otherwise)."""
    _announce(mine, str(os.getpid()))
    deadline = time.monotonic() + DEADLINE_S
    while not os.path.exists(other):
        if time.monotonic() > deadline:
            raise AssertionError("the other call never ran at the same time")
        time.sleep(0.01)
    return os.getpid()


def _announce(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)  # the test never reads a half-written file


def block_after_start(started: str) -> None:
    """Say "I'm running" (with the worker pid), then stay busy."""
    _announce(started, str(os.getpid()))
    time.sleep(120)


def sleep_then_write(started: str, seconds: float, target: str) -> None:
    _announce(started, str(os.getpid()))
    time.sleep(seconds)
    Path(target).write_text("the task was not stopped")


def hold_until_released(started: str, release: str) -> None:
    """Say "I'm running", then hold the worker until `release` exists (fails after the
    deadline)."""
    _announce(started, str(os.getpid()))
    deadline = time.monotonic() + DEADLINE_S
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise AssertionError("the test never released the task")
        time.sleep(0.01)


def spawn_grandchild_then_block(started: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    _announce(started, f"{os.getpid()} {child.pid}")
    time.sleep(120)


# Counts, in the worker, how often a function was unpickled there.
_LOADS = 0


def _note_load() -> _LoadMarker:
    global _LOADS
    _LOADS += 1
    return _LoadMarker()


class _LoadMarker:
    def __reduce__(self) -> tuple[Callable[[], _LoadMarker], tuple[()]]:
        return (_note_load, ())


def loads_seen() -> int:
    return _LOADS


def make_counting_fn() -> Callable[[], list[int]]:
    marker = _LoadMarker()

    def counting() -> list[int]:
        assert marker is not None
        return [os.getpid(), loads_seen()]

    return counting


# --- helpers ---------------------------------------------------------------------------------


class Outcomes:
    """A sink that records outcomes and the thread that delivered them."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[TaskOutcome] = queue.SimpleQueue()
        self.threads: list[str] = []

    def __call__(self, outcome: TaskOutcome) -> None:
        self.threads.append(threading.current_thread().name)
        self.queue.put(outcome)

    def get(self, timeout_s: float = DEADLINE_S) -> TaskOutcome:
        return self.queue.get(timeout=timeout_s)

    def take(self, n: int, timeout_s: float = DEADLINE_S) -> list[TaskOutcome]:
        deadline = time.monotonic() + timeout_s
        return [self.queue.get(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def empty(self) -> bool:
        return self.queue.empty()


def read_when_written(path: Path) -> str:
    return str(wait_for(lambda: path.exists() and path.read_text()))


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "artifacts")


def make_call(
    fn: Callable[..., Any],
    root: str,
    *,
    task_id: str = "t",
    map_index: int = -1,
    fn_key: str | None = None,
    timeout_s: float | None = None,
    run_id: str = "run-1",
    **inputs: Any,
) -> TaskCall:
    return TaskCall(
        run_id=run_id,
        pipeline="p",
        task_id=task_id,
        map_index=map_index,
        attempt=1,
        fn=fn,
        fn_key=fn_key or f"{fn.__module__}:{fn.__qualname__}",
        inputs=inputs,
        call_kinds={name: "POSITIONAL_OR_KEYWORD" for name in inputs},
        timeout_s=timeout_s,
        artifact_root=root,
    )


@pytest.fixture
def ex() -> Iterator[ProcessExecutor]:
    executor = ProcessExecutor(max_workers=2)
    executor.start()
    yield executor
    executor.shutdown()


def value_of(outcome: TaskOutcome) -> Any:
    assert outcome.ok, outcome.error
    assert outcome.output is not None and outcome.output.kind == "json"
    return outcome.output.value


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- shipping functions ------------------------------------------------------------------------


def test_module_function_runs_in_a_worker_and_reports_it(ex: ProcessExecutor, root: str) -> None:
    sink = Outcomes()
    ex.submit(make_call(add, root, a=2, b=3), sink)
    out = sink.get()
    assert value_of(out) == 5
    assert out.worker is not None and out.worker.startswith("pid:") and "@" in out.worker
    pid = int(out.worker[4:].split("@")[0])
    assert pid in ex.worker_pids() and pid != os.getpid()
    assert out.started_at is not None and out.ended_at is not None
    assert out.started_at <= out.ended_at
    assert sink.threads == ["cadenza-processes-collector"]


def test_closures_local_functions_and_lambdas_travel_by_value(
    ex: ProcessExecutor, root: str
) -> None:
    offset = 100

    def local_add(x: int) -> int:
        return x + offset

    def make_multiplier(k: int) -> Callable[[int], int]:
        return lambda x: x * k

    sink = Outcomes()
    ex.submit(make_call(local_add, root, task_id="local", x=1), sink)
    ex.submit(make_call(make_multiplier(7), root, task_id="lam", x=6), sink)
    ex.submit(make_call(lambda: "hi", root, task_id="bare"), sink)
    got = {o.task_id: value_of(o) for o in sink.take(3)}
    assert got == {"local": 101, "lam": 42, "bare": "hi"}


def test_distinct_functions_sharing_a_fn_key_each_run_their_own_code(
    ex: ProcessExecutor, root: str
) -> None:
    # fn_key is "module:qualname"; two closures made by one factory share it.
    def make(k: int) -> Callable[[], int]:
        def f() -> int:
            return k

        return f

    sink = Outcomes()
    for k in range(4):
        ex.submit(make_call(make(k), root, map_index=k, fn_key="same:key"), sink)
        assert value_of(sink.get()) == k


def test_a_worker_is_reused_and_gets_each_function_once(ex: ProcessExecutor, root: str) -> None:
    fn = make_counting_fn()
    sink = Outcomes()
    results = []
    for i in range(20):
        ex.submit(make_call(fn, root, map_index=i, fn_key="counting"), sink)
        results.append(value_of(sink.get()))
    pids = {pid for pid, _ in results}
    assert len(pids) == 1  # sequential calls stay on the warm worker
    assert [loads for _, loads in results] == [1] * 20  # unpickled there exactly once
    assert ex.fn_sends == 1


def test_each_worker_loads_a_function_once_under_concurrency(
    ex: ProcessExecutor, root: str
) -> None:
    fn = make_counting_fn()
    sink = Outcomes()
    for round_ in range(5):
        # Two at a time, so both workers get work.
        for j in range(2):
            ex.submit(make_call(fn, root, map_index=2 * round_ + j, fn_key="counting"), sink)
        for out in sink.take(2):
            assert value_of(out)[1] == 1
    assert ex.fn_sends <= 2


def test_a_function_that_cannot_be_pickled_fails_with_the_fix(
    ex: ProcessExecutor, root: str
) -> None:
    lock = threading.Lock()

    def uses_lock() -> None:
        with lock:
            pass

    sink = Outcomes()
    ex.submit(make_call(uses_lock, root, task_id="locked", map_index=3), sink)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "serialization"
    assert "'locked[3]'" in out.error.message
    assert "cannot be pickled" in out.error.message
    assert "define the function at module level" in out.error.message
    assert sink.threads == ["cadenza-processes-collector"]
    ex.submit(make_call(add, root, a=1, b=1), sink)  # the pool is unharmed
    assert value_of(sink.get()) == 2


def test_inputs_that_cannot_be_pickled_fail_with_the_fix(ex: ProcessExecutor, root: str) -> None:
    sink = Outcomes()
    ex.submit(make_call(add, root, task_id="in", a=threading.Lock(), b=1), sink)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "serialization"
    assert "'in'" in out.error.message and "inputs" in out.error.message


def test_a_function_the_worker_cannot_import_fails_clearly(ex: ProcessExecutor, root: str) -> None:
    # A module that exists only in the driver: cloudpickle ships the function by reference.
    def ghost() -> int:
        return 1

    phantom = types.ModuleType("cadenza_phantom_module")
    ghost.__module__, ghost.__qualname__ = phantom.__name__, "ghost"
    phantom.ghost = ghost  # type: ignore[attr-defined]
    sys.modules[phantom.__name__] = phantom
    try:
        sink = Outcomes()
        ex.submit(make_call(phantom.ghost, root, task_id="ghost"), sink)
        out = sink.get()
    finally:
        del sys.modules[phantom.__name__]
    assert not out.ok and out.error is not None
    assert out.error.kind == "serialization"
    assert "could not be loaded in the worker" in out.error.message
    assert "cadenza_phantom_module" in out.error.message


def test_a_task_exception_is_the_outcome_and_the_worker_lives_on(
    ex: ProcessExecutor, root: str
) -> None:
    sink = Outcomes()
    ex.submit(make_call(boom, root), sink)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "exception"
    assert out.error.type == "builtins.RuntimeError"
    pids = ex.worker_pids()
    ex.submit(make_call(whoami, root), sink)
    assert value_of(sink.get()) in pids


def test_sys_exit_in_a_task_fails_the_call_not_the_worker(ex: ProcessExecutor, root: str) -> None:
    sink = Outcomes()
    ex.submit(make_call(call_sys_exit, root, task_id="quitter"), sink)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert "SystemExit" in out.error.message and "'quitter'" in out.error.message
    ex.submit(make_call(add, root, a=1, b=2), sink)
    assert value_of(sink.get()) == 3


# --- parallelism, backlog, volume -----------------------------------------------------------


def test_two_calls_run_at_the_same_time(ex: ProcessExecutor, root: str, tmp_path: Path) -> None:
    # Each call waits for the other to have started: both succeed only if they overlapped.
    a_in, b_in = str(tmp_path / "a"), str(tmp_path / "b")
    sink = Outcomes()
    ex.submit(make_call(meet, root, map_index=0, mine=a_in, other=b_in), sink)
    ex.submit(make_call(meet, root, map_index=1, mine=b_in, other=a_in), sink)
    a, b = sink.take(2)
    assert a.ok and b.ok, (a.error, b.error)
    assert a.worker != b.worker


# --- leader/follower: a driver's Outcomes reads its outcomes itself ------------------------


def write_then_return(done: str, value: int) -> int:
    _announce(done, str(os.getpid()))
    return value


def test_a_driver_waiting_on_its_outcomes_reads_its_outcome_itself(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    """A sink that is an Outcomes' put: nobody reads the outcome off the worker's pipe until
    the driver waits on its Outcomes (the collector thread stays parked), then the waiting
    thread reads and delivers it itself."""
    outcomes = base.Outcomes()
    done = tmp_path / "done"
    ex.submit(make_call(write_then_return, root, done=str(done), value=7), outcomes.put)
    read_when_written(done)
    worker = next(w for w in ex._workers if w.job is not None)
    wait_for(lambda: worker.conn.poll(0), what="the outcome to be on the pipe")
    assert outcomes.empty() and worker.job is not None  # not read by anyone
    out = outcomes.get(timeout=DEADLINE_S)
    assert out is not None and value_of(out) == 7
    assert worker.job is None and outcomes.empty()


class InterruptedMidFrame:
    """A worker's pipe whose next read is interrupted (as by Ctrl-C) after the frame's
    length was read and before its body: the pipe is left inside the frame."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.interrupted = False

    def recv_bytes(self) -> bytes:
        if not self.interrupted:
            self.interrupted = True
            self.conn._recv(4)  # multiprocessing's frame header: the body's length
            raise KeyboardInterrupt
        return bytes(self.conn.recv_bytes())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_read_interrupted_mid_frame_replaces_the_worker_and_the_pool_goes_on(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    """Ctrl-C lands in the driver's thread while it reads a worker's pipe itself (it leads
    the reads): the rest of that frame is still in the pipe. The worker is killed and its
    call reported lost; the pool's next calls run (none reads the frame's remains)."""
    outcomes = base.Outcomes()
    done = tmp_path / "done"
    ex.submit(make_call(write_then_return, root, done=str(done), value=7), outcomes.put)
    pid = int(read_when_written(done))
    worker = next(w for w in ex._workers if w.job is not None)
    wait_for(lambda: worker.conn.poll(0), what="the outcome to be on the pipe")
    worker.conn = InterruptedMidFrame(worker.conn)  # type: ignore[assignment]

    with pytest.raises(KeyboardInterrupt):
        outcomes.get(timeout=DEADLINE_S)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(outcomes.get(timeout=DEADLINE_S)),
                              daemon=True)
    reader.start()
    reader.join(DEADLINE_S)  # without the kill, the next read blocks on the frame's remains

    assert got and got[0] is not None and got[0].error is not None, got
    assert got[0].error.kind == "worker_lost"
    wait_for(lambda: is_gone(pid), what="the interrupted worker to be killed")
    for i in range(4):  # on the other worker and on the one that replaced it
        ex.submit(make_call(add, root, task_id="after", map_index=i, a=i, b=1), outcomes.put)
    values = sorted(value_of(o) for o in (outcomes.get(timeout=DEADLINE_S) for _ in range(4))
                    if o is not None)
    assert values == [1, 2, 3, 4]


class SecondReadInterrupted:
    """Two workers' pipes: whichever is read second in the leader's batch is interrupted
    after its frame's length (as InterruptedMidFrame); the first is read whole."""

    def __init__(self) -> None:
        self.reads = 0

    def wrap(self, conn: Any) -> Any:
        shared = self

        class Pipe(InterruptedMidFrame):
            def recv_bytes(self) -> bytes:
                shared.reads += 1
                self.interrupted = shared.reads != 2
                return super().recv_bytes()

        return Pipe(conn)


def test_outcomes_read_before_an_interrupt_in_the_same_batch_are_still_delivered(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    outcomes = base.Outcomes()
    for i in range(2):
        ex.submit(make_call(write_then_return, root, map_index=i, done=str(tmp_path / f"d{i}"),
                            value=i), outcomes.put)
    for i in range(2):
        read_when_written(tmp_path / f"d{i}")
    workers = [w for w in ex._workers if w.job is not None]
    assert len(workers) == 2
    for w in workers:
        wait_for(lambda w=w: w.conn.poll(0), what="both outcomes to be on their pipes")
    second = SecondReadInterrupted()
    for w in workers:
        w.conn = second.wrap(w.conn)  # type: ignore[assignment]

    with pytest.raises(KeyboardInterrupt):
        outcomes.get(timeout=DEADLINE_S)
    got = [outcomes.get(timeout=DEADLINE_S) for _ in range(2)]

    assert second.reads == 2  # both pipes were read in the one batch
    kinds = sorted("ok" if o is not None and o.ok else (o.error.kind if o and o.error else None)
                   for o in got)
    assert kinds == ["ok", "worker_lost"], got


def test_a_put_from_another_thread_ends_a_leading_wait(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    outcomes = base.Outcomes()
    started = tmp_path / "started"
    ex.submit(make_call(block_after_start, root, task_id="long", started=str(started)),
              outcomes.put)
    read_when_written(started)
    threading.Thread(target=outcomes.put, args=(None,)).start()  # as RunDriver.cancel does
    assert outcomes.get(timeout=DEADLINE_S) is None
    ex.cancel("run-1", "long", -1)
    out = outcomes.get(timeout=DEADLINE_S)
    assert out is not None and out.error is not None and out.error.kind == "cancelled"


def test_drivers_waiting_at_once_each_get_their_outcomes(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    """Two drivers wait at the same time (one leads, the other waits on its queue and is
    served by the leader, then by the collector), with a plain sink's call beside them."""
    plain = Outcomes()
    release = tmp_path / "release"
    ex.submit(make_call(hold_until_released, root, task_id="plain",
                        started=str(tmp_path / "plain-started"), release=str(release)), plain)
    got: dict[int, list[int]] = {}

    def drive(n: int) -> None:
        outcomes = base.Outcomes()
        values = []
        for i in range(5):
            ex.submit(make_call(add, root, task_id=f"d{n}", map_index=i, a=n, b=i),
                      outcomes.put)
            out = outcomes.get(timeout=DEADLINE_S)
            assert out is not None
            values.append(value_of(out))
        got[n] = values

    threads = [threading.Thread(target=drive, args=(n,)) for n in (10, 20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * DEADLINE_S)
    release.write_text("go")
    assert got == {10: [10, 11, 12, 13, 14], 20: [20, 21, 22, 23, 24]}
    assert plain.get().ok


def test_free_slots_and_the_backlog_are_first_in_first_out(root: str, tmp_path: Path) -> None:
    ex = ProcessExecutor(max_workers=1)
    ex.start()
    try:
        assert ex.free_slots() == 1
        sink = Outcomes()
        started, release = tmp_path / "started", tmp_path / "release"
        ex.submit(
            make_call(
                hold_until_released,
                root,
                map_index=0,
                started=str(started),
                release=str(release),
            ),
            sink,
        )
        assert ex.free_slots() == 0
        for i in range(1, 6):
            ex.submit(make_call(add, root, map_index=i, a=i, b=0), sink)
        assert ex.free_slots() == 0
        read_when_written(started)
        assert sink.empty()  # the backlog waits behind the held call
        release.write_text("go")
        outs = sink.take(6)
        assert [o.map_index for o in outs] == list(range(6))
        assert all(o.ok for o in outs)
        assert ex.free_slots() == 1
    finally:
        ex.shutdown()


def test_thousands_of_tiny_calls_each_return_exactly_once(root: str) -> None:
    ex = ProcessExecutor(max_workers=2)
    n = 2000
    sink = Outcomes()
    try:
        for i in range(n):  # far more than free_slots(): most wait in the backlog
            ex.submit(make_call(add, root, map_index=i, a=i, b=1), sink)
        outs = sink.take(n, timeout_s=120)
    finally:
        ex.shutdown()  # joins the collector: any duplicate would have been delivered
    assert sink.empty()
    assert sorted(o.map_index for o in outs) == list(range(n))
    assert all(value_of(o) == o.map_index + 1 for o in outs)


# --- faults -----------------------------------------------------------------------------------


def test_sigkill_of_a_busy_worker_is_reported_and_the_worker_replaced(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    sink = Outcomes()
    started = tmp_path / "started"
    ex.submit(
        make_call(block_after_start, root, task_id="victim", map_index=2, started=str(started)),
        sink,
    )
    pid = int(read_when_written(started))
    os.kill(pid, signal.SIGKILL)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "worker_lost"
    assert out.error.type == "cadenza.core.errors.WorkerLost"
    assert "'victim[2]'" in out.error.message
    assert str(pid) in out.error.message
    assert "SIGKILL" in out.error.message
    assert out.worker == f"pid:{pid}@{os.uname().nodename}"
    pids = ex.worker_pids()
    assert len(pids) == 2 and pid not in pids  # replaced before the outcome was delivered
    ex.submit(make_call(add, root, a=20, b=22), sink)
    assert value_of(sink.get()) == 42


def test_os_exit_in_a_task_is_a_lost_worker_with_its_exit_code(
    ex: ProcessExecutor, root: str
) -> None:
    sink = Outcomes()
    ex.submit(make_call(exit_hard, root, task_id="leaver", code=3), sink)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "worker_lost"
    assert "'leaver'" in out.error.message and "exited with code 3" in out.error.message
    assert len(ex.worker_pids()) == 2
    ex.submit(make_call(add, root, a=1, b=1), sink)
    assert value_of(sink.get()) == 2


def test_a_timed_out_task_is_killed_before_it_can_finish(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    sink = Outcomes()
    started, target = tmp_path / "started", tmp_path / "written"
    ex.submit(
        make_call(
            sleep_then_write,
            root,
            task_id="slow",
            timeout_s=0.5,
            started=str(started),
            seconds=3.0,
            target=str(target),
        ),
        sink,
    )
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "timeout"
    assert out.error.type == "cadenza.core.errors.TaskTimeout"
    assert out.error.message == "timed out after 0.5 s"
    assert out.worker is not None
    pid = int(out.worker[4:].split("@")[0])
    # The outcome is sent only once the worker is dead, so the file can never appear.
    assert is_gone(pid)
    assert not target.exists()
    assert pid not in ex.worker_pids() and len(ex.worker_pids()) == 2
    ex.submit(make_call(add, root, a=2, b=2), sink)
    assert value_of(sink.get()) == 4


def test_a_timeout_also_stops_processes_the_task_started(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    sink = Outcomes()
    started = tmp_path / "started"
    ex.submit(
        make_call(spawn_grandchild_then_block, root, timeout_s=3.0, started=str(started)), sink
    )
    worker_pid, grandchild_pid = map(int, read_when_written(started).split())
    out = sink.get()
    assert out.error is not None and out.error.kind == "timeout"
    assert is_gone(worker_pid)
    wait_for(lambda: is_gone(grandchild_pid))


SLOW_IMPORT_MODULE = """\
import os
import time

# Slow to import in a worker only: the driver imports it at full speed to submit the call.
if os.getpid() != {driver_pid}:
    time.sleep({seconds})


def quick() -> str:
    return "ran"
"""


def slow_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                seconds: float) -> Callable[[], str]:
    """A task function whose module takes `seconds` to import in a worker process (the
    worker imports it to load the function, before the call starts)."""
    (tmp_path / f"{name}.py").write_text(
        SLOW_IMPORT_MODULE.format(driver_pid=os.getpid(), seconds=seconds)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = __import__(name)
    monkeypatch.setitem(sys.modules, name, module)
    fn: Callable[[], str] = module.quick
    return fn


def test_a_timeout_counts_from_the_task_start_not_the_worker_boot_or_import(
    ex: ProcessExecutor, root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new worker's boot and the import of the task's module (2 s here) come before the
    function starts; its 1 s timeout counts from that start only."""
    quick = slow_import(tmp_path, monkeypatch, "cadenza_slow_import_2s", 2.0)
    sink = Outcomes()
    ex.submit(make_call(quick, root, task_id="quick", timeout_s=1.0), sink)
    assert value_of(sink.get()) == "ran"


def test_a_worker_that_never_starts_the_function_is_stopped_after_the_boot_grace(
    ex: ProcessExecutor, root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import of the task's module that hangs is not the task's time, but it does not hold
    the worker for ever: the call times out its boot grace after its timeout."""
    monkeypatch.setattr(processes_pool, "BOOT_GRACE_S", 0.5)
    hangs = slow_import(tmp_path, monkeypatch, "cadenza_slow_import_hangs", 120.0)
    sink = Outcomes()
    ex.submit(make_call(hangs, root, task_id="hangs", timeout_s=0.5), sink)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "timeout" and out.error.message == "timed out after 0.5 s"
    assert out.worker is not None
    wait_for(lambda: len(ex.worker_pids()) == 2)
    ex.submit(make_call(add, root, a=2, b=2), sink)
    assert value_of(sink.get()) == 4


def test_cancel_kills_a_running_call(ex: ProcessExecutor, root: str, tmp_path: Path) -> None:
    sink = Outcomes()
    started = tmp_path / "started"
    ex.submit(
        make_call(block_after_start, root, task_id="long", map_index=0, started=str(started)), sink
    )
    pid = int(read_when_written(started))
    ex.cancel("run-1", "long", 1)  # another instance: nothing happens
    ex.cancel("run-1", "long", 0)
    out = sink.get()
    assert not out.ok and out.error is not None
    assert out.error.kind == "cancelled"
    assert out.error.type == "cadenza.core.errors.TaskCancelled"
    assert is_gone(pid)
    assert len(ex.worker_pids()) == 2 and pid not in ex.worker_pids()
    assert sink.empty()


def test_cancel_drops_a_queued_call_without_touching_running_ones(
    ex: ProcessExecutor, root: str, tmp_path: Path
) -> None:
    sink = Outcomes()
    for i in range(2):
        ex.submit(
            make_call(
                block_after_start,
                root,
                task_id="busy",
                map_index=i,
                started=str(tmp_path / f"started-{i}"),
            ),
            sink,
        )
    ex.submit(make_call(add, root, task_id="queued", a=1, b=1), sink)
    assert ex.free_slots() == 0
    busy = [int(read_when_written(tmp_path / f"started-{i}")) for i in range(2)]
    ex.cancel("run-1", "queued", -1)
    out = sink.get()
    assert out.task_id == "queued" and out.error is not None
    assert out.error.kind == "cancelled" and "before it started" in out.error.message
    assert sorted(ex.worker_pids()) == sorted(busy)  # no worker was harmed
    for i in range(2):
        ex.cancel("run-1", "busy", i)
    assert sorted(o.map_index for o in sink.take(2)) == [0, 1]


def test_workers_that_die_at_start_do_not_respawn_forever(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "cadenza.executors.processes.pool.EXECUTE_TARGET", "cadenza_no_such_module:execute"
    )
    ex = ProcessExecutor(max_workers=1)
    sink = Outcomes()
    try:
        ex.submit(make_call(add, root, a=1, b=1), sink)
        out = sink.get()
        assert out.error is not None and out.error.kind == "worker_lost"
        assert "while starting" in out.error.message
        assert "import cadenza.executors.worker" in out.error.message  # the hint
        wait_for(lambda: not ex.worker_pids())  # it gave up instead of spinning
        assert ex.workers_started == 3
        assert ex.free_slots() == 1  # the engine keeps submitting, and hears back at once:
        ex.submit(make_call(add, root, a=1, b=1), sink)
        again = sink.get()
        assert again.error is not None and again.error.kind == "worker_lost"
        assert "no worker process" in again.error.message
        assert ex.workers_started == 3  # no fork storm
    finally:
        ex.shutdown()


# --- lifecycle ----------------------------------------------------------------------------------


def _helper_pids() -> set[int]:
    """multiprocessing's own long-lived helpers (forkserver, resource tracker)."""
    from multiprocessing import forkserver, resource_tracker

    pids = {forkserver._forkserver._forkserver_pid, resource_tracker._resource_tracker._pid}
    return {p for p in pids if p is not None}


def test_shutdown_stops_every_worker_and_cancels_what_was_running(
    root: str, tmp_path: Path
) -> None:
    ex = ProcessExecutor(max_workers=2)
    sink = Outcomes()
    started = tmp_path / "started"
    ex.submit(
        make_call(spawn_grandchild_then_block, root, task_id="running", started=str(started)), sink
    )
    ex.submit(make_call(add, root, task_id="quick", a=1, b=1), sink)
    assert value_of(sink.get()) == 2
    ex.submit(
        make_call(block_after_start, root, task_id="other", started=str(tmp_path / "other")), sink
    )
    ex.submit(make_call(add, root, task_id="queued", a=1, b=1), sink)  # backlog
    worker_pid, grandchild = map(int, read_when_written(started).split())
    workers = ex.worker_pids()
    ex.shutdown()
    outs = {o.task_id: o for o in sink.take(3)}
    assert set(outs) == {"running", "other", "queued"}
    for out in outs.values():
        assert out.error is not None and out.error.kind == "cancelled"
        assert "shut down" in out.error.message
    for pid in [*workers, worker_pid, grandchild]:
        wait_for(lambda pid=pid: is_gone(pid))
    leftovers = {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE
    } - _helper_pids()
    assert not leftovers & {*workers, worker_pid, grandchild}
    assert ex.worker_pids() == []
    ex.shutdown()  # idempotent


def test_submit_after_shutdown_starts_a_fresh_pool(root: str) -> None:
    ex = ProcessExecutor(max_workers=1)
    sink = Outcomes()
    try:
        ex.submit(make_call(whoami, root), sink)
        first = value_of(sink.get())
        ex.shutdown()
        ex.submit(make_call(whoami, root), sink)
        assert value_of(sink.get()) != first
    finally:
        ex.shutdown()


DRIVER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from cadenza.executors.base import TaskCall
    from cadenza.executors.processes import ProcessExecutor
    from tests.integration.test_processes_executor import spawn_grandchild_then_block

    if __name__ == "__main__":
        ex = ProcessExecutor(max_workers=1)
        ex.submit(TaskCall(
            run_id="r", pipeline="p", task_id="t", map_index=-1, attempt=1,
            fn=spawn_grandchild_then_block, fn_key="k", inputs={"started": sys.argv[1]},
            call_kinds={"started": "POSITIONAL_OR_KEYWORD"}, artifact_root=sys.argv[2],
        ), print)
        time.sleep(120)
    """
)


def test_workers_and_their_children_die_with_a_killed_driver(tmp_path: Path, root: str) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_SCRIPT)
    started = tmp_path / "started"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "src")])}
    driver = subprocess.Popen([sys.executable, str(script), str(started), root], env=env)
    try:
        worker_pid, grandchild = map(int, read_when_written(started).split())
        driver.kill()  # SIGKILL: no atexit, no shutdown()
        driver.wait(timeout=DEADLINE_S)
        wait_for(lambda: is_gone(worker_pid))
        wait_for(lambda: is_gone(grandchild))
    finally:
        driver.kill()
        driver.wait(timeout=DEADLINE_S)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_every_start_method_runs_calls_and_survives_a_kill(
    method: str, root: str, tmp_path: Path
) -> None:
    ex = ProcessExecutor(max_workers=1, start_method=method)
    sink = Outcomes()
    try:
        ex.submit(make_call(lambda: 7, root), sink)
        assert value_of(sink.get()) == 7
        ex.submit(
            make_call(block_after_start, root, task_id="victim", started=str(tmp_path / "s")), sink
        )
        os.kill(int(read_when_written(tmp_path / "s")), signal.SIGKILL)
        assert sink.get().error.kind == "worker_lost"  # type: ignore[union-attr]
        ex.submit(make_call(add, root, a=3, b=4), sink)
        assert value_of(sink.get()) == 7
    finally:
        ex.shutdown()


def test_start_method_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_START_METHOD", "spawn")
    assert ProcessExecutor().start_method == "spawn"
    assert ProcessExecutor(start_method="fork").start_method == "fork"
    monkeypatch.delenv("CADENZA_START_METHOD")
    assert ProcessExecutor().start_method == "forkserver"
    assert ProcessExecutor().max_workers == os.cpu_count()


def test_bad_configuration_is_refused_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="start method") as info:
        ProcessExecutor(start_method="teleport")
    assert info.value.hint and "forkserver" in info.value.hint
    monkeypatch.setenv("CADENZA_START_METHOD", "vfork")
    with pytest.raises(ConfigError, match="CADENZA_START_METHOD"):
        ProcessExecutor()
    with pytest.raises(ConfigError, match="max_workers"):
        ProcessExecutor(max_workers=0)


ORPHAN_START = """
import os
from multiprocessing import forkserver
from cadenza.executors.processes.forkserver import start_early

start_early()
# What the pool does to start a worker, cut short as by a driver killed in between: the
# forkserver forks the child, and the child's start data never comes.
status_r, data_w = forkserver._forkserver.connect_to_new_process([])
os.close(data_w)
pid = forkserver.read_signed(status_r)
print("EXIT", forkserver.read_signed(status_r), flush=True)
"""


def test_a_worker_whose_driver_died_before_starting_it_ends_without_a_traceback(
    tmp_path: Path,
) -> None:
    """The forkserver's child reads EOF where its start data should be: nothing to report
    (the campaign's scheduler kills printed multiprocessing's traceback to the log)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver start method on this platform")
    env = {k: v for k, v in os.environ.items() if k != "CADENZA_START_METHOD"}
    proc = subprocess.run([sys.executable, "-c", ORPHAN_START], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "EXIT" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr and "EOFError" not in proc.stderr, proc.stderr


def environment_seen(name: str, own: str) -> list[Any]:
    """What the worker sees; then it sets a variable of its own (as a library might)."""
    seen = [os.environ.get(name), os.getcwd(), os.getpid(), os.environ.get(own)]
    os.environ[own] = "set in the worker"
    return seen


def test_a_kept_worker_sees_the_environment_of_the_run_it_serves(
    root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable set (or removed) and a folder changed between two runs reach the tasks of
    the second run on the worker kept from the first, as they would on inline or threads
    (a notebook setting AWS_PROFILE between runs); what the worker set itself stays; before
    the next run starts, the environment is the one of the run going on."""
    name, own = "CADENZA_TEST_BETWEEN_RUNS", "CADENZA_TEST_WORKER_OWN"
    monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(own, raising=False)
    ex = ProcessExecutor(max_workers=1)
    ex.start()
    sink = Outcomes()

    def seen() -> list[Any]:
        ex.submit(make_call(environment_seen, root, name=name, own=own), sink)
        return list(value_of(sink.get()))

    try:
        ex.preflight(root, pipeline="p")
        first = seen()
        assert first[0] is None and first[3] is None
        folder = tmp_path / "elsewhere"
        folder.mkdir()
        monkeypatch.setenv(name, "second run")
        monkeypatch.chdir(folder)
        assert seen()[0] is None  # no run started since: the environment of the run going on
        ex.preflight(root, pipeline="p")
        value, cwd, pid, mine = seen()
        assert (value, cwd, mine) == ("second run", str(folder), "set in the worker")
        assert pid == first[2] and ex.workers_started == 1  # the kept worker, not a new one
        monkeypatch.delenv(name)
        ex.preflight(root, pipeline="p")
        assert seen()[0] is None
    finally:
        ex.shutdown()
