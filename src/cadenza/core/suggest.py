"""Near-miss suggestions for error messages ("Did you mean 'all_done'?"), shared by every
layer that reports an unknown name (graph checks, authoring options, engine, CLI)."""

from __future__ import annotations

from collections.abc import Sequence


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """" Did you mean 'x'?" for the closest of `choices` (difflib ratio >= 0.6), or ""."""
    import difflib  # only on the error path: keeps it off the import-time cost

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
