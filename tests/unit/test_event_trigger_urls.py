"""EventTrigger URLs of every transport (SPEC §4, §9): parsed, checked at definition time with
an error naming the trigger and the fix, and a canonical source without credentials."""

from __future__ import annotations

import pytest

from cadenza.core.errors import ConfigError, DefinitionError
from cadenza.triggers.events import EventTrigger
from cadenza.triggers.events.trigger import missing_client, unreachable


def test_kafka_url_has_its_brokers_topic_and_group() -> None:
    t = EventTrigger("kafka://k1:9092,k2:9093?topic=ml.training&group=cadenza&partitions=3")
    p = t.parsed
    assert (p["kind"], p["bootstrap"], p["topic"], p["group"], p["partitions"]) == (
        "kafka", "k1:9092,k2:9093", "ml.training", "cadenza", 3)
    assert t.source == "kafka://k1:9092,k2:9093?topic=ml.training"
    assert EventTrigger("kafka://bus?topic=t").parsed["bootstrap"] == "bus:9092"


def test_amqp_url_keeps_no_credentials_in_its_source() -> None:
    t = EventTrigger("amqp://ops:s3cret@rabbit:5673/prod?queue=ml.training&prefetch=8")
    p = t.parsed
    assert (p["host"], p["port"], p["vhost"], p["username"], p["password"], p["prefetch"]) == (
        "rabbit", 5673, "prod", "ops", "s3cret", 8)
    assert t.source == "amqp://rabbit:5673/prod?queue=ml.training"
    default = EventTrigger("amqp://rabbit/?queue=q")
    assert default.parsed["vhost"] == "/" and default.parsed["username"] == "guest"
    assert default.source == "amqp://rabbit:5672/%2F?queue=q"
    assert EventTrigger("amqps://rabbit/?queue=q").parsed["port"] == 5671


def test_mqtt_url_keeps_topic_wildcards() -> None:
    t = EventTrigger("mqtt://user:pw@broker?topic=plant/+/retrain/#")
    p = t.parsed
    assert (p["host"], p["port"], p["topic"], p["username"]) == (
        "broker", 1883, "plant/+/retrain/#", "user")
    assert t.source == "mqtt://broker:1883?topic=plant%2F%2B%2Fretrain%2F%23"
    assert "pw" not in t.source


@pytest.mark.parametrize(("url", "problem", "fix"), [
    ("kafka://bus:9092?group=g", "names no topic", "kafka://host:9092?topic="),
    ("kafka://bus:9092?topic=t&partition=2",
     "unknown parameter 'partition'. Did you mean 'partitions'?", "kafka://"),
    ("kafka://u:p@bus:9092?topic=t", "credentials", "kafka://"),
    ("kafka://bus:x?topic=t", "not host:port", "kafka://"),
    ("kafka://bus?topic=t&start=latest", "neither 'new' nor 'all'", "kafka://"),
    ("kafka://bus?topic=t&session_timeout_ms=10", "session_timeout_ms='10'", "kafka://"),
    ("amqp://rabbit/?exchange=e", "names no queue", "amqp://guest:guest@host:5672/?queue="),
    ("amqp://rabbit:abc/?queue=q", "port", "amqp://"),
    ("amqp://rabbit/?queue=q&prefetch=0", "prefetch='0'", "amqp://"),
    ("mqtt://broker?subject=x", "unknown parameter 'subject'", "mqtt://host:1883?topic="),
    ("mqtt://broker", "names no topic", "mqtt://"),
    ("redis://cache/0?stream=s&strem=t", "unknown parameter 'strem'", "redis://"),
    ("zmq://x?topic=t", "unknown scheme 'zmq'", "kafka://"),
])
def test_a_bad_url_names_the_trigger_and_the_fix(url: str, problem: str, fix: str) -> None:
    with pytest.raises(DefinitionError) as info:
        EventTrigger(url)
    text = str(info.value)
    assert url in text and problem in text
    assert "Fix:" in text and fix in text


def test_broker_errors_name_the_trigger_the_pipeline_and_the_fix() -> None:
    t = EventTrigger("amqp://ops:s3cret@rabbit/?queue=retrain")
    err = unreachable(t, "retraining", ConnectionRefusedError("connection refused"))
    assert isinstance(err, ConfigError) and err.pipeline == "retraining"
    assert str(err).startswith("pipeline 'retraining': EventTrigger amqp://rabbit:5672/%2F"
                               "?queue=retrain: cannot use the amqp broker: connection refused")
    assert "Fix: start the broker" in str(err) and "s3cret" not in str(err)
    missing = missing_client(EventTrigger("mqtt://b?topic=t"), "p", "paho.mqtt")
    assert missing.hint == "pip install 'cadenza[mqtt]'"


def test_a_bad_url_error_says_where_the_trigger_is_written() -> None:
    import inspect

    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(DefinitionError) as info:
        EventTrigger("kafka://bus:9092?topc=ml.training")
    assert str(info.value).startswith(
        "EventTrigger 'kafka://bus:9092?topc=ml.training' "
        f"(test_event_trigger_urls.py:{line}): unknown parameter 'topc'. Did you mean 'topic'?")
