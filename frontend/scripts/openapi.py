"""Write the API's OpenAPI document to frontend/openapi.json.

The UI's TypeScript types (src/api/schema.d.ts) are generated from it by openapi-typescript
(`npm run gen:api`), so the UI and the API never describe a response twice. Run through
`make ui-types` after changing api/schemas.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from cadenza.api import create_app
from cadenza.core.settings import load_settings


def render() -> str:
    """The app's OpenAPI document as frontend/openapi.json holds it
    (tests/unit/test_ui_static.py fails when the committed file differs)."""
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(Path(home), environ={"CADENZA_HOME": home})
        app = create_app(settings, paths=[])
        doc = app.openapi()
        app.state.store.dispose()
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "openapi.json"
    out.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
