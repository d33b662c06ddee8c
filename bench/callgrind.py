"""What the callgrind-based benches share (fence_counts.py, pg_backend_counts.py): reading
the instruction count a callgrind run wrote."""

from __future__ import annotations

from pathlib import Path


def total(path: Path) -> int:
    """The total instructions in callgrind output file `path` (its totals/summary line)."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")
