"""Build progress in the attempt's log (executors/envs.py): credentials in URLs are masked."""

from __future__ import annotations

from pathlib import Path

from cadenza.executors.base import TaskCall
from cadenza.executors.envs import _AttemptLog


def test_build_progress_masks_credentials_in_urls(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "attempt.log"
    call = TaskCall(run_id="r", pipeline="p", task_id="t", map_index=-1, attempt=1,
                    fn=print, fn_key="builtins:print", inputs={}, call_kinds={},
                    log_path=str(log_path), requirements=("pkg==1",))
    log = _AttemptLog(call)
    log.say("Resolved from https://alice:s3cret@pypi.example.org/simple/pkg/")
    text = log_path.read_text()
    assert "s3cret" not in text and "alice" not in text
    assert "https://***@pypi.example.org/simple/pkg/" in text and log.written
