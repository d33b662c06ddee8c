"""Assets: named, versioned data products that tasks produce (`outlets=[...]`) and
pipelines can be triggered by (`triggers=[...]`, `triggers=AnyOf(...)`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cadenza.core.errors import DefinitionError, Problem

_NAME = re.compile(r"^[A-Za-z0-9_.\-/:]+$")


@dataclass(frozen=True, slots=True)
class Asset:
    """A named data product, e.g. `Asset("features/user")`.

    Each successful instance of a task that lists it in `outlets` makes a new version.
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(None, [Problem(
                message=f"asset name {self.name!r} is not valid",
                hint='use letters, digits and _ . - / :, e.g. Asset("features/user")')])

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Trigger when ANY of these assets has a new version (a plain list means all)."""

    assets: tuple[Asset, ...]

    def __init__(self, *assets: Asset | str) -> None:
        object.__setattr__(
            self, "assets", tuple(a if isinstance(a, Asset) else Asset(a) for a in assets)
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.assets)
