"""What this machine offers (CPUs, memory, GPUs), and a ledger of what running tasks hold.

What belongs here: detecting capacity, parsing resource amounts, and the pure bookkeeping of
who holds which CPU share, memory and GPU ids. What does not: deciding which task runs next
(the engine's ReadyQueue asks `can_fit`), and setting `CUDA_VISIBLE_DEVICES` (the engine puts
the ids `acquire` returns into `TaskCall.env`; the worker applies it).

Example:
    cap = machine_capacity()
    ledger = ResourceLedger(cap)
    if ledger.can_fit(cpu=2, memory_bytes=4 << 30, gpu_count=1):
        gpus = ledger.acquire("run1/train[0]", cpu=2, memory_bytes=4 << 30, gpu_count=1)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}
        ...
        ledger.release("run1/train[0]")
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from cadenza.core.errors import InternalError

log = logging.getLogger(__name__)

GPUS_ENV = "CADENZA_GPUS"
NVIDIA_SMI_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    cpu: float
    memory_bytes: int
    gpus: tuple[str, ...] = ()


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def detect_gpus() -> list[str]:
    """GPU ids tasks may use, as `CUDA_VISIBLE_DEVICES` values.

    In order: `CADENZA_GPUS="0,1"` (wins; also how tests fake devices; empty means none),
    `nvidia-smi -L`, `CUDA_VISIBLE_DEVICES`, else no GPUs.
    """
    configured = os.environ.get(GPUS_ENV)
    if configured is not None:
        return _split_ids(configured)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            res = subprocess.run(
                [smi, "-L"],
                capture_output=True,
                text=True,
                timeout=NVIDIA_SMI_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("nvidia-smi -L failed (%s); falling back to CUDA_VISIBLE_DEVICES", exc)
        else:
            if res.returncode == 0:
                indices = parse_nvidia_smi(res.stdout)
                if visible is not None:
                    # The driver process was itself limited to some devices: respect that.
                    allowed = set(_split_ids(visible))
                    return [i for i in indices if i in allowed]
                return indices
    if visible is not None:
        ids = _split_ids(visible)
        # "-1" or "NoDevFiles" are the conventional ways to hide every device.
        return [] if any(i in ("-1", "NoDevFiles") for i in ids) else ids
    return []


def parse_nvidia_smi(listing: str) -> list[str]:
    """Device indices from `nvidia-smi -L` output ("GPU 0: NVIDIA A100 (UUID: GPU-...)")."""
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", listing, re.MULTILINE)]


def machine_capacity() -> Capacity:
    """CPUs (usable by this process), total memory, and GPU ids of this machine."""
    try:
        cpu = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpu = float(os.cpu_count() or 1)
    return Capacity(cpu=cpu, memory_bytes=_total_memory(), gpus=tuple(detect_gpus()))


def _total_memory() -> int:
    """Physical memory in bytes: sysconf on POSIX (free), psutil elsewhere (~15 ms import)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        import psutil  # type: ignore[import-untyped,unused-ignore]

        return int(psutil.virtual_memory().total)


@dataclass(frozen=True, slots=True)
class _Holding:
    cpu: float
    memory_bytes: int
    gpus: tuple[str, ...]


