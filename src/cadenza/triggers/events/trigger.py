"""`EventTrigger(url)`: which message source a pipeline's runs come from (SPEC §4, §9).

What belongs here: parsing and checking the URL of each transport, the canonical source
(no credentials; part of every message's dedupe key), and the errors a consumer raises
when its source cannot be used. What does not: reading messages (one module per
transport beside this one), recording them (`messages.py`).

URLs (one per transport; every query parameter is checked, unknown ones are an error):
  redis://[:password@]host:6379/0?stream=S[&group=G][&start=new|all]      (rediss:// TLS)
  nats://host:4222?subject=S[&stream=N][&durable=D][&ack_wait=30][&start=new|all]
  kafka://host:9092[,host2:9092]?topic=T[&group=G][&start=new|all][&partitions=1]
        [&session_timeout_ms=10000]
  amqp://user:password@host:5672/vhost?queue=Q[&exchange=E][&routing_key=K]
        [&prefetch=64]                                                  (amqps:// TLS)
  mqtt://[user:password@]host:1883?topic=T[&client_id=C]               (mqtts:// TLS)
An MQTT topic filter may hold `+` and `#` as written (`#` is not taken as a URL fragment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from cadenza.core.errors import ConfigError, DefinitionError
from cadenza.core.suggest import did_you_mean

# What a URL of each scheme looks like (the fix of every URL error) and the pip extra
# holding its client library.
EXAMPLES = {
    "redis": "redis://host:6379/0?stream=ml.training",
    "nats": "nats://host:4222?subject=ml.training",
    "kafka": "kafka://host:9092?topic=ml.training&group=cadenza",
    "amqp": "amqp://guest:guest@host:5672/?queue=ml.training",
    "mqtt": "mqtt://host:1883?topic=ml/training",
}
EXTRAS = {"redis": "triggers", "nats": "triggers", "kafka": "kafka", "amqp": "amqp",
          "mqtt": "mqtt"}
_SCHEMES = {"redis": "redis", "rediss": "redis", "nats": "nats", "tls": "nats",
            "kafka": "kafka", "amqp": "amqp", "amqps": "amqp", "mqtt": "mqtt", "mqtts": "mqtt"}
# The query parameters each kind accepts; the first one is required.
_PARAMS = {
    "redis": ("stream", "group", "start"),
    "nats": ("subject", "stream", "durable", "ack_wait", "start"),
    "kafka": ("topic", "group", "start", "partitions", "session_timeout_ms"),
    "amqp": ("queue", "exchange", "routing_key", "prefetch"),
    "mqtt": ("topic", "client_id"),
}
_INTS = {"partitions": (1, 10_000), "session_timeout_ms": (1_000, 3_600_000),
         "prefetch": (1, 65_535)}


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Start one run per message of a Redis stream, a NATS subject, a Kafka topic, a
    RabbitMQ queue or an MQTT topic; the message's JSON object is the run's parameters.

    Example:
        @pipeline(triggers=[EventTrigger("kafka://localhost:9092?topic=ml.training")])
        def training(n: int = 1000): ...
    """

    url: str

    def __post_init__(self) -> None:
        # Validated at definition time. The pipeline does not exist yet (the trigger is an
        # argument of its decorator), so the error says where the trigger is written.
        try:
            self.parsed  # noqa: B018
        except DefinitionError as exc:
            where = _caller()
            if where is None:
                raise
            raise DefinitionError.single(exc.message.replace(
                f"EventTrigger {self.url!r}:", f"EventTrigger {self.url!r} ({where}):", 1),
                hint=exc.hint) from None

    def _fail(self, what: str, kind: str | None = None) -> DefinitionError:
        hint = (f"e.g. {EXAMPLES[kind]}" if kind else
                "use one of: " + ", ".join(EXAMPLES.values()))
        return DefinitionError.single(f"EventTrigger {self.url!r}: {what}", hint=hint)

    @property
    def parsed(self) -> dict[str, Any]:
        raw = self.url
        if raw.lower().startswith(("mqtt://", "mqtts://")):
            # Topic wildcards as written: `#` is not a fragment, `+` is not a space.
            raw = raw.replace("#", "%23").replace("+", "%2B")
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        kind = _SCHEMES.get(scheme)
        if kind is None:
            raise self._fail(f"unknown scheme '{parts.scheme}'")
        query: dict[str, Any] = {
            k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        allowed = _PARAMS[kind]
        unknown = sorted(set(query) - set(allowed))
        if unknown:
            raise self._fail(f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}."
                             f"{did_you_mean(unknown[0], allowed)} A {kind} trigger takes "
                             f"{', '.join(allowed)}", kind)
        if not query.get(allowed[0]):
            raise self._fail(f"names no {allowed[0]}", kind)
        if query.get("start", "new") not in ("new", "all"):
            raise self._fail(f"start={query['start']!r} is neither 'new' nor 'all'", kind)
        for name, (low, high) in _INTS.items():
            if name in query:
                try:
                    value = int(query[name])
                except ValueError:
                    value = low - 1
                if not low <= value <= high:
                    raise self._fail(f"{name}={query[name]!r} is not a whole number from "
                                     f"{low} to {high}", kind)
                query[name] = value
        return _PARSERS[kind](self, parts, scheme, query)

    @property
    def kind(self) -> str:
        return str(self.parsed["kind"])

    @property
    def source(self) -> str:
        """The canonical source (no credentials): part of every message's dedupe key."""
        p = self.parsed
        kind = p["kind"]
        if kind == "redis":
            return (f"redis://{p['host']}:{p['port']}/{p['db']}?"
                    + urlencode({"stream": p["stream"]}))
        if kind == "nats":
            return f"nats://{p['host']}:{p['port']}?" + urlencode({"subject": p["subject"]})
        if kind == "kafka":
            return f"kafka://{p['bootstrap']}?" + urlencode({"topic": p["topic"]})
        if kind == "amqp":
            return (f"amqp://{p['host']}:{p['port']}/{quote(p['vhost'], safe='')}?"
                    + urlencode({"queue": p["queue"]}))
        return f"mqtt://{p['host']}:{p['port']}?" + urlencode({"topic": p["topic"]})


