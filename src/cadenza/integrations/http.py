"""The runtime of `@task.http` and `http_task` (SPEC §9): one request with httpx.

What belongs here: building the request (headers may name `secret://NAME` or `env://NAME`),
sending it, and deciding what a failure is. A 5xx answer (and 408, 429), a timeout or a
connection error raises HttpUnavailable, which the task's `retries` retry (with its delay,
backoff and jitter: the engine's retry policy, not a second one here); a 4xx raises
HttpFailed at once with the status and the start of the body. The answer is parsed as JSON
(`output="json"`), kept as text (`"text"`) or dropped (`"none"`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from cadenza.core.context import task_where
from cadenza.core.errors import HttpFailed, HttpUnavailable
from cadenza.integrations.references import resolve_embedded

_BODY_EXCERPT = 300
RETRYABLE_STATUSES = frozenset({408, 429})
_FIELDS = ("url", "method", "params", "json", "data", "headers")


def _request(request: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The request's fields from what the task's function returned (a URL or a dict of
    fields) or http_task's arguments, over the decorator's defaults."""
    if isinstance(request, str):
        request = {"url": request}
    if not isinstance(request, Mapping):
        raise HttpFailed(f"the task gave {type(request).__name__} {request!r:.200}, not a "
                         "request", **task_where(),
                         hint='return a URL ("https://api.example.com/x") or a dict: '
                         '{"url": ..., "method": "POST", "json": {...}}')
    unknown = sorted(set(request) - set(_FIELDS))
    if unknown:
        raise HttpFailed(f"unknown request field(s) {', '.join(map(repr, unknown))}",
                         **task_where(), hint=f"the fields are: {', '.join(_FIELDS)}")
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise HttpFailed(f"the request has no URL (got {url!r:.200})", **task_where(),
                         hint='give "url": "https://..."')
    headers = {**(config.get("headers") or {}), **(request.get("headers") or {})}
    return {
        "method": str(request.get("method") or config.get("method") or "GET").upper(),
        "url": url,
        "params": request.get("params"),
        "json": request.get("json"),
        "data": request.get("data"),
        "headers": {str(k): resolve_embedded(str(v), f"header {k}", HttpFailed)
                    for k, v in headers.items()},
    }


@functools.cache
def _tls_context() -> Any:
    """One TLS context per process: building it (loading the CA bundle) costs ~0.2-0.3 s,
    more than a local request, and httpx would build one per client."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_EXCERPT else text[: _BODY_EXCERPT - 3] + "..."


def run_http(request: Any, config: Mapping[str, Any]) -> Any:
    """Send the request a task asked for; see the module docstring.

    Outcomes, by case:
      1. 2xx/3xx -> the body as JSON (None when empty), text, or None (`output`);
      2. 5xx, 408, 429, a timeout, a refused or dropped connection -> HttpUnavailable;
      3. another 4xx -> HttpFailed with the status and the body's start (no retry);
      4. a body that is not JSON with output="json" -> HttpFailed naming output="text";
      5. a URL httpx cannot use (no scheme, unknown scheme) -> HttpFailed.
    """
    import httpx

    req = _request(request, config)
    method, url = req["method"], req["url"]
    timeout = float(config.get("request_timeout") or 30.0)
    started = time.monotonic()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True,
                          verify=_tls_context()) as client:
            resp = client.request(method, url, params=req["params"], json=req["json"],
                                  data=req["data"], headers=req["headers"])
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise HttpFailed(f"{method} {url}: not a URL httpx can fetch: {exc}", **task_where(),
                         hint='use an http:// or https:// URL') from None
    except httpx.TimeoutException:
        raise HttpUnavailable(f"{method} {url} got no answer within {timeout:g} s",
                              **task_where(),
                              hint="raise request_timeout=, or give the task retries=N to try "
                              "again") from None
    except httpx.TransportError as exc:
        raise HttpUnavailable(f"{method} {url} could not connect: {exc or type(exc).__name__}",
                              **task_where(),
                              hint="check that the server is up and the URL is right; with "
                              "retries=N the task tries again") from None
    took = time.monotonic() - started
    status = resp.status_code
    url = str(resp.request.url)  # with its query parameters
    print(f"[cadenza] http {method} {url} -> {status} {resp.reason_phrase} "
          f"({len(resp.content)} bytes in {took:.3f} s)", flush=True)
    if status >= 400:
        body = _excerpt(resp.text)
        what = f"{method} {url} answered {status} {resp.reason_phrase}" + \
            (f": {body}" if body else "")
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise HttpUnavailable(what, **task_where(),
                                  hint="the server failed or is overloaded; with retries=N the "
                                  "task tries again")
        raise HttpFailed(what, **task_where(),
                         hint="the server refused the request: check its URL, parameters, "
                         "body and credentials (a 4xx is not retried)")
    output = config.get("output", "json")
    if output == "none":
        return None
    if output == "text":
        return resp.text
    if not resp.content.strip():
        return None
    try:
        return resp.json()
    except ValueError:
        kind = resp.headers.get("content-type", "unknown type")
        raise HttpFailed(f"{method} {url} answered {status} with a body that is not JSON "
                         f"({kind}): {_excerpt(resp.text)}", **task_where(),
                         hint='@task.http(output="text") (or http_task(..., output="text")) '
                         "returns the body as text") from None
