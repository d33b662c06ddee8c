"""Where each task attempt's log goes: one file per attempt, known before it starts, so the
CLI and UI can follow a running attempt (`cadenza logs RUN TASK --follow`)."""

from __future__ import annotations

import os


def attempt_log_path(logs_dir: str, run_id: str, task_id: str, map_index: int, attempt: int) -> str:
    name = task_id if map_index < 0 else f"{task_id}.{map_index}"
    return os.path.join(logs_dir, run_id, f"{name}.{attempt}.log")


def run_log_files(logs_dir: str, run_ids: list[str], paths: list[str]) -> set[str]:
    """The log files of these runs that exist: those their attempts recorded, and whatever
    is in each run's folder under `logs_dir`."""
    found = {p for p in paths if os.path.isfile(p)}
    for run_id in run_ids:
        folder = os.path.join(logs_dir, run_id)
        for here, _, files in os.walk(folder):
            found.update(os.path.join(here, f) for f in files)
    return found


def remove_attempt_logs(logs_dir: str, run_ids: list[str], paths: list[str]) -> int:
    """Delete deleted runs' log files (see `run_log_files`) and their folders. How many
    files were removed."""
    import shutil

    files = run_log_files(logs_dir, run_ids, paths)
    for path in files:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass  # removed meanwhile: the result is the same
    for run_id in run_ids:
        folder = os.path.join(logs_dir, run_id)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
    return len(files)
