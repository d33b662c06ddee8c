"""Integrations with ML tools: MLflow tracking and registry, pandera data checks, apprise
notifications.

What belongs here: thin adapters that turn a third-party library into a Cadenza hook
(`core.tracking.Tracker`, a task callback) or a task helper, and translate that library's
errors into CadenzaErrors. What does not: anything the engine must know about; the engine
only sees the protocols in `core`.

Every third-party import happens inside a function, so importing this package (and
`import cadenza`) costs nothing; each module is imported on first use of its names.
"""
