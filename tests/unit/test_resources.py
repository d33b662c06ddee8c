"""Machine capacity, memory amounts and the resource ledger (pure; no subprocess)."""

from __future__ import annotations

import pytest

from cadenza.core.errors import CadenzaError, ConfigError
from cadenza.core.units import parse_memory
from cadenza.engine.resources import (
    Capacity,
    ResourceLedger,
    detect_gpus,
    machine_capacity,
    parse_nvidia_smi,
)

GiB = 1024**3


@pytest.fixture
def no_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """A PATH without nvidia-smi, so detection never starts a process."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CADENZA_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# --- detect_gpus ---------------------------------------------------------------------------


def test_cadenza_gpus_env_wins_over_cuda_visible_devices(
    no_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    monkeypatch.setenv("CADENZA_GPUS", "0, 1,")
    assert detect_gpus() == ["0", "1"]


def test_empty_cadenza_gpus_means_no_gpus(
    no_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("CADENZA_GPUS", "")
    assert detect_gpus() == []


def test_cuda_visible_devices_is_used_without_nvidia_smi(
    no_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_gpus() == ["2", "3"]


@pytest.mark.parametrize("hidden", ["-1", "NoDevFiles", ""])
def test_cuda_visible_devices_can_hide_every_device(
    no_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch, hidden: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert detect_gpus() == []


def test_no_gpus_when_nothing_says_so(no_nvidia_smi: None) -> None:
    assert detect_gpus() == []


def test_nvidia_smi_listing_gives_device_indices() -> None:
    listing = (
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1b2c)\n"
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-3d4e)\n"
        "  MIG 1g.5gb Device 0: (UUID: MIG-xyz)\n"
    )
    assert parse_nvidia_smi(listing) == ["0", "1"]
    assert parse_nvidia_smi("") == []


def test_machine_capacity_reports_cpus_memory_and_fake_gpus(
    no_nvidia_smi: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_GPUS", "0,1")
    cap = machine_capacity()
    assert cap.cpu >= 1
    import psutil

    assert cap.memory_bytes == psutil.virtual_memory().total
    assert cap.gpus == ("0", "1")


# --- parse_memory --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 * GiB),
        ("4gib", 4 * GiB),
        ("4 Gi", 4 * GiB),
        ("512MB", 512 * 1000**2),
        ("512M", 512 * 1000**2),
        ("512MiB", 512 * 1024**2),
        ("1.5G", 1_500_000_000),
        ("1.5GiB", int(1.5 * GiB)),
        ("2TB", 2 * 1000**4),
        ("10KiB", 10 * 1024),
        ("1024", 1024),
        ("1024B", 1024),
        ("  8 GB ", 8 * 1000**3),
        (".5GiB", GiB // 2),
        (2048, 2048),
        (0, 0),
        (1.0e9, 1_000_000_000),
    ],
)
def test_parse_memory_understands_units(text: str | float, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "GiB", "4 lightyears", "-1GB", "4GiB!", "1e9", "four GB", -5, True, None, [4]]
)
def test_parse_memory_rejects_bad_amounts_with_a_fix(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_memory(bad, task="train")  # type: ignore[arg-type]
    err = info.value
    assert err.task == "train"
    assert "invalid memory amount" in str(err)
    assert err.hint is not None and "4GiB" in err.hint


# --- ResourceLedger ------------------------------------------------------------------------


def _ledger(
    cpu: float = 4, memory: int = 16 * GiB, gpus: tuple[str, ...] = ("0", "1", "2")
) -> ResourceLedger:
    return ResourceLedger(Capacity(cpu=cpu, memory_bytes=memory, gpus=gpus))


def test_acquire_hands_out_distinct_gpus_lowest_first() -> None:
    ledger = _ledger()
    assert ledger.acquire("a", cpu=1, gpu_count=2) == ("0", "1")
    assert ledger.acquire("b", cpu=1, gpu_count=1) == ("2",)
    assert ledger.gpus_free == ()
    assert ledger.holding("a") == ("0", "1")


def test_release_returns_everything_and_gpus_are_reused_in_order() -> None:
    ledger = _ledger()
    ledger.acquire("a", cpu=1, memory_bytes=GiB, gpu_count=1)
    ledger.acquire("b", cpu=1, memory_bytes=GiB, gpu_count=1)
    ledger.release("a")
    assert ledger.gpus_free == ("0", "2")
    assert ledger.cpu_free == 3
    assert ledger.memory_free == 15 * GiB
    assert ledger.acquire("c", gpu_count=2) == ("0", "2")


def test_release_twice_frees_once() -> None:
    ledger = _ledger()
    ledger.acquire("a", cpu=3)
    ledger.acquire("b", cpu=1)
    ledger.release("a")
    ledger.release("a")
    assert ledger.cpu_free == 3
    assert ledger.holding("a") is None


def test_can_fit_checks_cpu_memory_and_gpus_together() -> None:
    ledger = _ledger(cpu=2, memory=4 * GiB, gpus=("0",))
    assert ledger.can_fit(cpu=2, memory_bytes=4 * GiB, gpu_count=1)
    ledger.acquire("a", cpu=0.5, memory_bytes=GiB)
    assert ledger.can_fit(cpu=1.5)
    assert not ledger.can_fit(cpu=1.6)
    assert not ledger.can_fit(memory_bytes=3 * GiB + 1)
    assert ledger.can_fit(gpu_count=1)
    assert not ledger.can_fit(gpu_count=2)


def test_fractional_cpus_add_up_without_rounding_trouble() -> None:
    ledger = _ledger(cpu=1, gpus=())
    for i in range(10):
        ledger.acquire(i, cpu=0.1)
    assert not ledger.can_fit(cpu=0.1)
    assert ledger.can_fit(cpu=0.0)


def test_fits_machine_tells_never_from_not_now() -> None:
    ledger = _ledger(cpu=4, memory=16 * GiB, gpus=("0",))
    ledger.acquire("a", cpu=4)
    assert not ledger.can_fit(cpu=1)
    assert ledger.fits_machine(cpu=1)  # later, when "a" is done
    assert not ledger.fits_machine(cpu=8)
    assert not ledger.fits_machine(memory_bytes=32 * GiB)
    assert not ledger.fits_machine(gpu_count=2)
    why = ledger.explain_misfit(cpu=8, gpu_count=2)
    assert "8 CPUs requested, the machine has 4" in why
    assert "2 GPUs requested, the machine has 1" in why
    assert ledger.explain_misfit(cpu=1) == ""


def test_acquire_refuses_misuse() -> None:
    ledger = _ledger()
    ledger.acquire("a", cpu=1)
    with pytest.raises(CadenzaError, match="already holds"):
        ledger.acquire("a", cpu=1)
    with pytest.raises(CadenzaError, match="only cpu=3,"):
        ledger.acquire("b", cpu=5)
    with pytest.raises(CadenzaError, match="negative"):
        ledger.acquire("c", cpu=-1)
    assert ledger.cpu_free == 3  # failed acquires took nothing


def test_no_gpus_machine_runs_cpu_tasks() -> None:
    ledger = _ledger(gpus=())
    assert ledger.acquire("a", cpu=1) == ()
    assert not ledger.can_fit(gpu_count=1)
