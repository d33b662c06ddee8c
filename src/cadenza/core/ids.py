"""Identifiers: run ids and driver ids."""

from __future__ import annotations

import os
import secrets
import socket
import time


def new_run_id() -> str:
    """A 20-character id that sorts by creation time: 8 hex of seconds + 12 random hex."""
    return f"{int(time.time()):08x}{secrets.token_hex(6)}"


def new_driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def task_label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"