class ResourceLedger:
    """Who holds how much of the machine. Pure bookkeeping; not thread-safe.

    `holder` is any hashable naming one running attempt (e.g. (run_id, task_id, map_index)).
    GPUs are whole devices: each holder gets distinct ids, lowest first.
    """

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self._cpu_used = 0.0
        self._memory_used = 0
        self._free_gpus: list[str] = list(capacity.gpus)
        self._held: dict[object, _Holding] = {}

    @property
    def cpu_free(self) -> float:
        return self.capacity.cpu - self._cpu_used

    @property
    def memory_free(self) -> int:
        return self.capacity.memory_bytes - self._memory_used

    @property
    def gpus_free(self) -> tuple[str, ...]:
        return tuple(self._free_gpus)

    def fits_machine(self, cpu: float = 0.0, memory_bytes: int = 0, gpu_count: int = 0) -> bool:
        """Whether the request could ever fit, on an idle machine. False means it never runs."""
        cap = self.capacity
        return (
            cpu <= cap.cpu + 1e-9
            and memory_bytes <= cap.memory_bytes
            and (gpu_count <= len(cap.gpus))
        )

    def explain_misfit(self, cpu: float = 0.0, memory_bytes: int = 0, gpu_count: int = 0) -> str:
        """Why `fits_machine` is False, in words ("" when it fits)."""
        cap = self.capacity
        parts = []
        if cpu > cap.cpu + 1e-9:
            parts.append(f"{cpu:g} CPUs requested, the machine has {cap.cpu:g}")
        if memory_bytes > cap.memory_bytes:
            parts.append(
                f"{memory_bytes / 1024**3:.1f} GiB of memory requested, the machine has "
                f"{cap.memory_bytes / 1024**3:.1f} GiB"
            )
        if gpu_count > len(cap.gpus):
            parts.append(f"{gpu_count} GPUs requested, the machine has {len(cap.gpus)}")
        return "; ".join(parts)

    def can_fit(self, cpu: float = 0.0, memory_bytes: int = 0, gpu_count: int = 0) -> bool:
        """Whether the request fits in what is free right now."""
        return (
            cpu <= self.cpu_free + 1e-9
            and memory_bytes <= self.memory_free
            and gpu_count <= len(self._free_gpus)
        )

    def acquire(
        self, holder: object, cpu: float = 0.0, memory_bytes: int = 0, gpu_count: int = 0
    ) -> tuple[str, ...]:
        """Take resources for `holder`; returns the GPU ids assigned to it.

        Raises InternalError if `holder` already holds resources, if an amount is negative,
        or if the request does not fit now (ask `can_fit` first): all bugs of the caller.
        """
        if holder in self._held:
            raise InternalError(
                f"{holder!r} already holds resources",
                hint="release them before acquiring again (this is a bug in the caller)",
            )
        if cpu < 0 or memory_bytes < 0 or gpu_count < 0:
            raise InternalError(
                f"negative resource request for {holder!r}: cpu={cpu}, "
                f"memory_bytes={memory_bytes}, gpu_count={gpu_count}",
                hint="declare resources as non-negative amounts",
            )
        if not self.can_fit(cpu, memory_bytes, gpu_count):
            raise InternalError(
                f"{holder!r} asked for cpu={cpu:g}, memory_bytes={memory_bytes}, "
                f"gpu_count={gpu_count}, but only cpu={self.cpu_free:g}, "
                f"memory_bytes={self.memory_free}, gpus={len(self._free_gpus)} are free",
                hint="check can_fit() before acquire() (this is a bug in the caller)",
            )
        gpus = tuple(self._free_gpus[:gpu_count])
        del self._free_gpus[:gpu_count]
        self._cpu_used += cpu
        self._memory_used += memory_bytes
        self._held[holder] = _Holding(cpu, memory_bytes, gpus)
        return gpus

    def release(self, holder: object) -> None:
        """Give back what `holder` took. Releasing a holder that holds nothing is a no-op,
        so an outcome that arrives twice cannot free resources twice."""
        held = self._held.pop(holder, None)
        if held is None:
            return
        self._cpu_used = max(0.0, self._cpu_used - held.cpu)
        self._memory_used = max(0, self._memory_used - held.memory_bytes)
        order = {gpu: i for i, gpu in enumerate(self.capacity.gpus)}
        self._free_gpus = sorted([*self._free_gpus, *held.gpus], key=lambda g: order.get(g, 0))

    def holding(self, holder: object) -> tuple[str, ...] | None:
        """The GPU ids `holder` holds, or None if it holds nothing."""
        held = self._held.get(holder)
        return None if held is None else held.gpus
