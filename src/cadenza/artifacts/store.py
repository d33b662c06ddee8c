"""The artifact store: task outputs as content-addressed files behind an fsspec URL.

An artifact's name is the SHA-256 of its bytes (`<root>/ab/abcdef....<ext>`), so writing the
same output twice stores it once, and a read can verify what it got. Writes go to a temporary
name first and are renamed into place: a crash never leaves a half artifact under its final
name. Small JSON-able outputs never come here: `store_value` keeps them inline in the
`ValueRef` (and so in the metadata store).

Object storage: the root may be any fsspec URL whose filesystem is installed (`s3://` needs
`cadenza[s3]`, `gs://` needs `cadenza[gcs]`); `check_root` says which before a run starts.
Credentials and endpoints are the filesystem's own: for S3, the AWS variables and files
(AWS_ENDPOINT_URL for MinIO, moto or another S3 API server), or fsspec's configuration
(FSSPEC_S3_ENDPOINT_URL, ~/.config/fsspec/).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from typing import Any

from cadenza.artifacts.serializers import (
    choose_serializer,
    get_serializer,
    is_json_value,
)
from cadenza.core.errors import ArtifactError, ConfigError
from cadenza.core.results import ValueRef


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


class ArtifactStore:
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self._is_local = "://" not in root or root.startswith("file://")
        self._local_root = root.removeprefix("file://")
        self._fs: Any = None
        self._made: set[str] = set()

    # -- paths ----------------------------------------------------------------------------
    def uri_for(self, sha256: str, extension: str) -> str:
        return f"{self.root}/{sha256[:2]}/{sha256}{extension}"

    def _filesystem(self) -> Any:
        if self._fs is None:
            import fsspec

            self._fs, _ = fsspec.core.url_to_fs(self.root)
        return self._fs

    # -- writing --------------------------------------------------------------------------
    def put_bytes(self, data: bytes, extension: str) -> tuple[str, str]:
        sha = hashlib.sha256(data).hexdigest()
        uri = self.uri_for(sha, extension)
        if self._is_local:
            path = f"{self._local_root.rstrip('/')}/{sha[:2]}/{sha}{extension}"
            if os.path.exists(path) and _touch(path):
                return uri, sha
            folder = os.path.dirname(path)
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return uri, sha
        fs = self._filesystem()
        if fs.exists(uri):
            return uri, sha
        tmp = f"{uri}.tmp-{uuid.uuid4().hex[:8]}"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, uri)
        return uri, sha

    def put(self, obj: Any) -> ValueRef:
        ser = choose_serializer(obj)
        data = ser.dumps(obj)
        uri, sha = self.put_bytes(data, ser.extension)
        return ValueRef(
            kind="artifact",
            uri=uri,
            sha256=sha,
            serializer=ser.name,
            size=len(data),
            type_name=_type_name(obj),
        )

    # -- reading --------------------------------------------------------------------------
    def get_bytes(self, uri: str) -> bytes:
        if self._is_local and not uri.startswith(("memory://", "s3://", "gs://")):
            path = uri.removeprefix("file://")
            with open(path, "rb") as fh:
                return fh.read()
        import fsspec

        with fsspec.open(uri, "rb") as fh:
            data: bytes = fh.read()
        return data

    def get(self, ref: ValueRef) -> Any:
        if ref.kind == "json":
            return ref.value
        assert ref.uri is not None
        try:
            data = self.get_bytes(ref.uri)
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"artifact {ref.uri} is missing",
                hint="resume the run so the task that produced it runs again",
            ) from exc
        if ref.sha256 and hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ArtifactError(
                f"artifact {ref.uri} is corrupted (its SHA-256 does not match)",
                hint="resume the run so the task that produced it runs again",
            )
        return get_serializer(ref.serializer or "pickle").loads(data)


    # -- retention ------------------------------------------------------------------------
    def delete(self, uri: str, *, grace_s: float, dry_run: bool = False) -> int | None:
        """Delete the artifact at `uri` unless it was written or reused in the last
        `grace_s` seconds. The bytes freed (0 if it was already gone), or None if kept.

        The caller has checked that no committed row references it; what remains is a run
        writing (or reusing through the cache) the same bytes right now, which touches the
        file. A local file is moved aside first and its mtime read there: a writer either
        touched it before (the file is put back) or finds it gone and writes it again. On
        remote filesystems (no atomic rename-and-check) only the modification time counts.
        With `dry_run`, nothing is deleted: the size it would free, or None.
        """
        import time

        if self._is_local and "://" not in uri.removeprefix("file://"):
            path = uri.removeprefix("file://")
            if dry_run:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    return 0
                return None if time.time() - st.st_mtime < grace_s else st.st_size
            aside = f"{path}.gc-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return 0
            st = os.stat(aside)
            if time.time() - st.st_mtime < grace_s:
                os.replace(aside, path)  # a writer may have re-created it: same bytes
                return None
            os.remove(aside)
            return st.st_size
        fs = self._filesystem()
        try:
            info = fs.info(uri)
        except FileNotFoundError:
            return 0
        modified = _modified_ts(info)
        if modified is not None and time.time() - modified < grace_s:
            return None
        if not dry_run:
            fs.rm(uri)
        return int(info.get("size") or 0)


def _touch(path: str) -> bool:
    """Mark a reused local artifact as just used (see `ArtifactStore.delete`); False if it
    vanished meanwhile (gc moved it aside): then it must be written again."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _modified_ts(info: dict[str, Any]) -> float | None:
    value = info.get("mtime") or info.get("LastModified") or info.get("updated")
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return float(value.timestamp()) if hasattr(value, "timestamp") else None


