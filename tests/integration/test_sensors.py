"""Sensors (SPEC §4): FileSensor and @sensor as pipeline triggers (poked by the scheduler)
and as steps inside a pipeline (poked by the engine: no worker, no slot, one attempt);
a sensor that times out fails naming its condition."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cadenza import pipeline, task
from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.logfiles import attempt_log_path
from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from cadenza.triggers.loop import Scheduler, pause
from cadenza.triggers.sensors import FileSensor, SensorTimeout, sensor
from tests.fixtures.waiting import wait_for


@task
def count_files(files: list) -> int:
    return len(files)


@task
def noop() -> str:
    return "ok"


def pokes_logged(settings, run_id: str, task_id: str, attempt: int = 1) -> int:
    """How many "not yet" pokes the attempt's log holds (one line per poke)."""
    path = Path(attempt_log_path(str(settings.logs_dir), run_id, task_id, -1, attempt))
    return path.read_text().count(": not yet") if path.exists() else 0


def runs(settings, name: str):
    return sorted(open_store(settings.database_url).list_runs(pipeline=name, limit=100),
                  key=lambda r: r.created_at)


def test_file_sensor_trigger_makes_one_run_per_new_set_of_files(cadenza_env, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    watch = FileSensor(str(incoming / "*.csv"), poke_interval=10, name="incoming_csv")

    @pipeline(name="ingest_files", triggers=[watch])
    def ingest():
        noop()

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with use_clock(clock):
        sched = Scheduler([ingest], max_runs=0)
        assert sched.tick().created == []
        (incoming / "a.csv").write_text("x\n")
        (incoming / "ignored.txt").write_text("x\n")
        assert sched.tick().created == []  # not poked again before poke_interval
        clock.advance(10)
        assert len(sched.tick().created) == 1
        clock.advance(10)
        assert sched.tick().created == []  # same files: same key
        (incoming / "b.csv").write_text("y\n")
        clock.advance(10)
        assert len(sched.tick().created) == 1
    made = runs(cadenza_env, "ingest_files")
    assert [r.trigger for r in made] == ["sensor", "sensor"]
    values = [r.extra["trigger"]["value"] for r in made]
    assert [[Path(f["path"]).name for f in v] for v in values] == [["a.csv"], ["a.csv", "b.csv"]]


def test_custom_sensor_trigger_fires_once_per_poke_slot_across_schedulers(cadenza_env, tmp_path):
    flag = tmp_path / "flag"

    @sensor(poke_interval=60)
    def flag_is_up() -> bool:
        "the flag file exists"
        return flag.exists()

    @pipeline(name="on_flag", triggers=[flag_is_up])
    def on_flag():
        noop()

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with use_clock(clock):
        a, b = Scheduler([on_flag], max_runs=0), Scheduler([on_flag], max_runs=0)
        assert a.tick().created == [] and b.tick().created == []
        flag.write_text("up")
        clock.advance(60)
        created = a.tick().created + b.tick().created
        assert len(created) == 1
        clock.advance(60)
        assert len(a.tick().created + b.tick().created) == 1
        pause("on_flag")
        clock.advance(60)
        assert a.tick().created == []


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_file_sensor_step_is_polled_by_the_engine_as_one_attempt(cadenza_env, tmp_path, executor):
    ready = tmp_path / "ready"
    ready.mkdir()

    @pipeline(name="wait_then_count")
    def wait_then_count():
        files = FileSensor(str(ready / "*.parquet"), poke_interval=0.05, timeout=60,
                           name="ready_files")()
        count_files(files)

    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", wait_then_count.run(executor=executor)))
    t.start()
    store = open_store(cadenza_env.database_url)

    def sensor_row():
        found = store.list_runs(pipeline="wait_then_count")
        return found and store.get_task_instance(found[0].run_id, "ready_files")

    # While it waits the step is one running attempt: pokes write nothing to the store.
    waiting = wait_for(lambda: (row := sensor_row()) and row.state is TaskState.RUNNING
                       and row.reason.startswith("waiting for") and row, what="the wait")
    run_id = waiting.run_id
    attempts_then = store.get_attempts(run_id, "ready_files")
    seen = pokes_logged(cadenza_env, run_id, "ready_files")
    wait_for(lambda: pokes_logged(cadenza_env, run_id, "ready_files") >= seen + 3,
             what="three more pokes")
    assert sensor_row() == waiting and waiting.attempt == 1
    assert store.get_attempts(run_id, "ready_files") == attempts_then
    (ready / "part-0.parquet").write_bytes(b"x")
    t.join(60)
    r = result["r"]
    assert r.state is RunState.SUCCESS
    assert r.outputs["count_files"] == 1
    assert r.outputs["ready_files"][0]["path"].endswith("part-0.parquet")
    attempts = store.get_attempts(r.run_id, "ready_files")
    assert [(a.attempt, a.state) for a in attempts] == [(1, TaskState.SUCCESS)]
    assert pokes_logged(cadenza_env, r.run_id, "ready_files") >= seen + 3  # all in attempt 1


def test_a_waiting_sensor_step_takes_no_executor_slot(cadenza_env, tmp_path):
    """Every thread of the executor runs a task that waits until the sensor has seen its
    file; if the sensor needed a slot to poke, those tasks would give up and fail."""
    from cadenza.executors.base import get_executor

    slots = get_executor("threads").max_workers
    data = tmp_path / "data.csv"
    released = tmp_path / "released"

    @task
    def hold_a_slot(i: int) -> int:
        import time

        deadline = time.monotonic() + 20
        while not released.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the sensor never poked while the executor was full")
            time.sleep(0.01)
        return i

    @sensor(poke_interval=0.02, timeout=60)
    def data_arrived() -> bool:
        "data.csv exists"
        if data.exists():
            released.write_text("go")
            return True
        return False

    @pipeline(name="busy_executor")
    def busy_executor():
        slots_held = hold_a_slot.expand(i=list(range(slots)))
        data_arrived() >> noop()
        slots_held >> count_files(slots_held)

    from cadenza.engine.api import run_pipeline

    started: dict = {}
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run_pipeline(
        busy_executor, {}, executor="threads", on_start=lambda d: started.setdefault("d", d))))
    t.start()
    wait_for(lambda: "d" in started)
    store = open_store(cadenza_env.database_url)

    def all_slots_held_and_sensor_waiting() -> bool:
        rows = store.get_task_instances(started["d"].run_id)
        held = [x for x in rows if x.task_id == "hold_a_slot" and x.map_index >= 0
                and x.state is TaskState.RUNNING]
        sensor = [x for x in rows if x.task_id == "data_arrived" and x.state is TaskState.RUNNING
                  and x.reason.startswith("waiting for")]
        return len(held) == slots and len(sensor) == 1

    wait_for(all_slots_held_and_sensor_waiting, what="every slot held while the sensor waits")
    data.write_text("a,b\n")
    t.join(60)
    r = result["r"]
    assert r.state is RunState.SUCCESS, r
    assert r.outputs["hold_a_slot"] == list(range(slots))
    assert r.task_states["data_arrived"] is TaskState.SUCCESS


