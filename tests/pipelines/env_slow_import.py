"""A task in a uv environment whose module is slow to import (tests/integration/test_envs.py):
the environment's worker imports this module to load the function, before the task starts.
The sleep happens only when CADENZA_TEST_SLOW_IMPORT_S is set (the test sets it)."""

from __future__ import annotations

import os
import time

from cadenza import pipeline, task

time.sleep(float(os.environ.get("CADENZA_TEST_SLOW_IMPORT_S", "0")))


@task(requirements=["six==1.16.0"], timeout=1.0)
def quick_after_a_slow_import() -> str:
    return "ran"


@pipeline
def env_slow_import() -> None:
    quick_after_a_slow_import()
