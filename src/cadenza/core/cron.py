"""Cron presets: the one table of `@daily`-style names and the 5-field expressions they mean.

Authoring checks a pipeline's `schedule` against it and `triggers.cron` evaluates it, so it
lives below both. What does not belong here: parsing or evaluating cron (croniter, in
`triggers/cron.py`), validating an expression (`authoring/pipeline.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

PRESETS: Mapping[str, str] = MappingProxyType({
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
})


def expand_preset(schedule: str) -> str:
    """The cron expression a preset names (surrounding blanks ignored), else `schedule`
    unchanged: `expand_preset("@daily") == "0 0 * * *"`."""
    return PRESETS.get(schedule.strip(), schedule)


def is_unknown_preset(schedule: str) -> bool:
    """`schedule` looks like a preset ("@...") but is not one of `PRESETS`."""
    text = schedule.strip()
    return text.startswith("@") and text not in PRESETS
