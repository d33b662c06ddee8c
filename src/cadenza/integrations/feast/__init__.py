"""Feast tasks: `feast_materialize(repo_path, start, end)` loads features into the online
store; `feast_historical_features(repo_path, entity_df, features)` reads a point-in-time
correct training frame from the offline store.

Modules: `tasks.py` (the definition side), `run.py` (the worker side, importing Feast).
This package's `__init__` imports nothing: `run.py` is imported in Feast's own environment,
where only the standard library and Cadenza's core are sure to be importable.
"""
