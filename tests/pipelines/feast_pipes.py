"""Pipelines around the feast_repo feature repository (tests/integration/test_feast.py).

Made by functions: each test copies the repository (its data, registry and online store are
the test's own) and passes its folder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cadenza import PipelineDef, feast_historical_features, feast_materialize, pipeline, task

FEATURES = ["driver_stats:trips", "driver_stats:rating"]


@task
def labels(folder: str) -> Any:
    """The entity frame: which driver, as of when, and the label to learn."""
    import pandas as pd

    marker = Path(folder) / "labels-ran"
    marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
    return pd.DataFrame({"driver_id": [1, 2, 3],
                         "event_timestamp": [datetime(2026, 1, 1, 13, tzinfo=UTC)] * 3,
                         "label": [0, 1, 0]})


@task
def train(frame: Any) -> dict[str, Any]:
    """Stands in for training: what the frame holds, read with the driver's pandas."""
    import pandas as pd

    frame = frame.sort_values("driver_id")
    return {"pandas": pd.__version__.split(".")[0], "columns": sorted(frame.columns),
            "trips": frame["trips"].tolist(), "rows": len(frame)}


def features(repo: Path, *, feature_views: list[str] | None = None,
             wanted: list[str] | None = None, **options: Any) -> PipelineDef:
    @pipeline(name="feast_features")
    def feast_pipeline(folder: str = str(repo.parent), end: str = "2026-01-03T00:00:00") -> None:
        loaded = feast_materialize(repo, start="2026-01-01T00:00:00", end=end,
                                   feature_views=feature_views, **options)
        frame = feast_historical_features(repo, labels(folder), wanted or FEATURES)
        loaded >> frame
        train(frame)

    return feast_pipeline
