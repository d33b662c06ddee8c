"""A short-lived response cache and ETags for the polled reads (runs lists, a run's
detail, a pipeline's runs, the pipelines list).

Why: a UI polls; 200 browsers polling the same page ask the same question many times a
second. A repeat answered from here costs no store read, no FastAPI dependency or
parameter work and no serialisation (bench/api_counts.py counts it). SSE
(`/runs/{id}/events`) is the live channel; these lists may be up to `ttl_s` old
(DEFAULT_TTL_S; `api_cache_ttl_s` in cadenza.toml, 0 turns the cache off).

How, by case (GET of a cacheable path, `CACHEABLE`):
  1. The caller is known without a store read (auth off, or a token the authenticator has
     cached: `Authenticator.known`) and (role, path, query) is cached and fresh -> the
     cached body, with its ETag; `If-None-Match` equal to it -> 304 without a body.
  2. The caller is known (as in 1) and the request is a plain run detail or runs list
     (`polled_read`, routes/runs.py) -> read and serialised by the routes' own functions in
     a worker thread, without FastAPI's routing, dependencies and parameter validation
     (about half of a run detail's CPU); cached as in 3. Any CadenzaError (no such run, the
     store down, a bad cursor) -> the app answers instead, as in 3, and says so.
  3. Otherwise the app answers (authentication and the role check run as always: 401/403
     are never cached). A 200 JSON answer gets an ETag (a hash of the body; 304 when the
     client already has it) and is cached under the role the app authenticated.
  4. Any mutating call (POST, PUT, PATCH, DELETE) through this app empties the cache when
     its answer starts, so a client sees its own trigger/cancel/pause in the next list.
     Changes made elsewhere (a scheduler, another worker process, the CLI) show within
     `ttl_s`.
The role is part of the key: an answer cached for an admin is never served to a viewer
(or to a caller without a token: that one gets 401 from the app). Bounded: at most
`max_entries` answers of at most MAX_BODY bytes each, oldest dropped first.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from cadenza.api.errors import FieldError
from cadenza.core.errors import CadenzaError
from cadenza.core.security import Principal

DEFAULT_TTL_S = 1.0
DEFAULT_MAX_ENTRIES = 2048
MAX_BODY = 1 << 20

# The polled reads (paths under the API prefix). Not the event streams, logs or previews.
CACHEABLE = re.compile(r"/(runs|runs/[^/]+|pipelines|pipelines/[^/]+/runs)")

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_Scope = dict[str, Any]
_Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes
    etag: bytes
    expires: float


def etag_of(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'


class ResponseCache:
    """Answers by key for `ttl_s` seconds, at most `max_entries` (least recently stored
    dropped first). Thread-safe."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES
                 ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._answers: OrderedDict[tuple[str, str, bytes], CachedAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.fast_reads = 0  # misses answered by `polled_read`, not the app

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: tuple[str, str, bytes]) -> CachedAnswer | None:
        answer = self._answers.get(key)
        if answer is None or answer.expires <= time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return answer

    def put(self, key: tuple[str, str, bytes], body: bytes, etag: bytes) -> None:
        if not self.enabled or len(body) > MAX_BODY:
            return
        answer = CachedAnswer(body, etag, time.monotonic() + self.ttl_s)
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)


def _header(scope: _Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
    return etag in tags or b"*" in tags


class ResponseCacheMiddleware:
    """ASGI middleware: the cache and ETags (see the module docstring). `known` tells the
    caller without a store read (None: cannot tell cheaply; the app then answers)."""

    def __init__(self, app: Any, *, prefix: str, cache: ResponseCache,
                 known: Callable[[bytes | None], Principal | None],
                 polled_read: Callable[[str, bytes], Callable[[], bytes] | None] | None = None
                 ) -> None:
        self.app = app
        self.prefix = prefix
        self.cache = cache
        self.known = known
        self.polled_read = polled_read

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in _MUTATING:
            await self.app(scope, receive, self._clearing(send))
            return
        path: str = scope["path"]
        if (method != "GET" or not path.startswith(self.prefix)
                or not CACHEABLE.fullmatch(path, len(self.prefix))):
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string") or b""
        if_none_match = _header(scope, b"if-none-match")
        principal = self.known(_header(scope, b"authorization"))
        if principal is not None:
            key = (principal.role.value, path, query)
            if self.cache.enabled:
                answer = self.cache.get(key)
                if answer is not None:
                    await _send_answer(send, answer.body, answer.etag, if_none_match)
                    return
            read = self.polled_read(path[len(self.prefix):], query) if self.polled_read \
                else None
            if read is not None:
                try:
                    body = await anyio.to_thread.run_sync(read)
                except (CadenzaError, FieldError):
                    pass  # not found, the store down, a bad cursor: the app says so below
                else:
                    self.cache.fast_reads += 1
                    etag = etag_of(body)
                    self.cache.put(key, body, etag)
                    await _send_answer(send, body, etag, if_none_match)
                    return
        await self._answer_and_keep(scope, receive, send, path, query, if_none_match)

    def _clearing(self, send: Any) -> Any:
        async def send_clearing(message: _Message) -> None:
            if message["type"] == "http.response.start":
                self.cache.clear()
            await send(message)
        return send_clearing

    async def _answer_and_keep(self, scope: _Scope, receive: Any, send: Any, path: str,
                               query: bytes, if_none_match: bytes | None) -> None:
        start: _Message | None = None
        chunks: list[bytes] = []

        async def capture(message: _Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = list(start.get("headers", []))
            if start["status"] != 200 or not _is_json(headers):
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            etag = etag_of(body)
            principal = (scope.get("state") or {}).get("principal")
            if isinstance(principal, Principal):
                self.cache.put((principal.role.value, path, query), body, etag)
            await _send_answer(send, body, etag, if_none_match)

        await self.app(scope, receive, capture)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"application/json")
               for k, v in headers)


async def _send_answer(send: Any, body: bytes, etag: bytes, if_none_match: bytes | None
                       ) -> None:
    headers = [(b"etag", etag), (b"cache-control", b"no-cache"), (b"vary", b"Authorization")]
    if _etag_matches(if_none_match, etag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [(b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
