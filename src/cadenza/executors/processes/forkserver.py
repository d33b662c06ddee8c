"""The forkserver our workers fork from, and starting it as early as a run allows.

Under forkserver (the default start method), the pool's first worker waits for a new
interpreter to start and import the worker's modules (`PRELOAD`): ~465 M instructions
(bench/cold_start.py, "worker preload"), the longest stretch of a one-task `python script.py`.
`start_early` starts that server when `PipelineDef.run()` is called, before the driver imports
the engine and opens the store, so those imports and the preload run at once on two cores;
the pool (`pool.py`) later finds the server running and forks its workers from it.

Imports nothing of Cadenza's (the package `__init__` is lazy too), so calling it costs the
driver only multiprocessing's own modules.
"""

from __future__ import annotations

import multiprocessing
import os

START_METHOD_ENV = "CADENZA_START_METHOD"
# Modules the forkserver imports once, so that each forked worker starts warm (~100 ms saved
# per worker start: `python -X importtime -c "import cadenza.executors.worker"`).
PRELOAD = [
    "cadenza.executors.processes.child",
    "cadenza.executors.worker",
    "cadenza.executors.processes.lifeline",  # and ctypes (~5-20 ms a worker would pay)
    "cadenza.executors.processes.orphans",  # a worker whose driver died before it started
]


def default_start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def start_early() -> None:
    """Start the forkserver, with `PRELOAD`, unless another start method is chosen
    (CADENZA_START_METHOD) or it runs already. Never raises: a server that cannot start
    here is started (and its failure reported) by the pool as before."""
    method = os.environ.get(START_METHOD_ENV) or default_start_method()
    if method != "forkserver" or method not in multiprocessing.get_all_start_methods():
        return
    try:
        from multiprocessing import forkserver

        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()
    except (OSError, ValueError) as exc:
        import logging  # not before: logging is ~20 M instructions of a cold start

        logging.getLogger("cadenza.executors.processes").debug("starting the forkserver early failed (the pool tries again): %s", exc)
