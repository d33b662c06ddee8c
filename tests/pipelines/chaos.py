"""The fault campaign's pipeline (tests/chaos/, bench/faults.py): 30 task instances with
mapped, cached, retried and branch tasks, every output a deterministic function of the seed
so a checker can tell a lost or wrong output from a right one.

Every task appends one line to the ledger file when it starts and one when its body is done
(its side effect): `RUN TASK MAP_INDEX ATTEMPT PID PHASE UNIX_TIME`, with one O_APPEND write
each, so lines from many processes never interleave. The checker compares the ledger with
the store: a task whose success was committed must have no body run after that attempt.

Every task's output is `expected(seed, task, map_index)` (2 KB: an artifact when
CADENZA_INLINE_LIMIT_BYTES is below that), and every task checks the inputs it received:
a wrong input fails the task, and so the run.

The 30 instances: source, prepare (cached), shard x8 (mapped over a literal), flaky (fails
its first attempt, retries=2), stats (cached), choose (branch) -> left_1..3 or right_1..3
(the other leg skipped), join (none_failed_min_one_success), score x8 (mapped over shard's
runtime output), combine, report.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from cadenza import get_context, pipeline, task

SHARDS = 8
LEGS = ("left", "right")
LEG_LENGTH = 3


def expected(seed: int, task_id: str, map_index: int = -1) -> bytes:
    """What task `task_id` (instance `map_index`) returns for `seed`: 2,048 bytes."""
    return hashlib.sha256(f"{seed}:{task_id}:{map_index}".encode()).digest() * 64


def chosen_leg(seed: int) -> str:
    return LEGS[seed % 2]


def _mark(ledger: str, phase: str) -> None:
    ctx = get_context()
    line = (f"{ctx.run_id} {ctx.task_id} {ctx.map_index} {ctx.attempt} {os.getpid()} "
            f"{phase} {time.time():.6f}\n")
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _work(ledger: str, work_s: float) -> None:
    _mark(ledger, "start")
    if work_s > 0:
        time.sleep(work_s)  # the task's work: a window for faults to land in


def _done(ledger: str, seed: int, value_of: str | None = None, map_index: int = -1) -> bytes:
    ctx = get_context()
    _mark(ledger, "end")
    return expected(seed, value_of or ctx.task_id, map_index)


def _check(value: bytes, seed: int, task_id: str, map_index: int = -1) -> None:
    if value != expected(seed, task_id, map_index):
        raise ValueError(f"input from {task_id}[{map_index}] is not what it returned")


@task
def source(seed: int, ledger: str, work_s: float) -> bytes:
    _work(ledger, work_s)
    return _done(ledger, seed)


@task(cache=True)
def prepare(group: int, ledger: str, work_s: float) -> bytes:
    """Cached: its value depends on the cache group only (served to later runs)."""
    _work(ledger, work_s)
    return _done(ledger, group)


@task
def shard(src: bytes, i: int, seed: int, ledger: str, work_s: float) -> bytes:
    _check(src, seed, "source")
    _work(ledger, work_s)
    return _done(ledger, seed, "shard", i)


@task(retries=2, retry_delay=0)
def flaky(prep: bytes, group: int, seed: int, ledger: str, work_s: float) -> bytes:
    _check(prep, group, "prepare")
    _work(ledger, work_s)
    if get_context().attempt == 1:
        _mark(ledger, "raise")
        raise ConnectionError("the first attempt always fails (a retried task)")
    return _done(ledger, seed)


@task(cache=True)
def stats(prep: bytes, group: int, ledger: str, work_s: float) -> bytes:
    """Cached: its value depends on the cache group only (served to later runs)."""
    _check(prep, group, "prepare")
    _work(ledger, work_s)
    return _done(ledger, group)


@task.branch
def choose(seed: int, ledger: str) -> str:
    _work(ledger, 0)
    _mark(ledger, "end")
    return "left_1" if seed % 2 == 0 else "right_1"


@task
def leg(prev: bytes | None, seed: int, ledger: str, work_s: float) -> bytes:
    ctx = get_context()
    side, _, n = ctx.task_id.partition("_")
    if int(n) > 1:
        assert prev is not None
        _check(prev, seed, f"{side}_{int(n) - 1}")
    _work(ledger, work_s)
    return _done(ledger, seed)


@task(trigger_rule="none_failed_min_one_success")
def join(seed: int, ledger: str) -> bytes:
    _work(ledger, 0)
    return _done(ledger, seed)


@task
def score(part: bytes, seed: int, ledger: str, work_s: float) -> bytes:
    i = get_context().map_index
    _check(part, seed, "shard", i)
    _work(ledger, work_s)
    return _done(ledger, seed, "score", i)


@task
def combine(scores: list[bytes], checked: bytes, joined: bytes, seed: int, ledger: str) -> bytes:
    for i, s in enumerate(scores):
        _check(s, seed, "score", i)
    _check(checked, seed, "flaky")
    _check(joined, seed, "join")
    _work(ledger, 0)
    return _done(ledger, seed)


@task
def report(combined: bytes, stat: bytes, group: int, seed: int, ledger: str) -> bytes:
    _check(combined, seed, "combine")
    _check(stat, group, "stats")
    _work(ledger, 0)
    return _done(ledger, seed)


def wire(seed: Any, ledger: Any, work_s: Any, cache_group: Any) -> None:
    """The 30 task instances, wired inside a pipeline body (chaos, and chaos_events's)."""
    src = source(seed, ledger, work_s)
    prep = prepare(cache_group, ledger, work_s)
    parts = shard.partial(src=src, seed=seed, ledger=ledger, work_s=work_s).expand(
        i=list(range(SHARDS)))
    checked = flaky(prep, cache_group, seed, ledger, work_s)
    stat = stats(prep, cache_group, ledger, work_s)
    pick = choose(seed, ledger)
    tails = []
    for side in LEGS:
        prev = None
        first = None
        for n in range(1, LEG_LENGTH + 1):
            node = leg.with_options(name=f"{side}_{n}")(prev, seed, ledger, work_s)
            if first is None:
                first = node
            prev = node
        pick >> first
        tails.append(prev)
    joined = join(seed, ledger)
    tails >> joined
    scores = score.partial(seed=seed, ledger=ledger, work_s=work_s).expand(part=parts)
    combined = combine(scores, checked, joined, seed, ledger)
    report(combined, stat, cache_group, seed, ledger)


@pipeline
def chaos(seed: int, ledger: str, work_s: float = 0.05, cache_group: int = 0):
    wire(seed, ledger, work_s, cache_group)
