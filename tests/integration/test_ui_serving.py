"""`cadenza server` serves the web UI at / (api/ui.py): the app for every client-side URL,
the hashed bundles with long caching, and never the app for an API path."""

from __future__ import annotations

import re

from tests.fixtures.server import LiveServer


def test_root_and_client_side_urls_answer_the_app(ui_server: LiveServer) -> None:
    c = ui_server.client
    for path in ("/", "/pipelines/etl", "/runs/0123abcd", "/runs/x/tasks/y?map_index=2"):
        res = c.get(path)
        assert res.status_code == 200, path
        assert res.headers["content-type"].startswith("text/html")
        assert '<div id="root"></div>' in res.text
        assert res.headers["cache-control"] == "no-cache"


def test_bundles_are_served_with_immutable_caching(ui_server: LiveServer) -> None:
    html = ui_server.client.get("/").text
    js = re.search(r'src="(/assets/[^"]+\.js)"', html)
    assert js, html
    res = ui_server.client.get(js.group(1))
    assert res.status_code == 200
    assert "javascript" in res.headers["content-type"]
    assert "immutable" in res.headers["cache-control"]


def test_api_paths_never_fall_back_to_the_app(ui_server: LiveServer) -> None:
    c = ui_server.client
    res = c.get("/api/v1/no-such-thing")
    assert res.status_code == 404
    assert res.headers["content-type"].startswith("application/json")
    assert c.post("/somewhere").status_code in (404, 405)
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/api/v1/pipelines").status_code == 200


def test_a_path_outside_the_build_is_not_served(ui_server: LiveServer) -> None:
    res = ui_server.client.get("/assets/%2e%2e/%2e%2e/__init__.py")
    assert res.status_code == 200
    assert '<div id="root"></div>' in res.text  # the app, not a file from the package
