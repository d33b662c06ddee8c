"""Workers do not import the driver's `__main__`, yet tasks of a script find its names.

Driver side: `keep_main_out_of_workers` (how our workers start without re-running the
script) and `main_identity` (where the driver's `__main__` comes from, sent at boot).
Worker side: `stand_in_for_main` and `adopt_main_names`. Why, in the package docstring.
"""

from __future__ import annotations

import importlib.machinery
import multiprocessing.spawn
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

# Set while this thread starts one of our workers (`pool.ProcessExecutor._spawn_locked`).
spawning = threading.local()
_main_guard_lock = threading.Lock()


def keep_main_out_of_workers() -> None:
    """Start our workers without the driver's `__main__` (idempotent).

    With forkserver and spawn, multiprocessing tells each child to re-import the parent's
    main script (`init_main_from_path`) or module (`init_main_from_name`, for `python -m`), so
    that functions pickled by reference as `__main__.f` resolve there. That import re-runs
    every unguarded top-level statement of the user's script, `pipeline.run()` included. Our
    workers never need it: cloudpickle ships `__main__` functions and classes by value (with
    the module-level values they read), and `wire.pickle_call` does the same for inputs that
    refer to `__main__`. So the preparation data of our workers leaves both keys out, as loky
    (joblib's pool) does with its `init_main_module=False`.

    `multiprocessing.spawn.get_preparation_data(name)` is the one place both start methods
    (popen_forkserver and popen_spawn_posix, Python 3.4 to 3.14) read that from, through the
    module attribute. The wrapper installed here changes its answer only on the thread that is
    inside `_spawn_locked`'s `process.start()`; every other process started in the driver
    (the user's own pools) gets the standard data. tests/integration/test_unguarded_scripts.py
    checks on every supported Python that a worker does not run the script's top level.
    """
    with _main_guard_lock:
        original = multiprocessing.spawn.get_preparation_data
        if getattr(original, "_cadenza_keeps_main_out", False):
            return

        def get_preparation_data(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            data: dict[str, Any] = original(name, *args, **kwargs)
            if getattr(spawning, "worker", False):
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
        get_preparation_data._cadenza_keeps_main_out = True  # type: ignore[attr-defined]
        multiprocessing.spawn.get_preparation_data = get_preparation_data


def main_identity() -> tuple[str | None, str | None]:
    """(path, module name) of the driver's `__main__`, as multiprocessing would read them."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if isinstance(path, str):
        path = os.path.abspath(path)
    return (path if isinstance(path, str) else None,
            spec_name if isinstance(spec_name, str) else None)


def stand_in_for_main(path: str | None, spec_name: str | None) -> None:
    """Worker: let this process's `__main__` say where the driver's comes from.

    The worker did not import the user's script (see `keep_main_out_of_workers`), so its
    `__main__` is multiprocessing's bootstrap module. A task that starts its own spawn or
    forkserver pool (ProcessPoolExecutor on Python 3.14, torch with `spawn`) should behave as
    it would in the driver: its children import the script as `__mp_main__`, with the usual
    `if __name__ == "__main__":` rule for the user's own pools.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__file__", None) is not None:
        return
    if spec_name is not None:
        main.__spec__ = importlib.machinery.ModuleSpec(spec_name, None)
    elif path is not None:
        main.__file__ = path


def adopt_main_names(fn: Callable[..., Any]) -> None:
    """Worker: make the `__main__` functions and classes a task reads findable by name.

    cloudpickle rebuilt `fn` and the `__main__` globals it reads by value; this process's
    `__main__` module does not hold them. Code inside the task that pickles them by reference
    (a ProcessPoolExecutor mapping a function of the script over forked children, pickle.dumps
    of an instance of a class of the script) looks them up as `__main__.<name>`: put them there.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return
    space = main.__dict__
    found: dict[str, Any] = getattr(fn, "__globals__", {})
    for name, value in list(found.items()):
        if (
            not name.startswith("__")
            and getattr(value, "__module__", None) == "__main__"
            and getattr(value, "__qualname__", None) == name
        ):
            space[name] = value
    name = getattr(fn, "__qualname__", "")
    if name.isidentifier():
        space[name] = fn
