"""What the ray executor tracks per actor (`Actor`) and per call (`Job`); the collector
thread of `pool.py` is the only one that reads or changes them."""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Any

from cadenza.executors.base import Sink, TaskCall
from cadenza.executors.ray.cluster import Shape

PENDING, IDLE, BUSY, DEAD = "pending", "idle", "busy", "dead"


class Actor:
    __slots__ = ("created_at", "env", "fn_keys", "handle", "jobs", "name", "node", "phase",
                 "pid", "shape", "since", "sys_path")

    def __init__(self, handle: Any, shape: Shape) -> None:
        self.handle = handle
        self.shape = shape
        self.phase = PENDING
        self.jobs: deque[Job] = deque()  # sent to it, oldest (the running one) first
        self.fn_keys: set[str] = set()
        self.sys_path: list[str] | None = None
        self.env: dict[str, str] | None = None
        self.name: str | None = None
        self.node: str | None = None
        self.pid = 0
        self.created_at = time.monotonic()
        self.since = self.created_at


class Job:
    __slots__ = ("actor", "call", "deadline", "done", "fn_blob", "payload", "ref", "seq",
                 "shape", "sink", "started_at", "wire_key")

    def __init__(self, call: TaskCall, sink: Sink, shape: Shape, payload: bytes,
                 wire_key: str, fn_blob: bytes) -> None:
        self.call = call
        self.sink = sink
        self.shape = shape
        self.payload = payload
        self.wire_key = wire_key
        self.fn_blob = fn_blob
        self.actor: Actor | None = None
        self.started_at: datetime | None = None
        self.deadline: float | None = None
        self.done = False
        self.seq = -1  # which dispatch its "done" event answers (a requeued call is sent again)
        self.ref: Any = None