def test_a_sensor_step_that_times_out_fails_naming_its_condition(cadenza_env, tmp_path):
    @sensor(poke_interval=0.05, timeout=0.2)
    def model_published() -> bool:
        "the model file is in the registry"
        return (tmp_path / "model.bin").exists()

    @pipeline(name="wait_for_model")
    def wait_for_model():
        model_published() >> noop()

    r = wait_for_model.run(executor="threads")
    assert r.state is RunState.FAILED
    err = r.failed["model_published"]
    assert err.type.endswith("SensorTimeout")
    assert "sensor 'model_published' timed out after 0.2 s waiting for condition " \
           "'model_published' (the model file is in the registry)" in err.message
    assert r.task_states["noop"] is TaskState.UPSTREAM_FAILED
    attempts = open_store(cadenza_env.database_url).get_attempts(r.run_id, "model_published")
    assert [(a.attempt, a.state) for a in attempts] == [(1, TaskState.FAILED)]
    assert pokes_logged(cadenza_env, r.run_id, "model_published") >= 1  # waited, then timed out


def test_a_sensor_step_whose_poke_raises_fails_like_a_task(cadenza_env):
    @sensor(poke_interval=0.05, timeout=10)
    def broken() -> bool:
        raise ConnectionError("warehouse unreachable")

    @pipeline(name="broken_sensor")
    def broken_sensor():
        broken()

    r = broken_sensor.run(executor="threads")
    assert r.state is RunState.FAILED
    assert "warehouse unreachable" in r.failed["broken"].message


def test_sensor_timeout_names_the_file_pattern():
    err = FileSensor("data/incoming/*.csv", timeout=60, name="incoming").timeout_error()
    assert isinstance(err, SensorTimeout)
    assert "sensor 'incoming' timed out after 60 s waiting for a file matching " \
           "'data/incoming/*.csv'" in str(err)