def _caller() -> str | None:
    """`file:line` of the first frame outside Cadenza: where the trigger is written."""
    import sys
    from pathlib import Path

    package = str(Path(__file__).resolve().parents[2])
    frame: Any = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(package)
                                 or frame.f_code.co_filename.startswith("<")):
        frame = frame.f_back
    if frame is None:
        return None
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"


def _host_port(trigger: EventTrigger, parts: Any, kind: str, default: int) -> tuple[str, int]:
    try:
        port = parts.port or default
    except ValueError:
        raise trigger._fail(f"the port in '{parts.netloc}' is not a number", kind) from None
    return parts.hostname or "127.0.0.1", port


def _redis(t: EventTrigger, parts: Any, scheme: str, query: dict[str, Any]) -> dict[str, Any]:
    host, port = _host_port(t, parts, "redis", 6379)
    db = (parts.path or "/0").strip("/") or "0"
    if not db.isdigit():
        raise t._fail(f"the database '{db}' is not a number", "redis")
    return {"kind": "redis", "scheme": scheme, "host": host, "port": port, "db": int(db),
            "password": parts.password, "username": parts.username, **query}


def _nats(t: EventTrigger, parts: Any, scheme: str, query: dict[str, Any]) -> dict[str, Any]:
    host, port = _host_port(t, parts, "nats", 4222)
    return {"kind": "nats", "host": host, "port": port, "scheme": scheme, **query}


def _kafka(t: EventTrigger, parts: Any, scheme: str, query: dict[str, Any]) -> dict[str, Any]:
    if "@" in parts.netloc:
        raise t._fail("credentials in a kafka:// URL are not supported (no SASL/TLS yet)",
                      "kafka")
    servers = []
    for item in (parts.netloc or "127.0.0.1:9092").split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item, "", "9092")
        if not host or not port.isdigit():
            raise t._fail(f"'{item}' is not host:port", "kafka")
        servers.append(f"{host}:{port}")
    return {"kind": "kafka", "bootstrap": ",".join(servers), **query}


def _amqp(t: EventTrigger, parts: Any, scheme: str, query: dict[str, Any]) -> dict[str, Any]:
    host, port = _host_port(t, parts, "amqp", 5671 if scheme == "amqps" else 5672)
    path = parts.path.removeprefix("/")
    return {"kind": "amqp", "scheme": scheme, "host": host, "port": port,
            "vhost": unquote(path) or "/", "username": unquote(parts.username or "guest"),
            "password": unquote(parts.password or "guest"), **query}


def _mqtt(t: EventTrigger, parts: Any, scheme: str, query: dict[str, Any]) -> dict[str, Any]:
    host, port = _host_port(t, parts, "mqtt", 8883 if scheme == "mqtts" else 1883)
    return {"kind": "mqtt", "scheme": scheme, "host": host, "port": port,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None, **query}


_PARSERS: dict[str, Callable[[EventTrigger, Any, str, dict[str, Any]], dict[str, Any]]] = {
    "redis": _redis, "nats": _nats, "kafka": _kafka, "amqp": _amqp, "mqtt": _mqtt}


# -- errors a consumer raises ------------------------------------------------------------------


def missing_client(trigger: EventTrigger, pipeline: str, module: str) -> ConfigError:
    """The transport's client library is not installed."""
    extra = EXTRAS[trigger.kind]
    return ConfigError(f"EventTrigger {trigger.source}: the {trigger.kind} client "
                       f"('{module}') is not installed", pipeline=pipeline,
                       hint=f"pip install 'cadenza[{extra}]'")


def unreachable(trigger: EventTrigger, pipeline: str, exc: BaseException | str) -> ConfigError:
    """The broker cannot be reached or refused what the trigger asked of it."""
    what = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    first = what.strip().splitlines()[0] if what.strip() else what
    return ConfigError(f"EventTrigger {trigger.source}: cannot use the {trigger.kind} broker: "
                       f"{first}", pipeline=pipeline,
                       hint=f"start the broker, or fix the address in the trigger's URL "
                            f"(e.g. {EXAMPLES[trigger.kind]}); messages wait in the broker "
                            f"and are processed once it is reachable")
