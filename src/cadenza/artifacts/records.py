"""Small named files of one run under the artifact root (fsspec): what cluster steps record
when they cannot reach the metadata store.

What belongs here: reading and writing `<root>/<folder>/<run id>/<name>` atomically enough
for one writer per name (each task instance's step writes its own file). What does not: what
the files say (engine/step_records.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from cadenza.core.errors import ArtifactError


class RecordFiles:
    def __init__(self, root: str, folder: str) -> None:
        self.base = f"{root.rstrip('/')}/{folder}"
        self._fs: Any = None

    def _filesystem(self) -> Any:
        if self._fs is None:
            import fsspec

            self._fs, _ = fsspec.core.url_to_fs(self.base)
        return self._fs

    def _path(self, run_id: str, name: str = "") -> str:
        return f"{self.base}/{run_id}/{name}" if name else f"{self.base}/{run_id}"

    def write(self, run_id: str, name: str, data: bytes) -> None:
        fs = self._filesystem()
        path = self._path(run_id, name)
        try:
            fs.makedirs(self._path(run_id), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        except OSError as exc:
            raise ArtifactError(f"cannot write the record {path}: {exc}",
                                hint="check the artifact root's credentials and that "
                                "the bucket exists") from exc

    def read(self, run_id: str, name: str) -> bytes | None:
        fs = self._filesystem()
        path = self._path(run_id, name)
        try:
            data: bytes = fs.cat_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read the record {path}: {exc}",
                                hint="check the artifact root's credentials") from exc
        return data

    def read_all(self, run_id: str) -> dict[str, bytes]:
        """Every record of the run by name (not the temporary files of a write)."""
        fs = self._filesystem()
        folder = self._path(run_id)
        try:
            fs.invalidate_cache(folder)
            names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return {}
        out: dict[str, bytes] = {}
        for name in sorted(names):
            if ".tmp-" in name:
                continue
            data = self.read(run_id, name)
            if data is not None:
                out[name] = data
        return out


__all__ = ["RecordFiles"]
