"""Settings from the environment (CADENZA_*) and `cadenza.toml`.

Precedence: explicit environment variable > cadenza.toml (found by walking up from the
current folder) > defaults. We read them by hand instead of with pydantic-settings: its import
alone costs ~250 ms on the 2-core CI machine (measured with `python -X importtime`), more than
our whole budget for `import cadenza`.

Keys of cadenza.toml (all optional):
    pipelines = ["pipelines/"]      folders or files to search for pipelines
    home = ".cadenza"               CADENZA_HOME
    database_url = "sqlite:///..."  CADENZA_DATABASE_URL
    artifact_root = "..."           CADENZA_ARTIFACT_ROOT (a folder or an fsspec URL:
                                    s3://bucket/prefix with cadenza[s3], gs://... with
                                    cadenza[gcs]; endpoints/credentials: AWS_ENDPOINT_URL...)
    executor = "processes"          CADENZA_EXECUTOR (inline, threads, processes, ray;
                                    ray connects to CADENZA_RAY_ADDRESS)
    lease_s = 30                    CADENZA_LEASE_S: a driver silent this long is dead
                                    (its run shows `crashed`; resume/scheduler take it over)
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cadenza.core.errors import ConfigError

CONFIG_FILE = "cadenza.toml"
EXECUTORS = ("inline", "threads", "processes", "ray")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    project_root: Path
    home: Path
    database_url: str
    artifact_root: str
    executor: str = "processes"
    pipelines: tuple[str, ...] = ()
    inline_limit_bytes: int = 64 * 1024
    config_file: Path | None = None
    gpus: tuple[str, ...] | None = None  # CADENZA_GPUS; None = detect
    lease_s: float = 30.0  # CADENZA_LEASE_S: see engine/lease.py
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def find_config(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix the syntax of cadenza.toml"
        ) from exc
    section = data.get("tool", {}).get("cadenza") if "tool" in data else None
    return dict(section or data)


def load_settings(start: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    config_file = find_config(start)
    conf: dict[str, Any] = _read_toml(config_file) if config_file else {}
    root = config_file.parent if config_file else (start or Path.cwd()).resolve()

    home_raw = env.get("CADENZA_HOME") or conf.get("home") or ".cadenza"
    home = Path(home_raw)
    if not home.is_absolute():
        home = (root / home).resolve()

    db = env.get("CADENZA_DATABASE_URL") or conf.get("database_url")
    if not db:
        db = f"sqlite:///{home / 'cadenza.db'}"
    artifacts = env.get("CADENZA_ARTIFACT_ROOT") or conf.get("artifact_root")
    if not artifacts:
        artifacts = str(home / "artifacts")
    executor = env.get("CADENZA_EXECUTOR") or conf.get("executor") or "processes"
    if executor not in EXECUTORS:
        raise ConfigError(
            f"unknown executor '{executor}'", hint=f"use one of: {', '.join(EXECUTORS)}"
        )
    pipelines = conf.get("pipelines", [])
    if isinstance(pipelines, str):
        pipelines = [pipelines]
    gpus_raw = env.get("CADENZA_GPUS")
    gpus = None
    if gpus_raw is not None:
        gpus = tuple(g.strip() for g in gpus_raw.split(",") if g.strip())
    limit = int(env.get("CADENZA_INLINE_LIMIT_BYTES") or conf.get("inline_limit_bytes") or 65536)
    lease_raw = env.get("CADENZA_LEASE_S") or conf.get("lease_s") or 30.0
    try:
        lease_s = float(lease_raw)
    except (TypeError, ValueError):
        lease_s = -1.0
    if not lease_s > 0:
        raise ConfigError(f"lease_s must be a number of seconds above 0, not {lease_raw!r}",
                          hint="set CADENZA_LEASE_S (or lease_s in cadenza.toml) to e.g. 30")
    return Settings(
        project_root=root,
        home=home,
        database_url=str(db),
        artifact_root=str(artifacts),
        executor=str(executor),
        pipelines=tuple(str(p) for p in pipelines),
        inline_limit_bytes=limit,
        config_file=config_file,
        gpus=gpus,
        lease_s=lease_s,
        extra={k: v for k, v in conf.items() if k not in _KNOWN},
    )


_KNOWN = {"home", "database_url", "artifact_root", "executor", "pipelines", "inline_limit_bytes",
          "lease_s"}
_current: Settings | None = None
_lock = threading.Lock()


def get_settings() -> Settings:
    """The process's settings, loaded once on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = load_settings()
        return _current


def set_settings(settings: Settings | None) -> None:
    """Replace the process's settings (tests, the CLI after parsing options)."""
    global _current
    with _lock:
        _current = settings


def override(**changes: Any) -> Settings:
    s = replace(get_settings(), **changes)
    set_settings(s)
    return s
