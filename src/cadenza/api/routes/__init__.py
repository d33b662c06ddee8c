"""One router module per resource (pipelines, runs, ...); `api/app.py` mounts them."""
