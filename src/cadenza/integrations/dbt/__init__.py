"""dbt tasks: `dbt_task(project_dir, select=..., target=...)` runs dbt-core in a task.

Modules: `tasks.py` (the definition side: `dbt_task`, one task per invocation or one per model
with `expand_models=True`), `manifest.py` (the project's digest and manifest graph, read
without dbt), `run.py` (the worker side: `dbtRunner`, results, errors).

This package's `__init__` imports nothing: `run.py` is imported in dbt's own environment,
where only the standard library and Cadenza's core are sure to be importable.
"""