def claim_artifact(uri: str | None) -> bool:
    """True if the artifact at `uri` exists, marking it as just reused (a cache hit is about
    to reference it, and gc must not delete it meanwhile; see `ArtifactStore.delete`)."""
    if not uri:
        return False
    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        return os.path.exists(path) and _touch(path)
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return bool(fs.exists(path))


# fsspec protocols whose implementation ships in a Cadenza extra: protocol -> (package, extra).
_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
           "gcs": ("gcsfs", "gcs")}
_checked: set[str] = set()


def check_root(root: str, *, pipeline: str | None = None) -> None:
    """Fail now, with the install command, when the filesystem of `root` is not installed.

    Called by the engine before a run starts: without it, the first task with a large
    output would fail mid-run. A local folder needs nothing; the answer is remembered."""
    if "://" not in root or root.startswith("file://") or root in _checked:
        return
    import fsspec

    protocol = root.split("://", 1)[0]
    package, extra = _EXTRAS.get(protocol, (None, None))
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        fix = (f"pip install 'cadenza[{extra}]'" if extra
               else f"install the fsspec implementation of {protocol}:// ({exc})")
        what = package or f"the {protocol}:// filesystem"
        raise ConfigError(f"artifact root {root}: {what} is not installed", pipeline=pipeline,
                          hint=f"{fix}; or set artifact_root in cadenza.toml "
                          "(CADENZA_ARTIFACT_ROOT) to a local folder") from exc
    except ValueError as exc:
        raise ConfigError(
            f"artifact root {root}: fsspec knows no filesystem for {protocol}://",
            pipeline=pipeline,
            hint="use a local folder, s3://bucket/prefix (pip install 'cadenza[s3]'), "
            "gs://bucket/prefix (pip install 'cadenza[gcs]') or another fsspec URL; set "
            "artifact_root in cadenza.toml or CADENZA_ARTIFACT_ROOT") from exc
    _checked.add(root)


_stores: dict[str, ArtifactStore] = {}
_lock = threading.Lock()


def artifact_store(root: str) -> ArtifactStore:
    """The process's store for `root` (one per root, reused)."""
    with _lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = ArtifactStore(root)
        return store


def store_value(obj: Any, *, root: str, inline_limit_bytes: int) -> ValueRef:
    """Keep a small JSON-able value inline; write anything else to the artifact store."""
    if is_json_value(obj):
        if obj is None or type(obj) in (bool, int, float):
            return ValueRef(kind="json", value=obj)
        import json

        size = len(json.dumps(obj, separators=(",", ":")))
        if size <= inline_limit_bytes:
            return ValueRef(kind="json", value=obj)
    return artifact_store(root).put(obj)


def load_value(ref: ValueRef, *, root: str) -> Any:
    if ref.kind == "json":
        return ref.value
    return artifact_store(root).get(ref)
