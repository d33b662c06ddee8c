"""Imported only by the forkserver (forkserver.PRELOAD): a worker whose driver died before
it could send the worker its start data ends without a traceback.

The forkserver forks a worker, and multiprocessing's code in that child then reads what the
driver sends it (the process object, its preparation data). A driver killed in between
(`kill -9`, a scheduler killed mid-run) sends nothing: the child's read ends in EOFError
inside `multiprocessing.spawn._main`, before any code of ours runs, and the forkserver hands
it to `sys.excepthook`, whose traceback went to the stderr the driver's terminal or log shares
(the fault campaign's scheduler kills found it). There is nothing to report: the driver's
death is reported by whoever killed it, and the child was never given a task. Every other
exception keeps the hook it had.
"""

from __future__ import annotations

import sys
from types import TracebackType

_previous = sys.excepthook


def _innermost_is_spawn_main(tb: TracebackType | None) -> bool:
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    code = tb.tb_frame.f_code
    return code.co_name == "_main" and code.co_filename.endswith(
        ("multiprocessing/spawn.py", "multiprocessing\\spawn.py"))


def quiet_orphan_boot(exc_type: type[BaseException], exc: BaseException,
                      tb: TracebackType | None) -> None:
    """sys.excepthook: silent for the EOF of a start whose driver is gone, else the old hook."""
    if issubclass(exc_type, (EOFError, ConnectionError)) and _innermost_is_spawn_main(tb):
        return
    _previous(exc_type, exc, tb)


sys.excepthook = quiet_orphan_boot