def test_cancelling_a_run_stops_a_waiting_sensor_step(cadenza_env, tmp_path):
    from cadenza.engine.api import run_pipeline

    @sensor(poke_interval=0.02, timeout=60)
    def never() -> bool:
        "a file that never comes"
        return (tmp_path / "never").exists()

    @pipeline(name="cancel_sensor")
    def cancel_sensor():
        never() >> noop()

    started: dict = {}
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run_pipeline(
        cancel_sensor, {}, executor="threads", on_start=lambda d: started.setdefault("d", d))))
    t.start()
    wait_for(lambda: "d" in started)
    store = open_store(cadenza_env.database_url)
    wait_for(lambda: (row := store.get_task_instance(started["d"].run_id, "never"))
             and row.state is TaskState.RUNNING and row.reason.startswith("waiting for"))
    started["d"].cancel()
    t.join(30)
    r = result["r"]
    assert r.state is RunState.CANCELLED
    assert r.task_states["never"] is TaskState.CANCELLED
    attempts = store.get_attempts(r.run_id, "never")
    assert [(a.attempt, a.state) for a in attempts] == [(1, TaskState.CANCELLED)]


def test_a_poke_stuck_in_a_blocking_call_still_times_out_on_time(cadenza_env):
    """The run ends at the sensor's timeout while its poke is still blocked: the poke
    returns only once the test releases it, after the run has ended."""
    release, returned = threading.Event(), threading.Event()

    @sensor(poke_interval=0.05, timeout=0.5)
    def slow_service() -> bool:
        "the slow service answers"
        release.wait(120)  # a C call: no interrupt reaches it before it returns
        returned.set()
        return True

    @pipeline(name="stuck_poke")
    def stuck_poke():
        slow_service()

    try:
        r = stuck_poke.run(executor="threads")
        poke_had_returned = returned.is_set()
    finally:
        release.set()
    assert r.state is RunState.FAILED
    assert "sensor 'slow_service' timed out after 0.5 s waiting for condition " \
           "'slow_service'" in r.failed["slow_service"].message
    assert not poke_had_returned, "the run waited for a poke past the sensor's timeout"


def test_cancelling_a_run_on_processes_does_not_wait_for_a_blocked_poke(cadenza_env, tmp_path):
    """The run is cancelled while its poke (in a worker process) is still blocked: the poke
    could return only once the test releases it, after the run has ended."""
    from cadenza.engine.api import run_pipeline

    poking, release, returned = tmp_path / "poking", tmp_path / "release", tmp_path / "returned"

    @sensor(poke_interval=0.05, timeout=60)
    def blocked() -> bool:
        "never answers in time"
        import time

        poking.write_text("x")
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # blocked: a service that does not answer
        returned.write_text("x")
        return False

    @pipeline(name="cancel_blocked_poke")
    def cancel_blocked_poke():
        blocked()

    started: dict = {}
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run_pipeline(
        cancel_blocked_poke, {}, executor="processes",
        on_start=lambda d: started.setdefault("d", d))))
    t.start()
    try:
        wait_for(lambda: "d" in started and poking.exists(), what="the poke to block")
        started["d"].cancel()
        wait_for(lambda: "r" in result, what="the cancelled run to end")
        poke_had_returned = returned.exists()
    finally:
        release.write_text("go")
        t.join(60)
    assert result["r"].state is RunState.CANCELLED
    assert not poke_had_returned, "cancel waited for the blocked poke to return"


def test_a_waiting_sensor_logs_one_line_per_poke_not_a_traceback(cadenza_env, tmp_path):
    flag = tmp_path / "flag"

    @sensor(poke_interval=0.02, timeout=30)
    def flag_up() -> bool:
        "the flag is up"
        if (tmp_path / "pokes").exists():
            flag.write_text("up")
        (tmp_path / "pokes").write_text("x")
        return flag.exists()

    @pipeline(name="quiet_sensor")
    def quiet_sensor():
        flag_up()

    r = quiet_sensor.run(executor="threads")
    assert r.state is RunState.SUCCESS
    (attempt,) = open_store(cadenza_env.database_url).get_attempts(r.run_id, "flag_up")
    text = Path(attempt.log_path).read_text()
    assert "Traceback" not in text
    assert "condition 'flag_up' (the flag is up): not yet" in text


def test_retries_of_a_sensor_step_do_not_extend_its_wait(cadenza_env):
    """As in Airflow, `timeout` counts from the first poke of the first attempt: a poke that
    keeps raising is retried only until the wait has run out, then the step times out."""
    import time

    @sensor(poke_interval=0.02, timeout=0.5)
    def endpoint_up() -> bool:
        "the endpoint answers"
        time.sleep(0.1)
        raise ConnectionError("endpoint down")

    @pipeline(name="flaky_wait")
    def flaky_wait():
        endpoint_up.as_task().with_options(retries=50, retry_delay=0.01)()

    r = flaky_wait.run(executor="threads")
    assert r.state is RunState.FAILED
    assert r.failed["endpoint_up"].type.endswith("SensorTimeout"), r.failed["endpoint_up"]
    attempts = open_store(cadenza_env.database_url).get_attempts(r.run_id, "endpoint_up")
    assert 2 <= len(attempts) < 51  # retried, but not through all 50 retries
    assert attempts[-1].error.type.endswith("SensorTimeout")
