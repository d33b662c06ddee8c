"""Feature definitions of the test repository (Feast imports this file on `feast apply`)."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"])

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
)

driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=7),
    schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float32)],
    source=driver_stats_source,
    online=True,
)
