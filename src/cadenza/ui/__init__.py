"""The web UI: the built single-page app in `static/` (index.html and hashed assets).

Holds files only, no code: its TypeScript source is `frontend/` at the repository root
(`make ui` rebuilds `static/`, committed so that pip users need no Node). The server
serves it at `/` (api/ui.py finds the folder as package data of `cadenza`, so the api
never imports this package); the UI talks only to the public REST API and its events.
"""
