"""The web UI's generated and built files are current: the state colours the frontend
draws with are core/states.py's (frontend/src/states.gen.ts), the OpenAPI document its
TypeScript types are generated from (frontend/openapi.json) is the live app's, and the
packaged build has an index.html whose bundles exist."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from cadenza.api.ui import ui_directory
from cadenza.core.states import STATE_COLOURS, RunState, TaskState

REPO = Path(__file__).resolve().parents[2]


def test_every_task_and_run_state_has_one_colour() -> None:
    assert set(TaskState) | set(RunState) <= set(STATE_COLOURS)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in STATE_COLOURS.values())


def _script(name: str) -> Any:
    """A module of frontend/scripts/ (they are not a package)."""
    sys.path.insert(0, str(REPO / "frontend" / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_the_frontends_state_table_is_generated_from_core_states() -> None:
    gen = _script("states")  # frontend/scripts/states.py
    committed = (REPO / "frontend" / "src" / "states.gen.ts").read_text(encoding="utf-8")
    assert committed == gen.render(), "stale: run `make ui-types` and commit the result"


def test_the_frontends_openapi_document_is_the_live_apps() -> None:
    """CI has no Node: the JSON the UI's types come from is compared, not the types. When
    this fails, run `make ui-types` (or `python frontend/scripts/openapi.py` without Node)
    and commit the result."""
    committed = json.loads((REPO / "frontend" / "openapi.json").read_text(encoding="utf-8"))
    live = json.loads(_script("openapi").render())  # frontend/scripts/openapi.py
    assert set(committed["paths"]) == set(live["paths"]), "paths differ: run `make ui-types`"
    assert committed == live, "stale frontend/openapi.json: run `make ui-types`"


def test_the_packaged_build_links_bundles_that_exist() -> None:
    root = ui_directory()
    assert root is not None, "no built UI in cadenza/ui/static: run `make ui`"
    html = (root / "index.html").read_text(encoding="utf-8")
    bundles = re.findall(r'(?:src|href)="/(assets/[^"]+)"', html)
    assert any(b.endswith(".js") for b in bundles) and any(b.endswith(".css") for b in bundles)
    for bundle in bundles:
        assert (root / bundle).is_file(), bundle
