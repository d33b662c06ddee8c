"""Where each task attempt's log goes: one file per attempt, known before it starts, so the
CLI and UI can follow a running attempt (`cadenza logs RUN TASK --follow`)."""

from __future__ import annotations

import os


def attempt_log_path(logs_dir: str, run_id: str, task_id: str, map_index: int, attempt: int) -> str:
    name = task_id if map_index < 0 else f"{task_id}.{map_index}"
    return os.path.join(logs_dir, run_id, f"{name}.{attempt}.log")
