"""What an attempt produces, as plain records: where its output lives (`ValueRef`) and how it
failed (`ErrorInfo`, of an `ErrorKind`).

Split from core/records.py (which re-exports them) so that a worker process, which builds
and sends only these, does not import the store's and the engine's records: nine more
frozen dataclasses, ~50 M instructions of the forkserver's preload on a one-task script's
critical path (bench/cold_start.py). Frozen, slotted, keyword-only, picklable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cadenza.core.frozen import fast_init


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ValueRef:
    """Where a task output lives.

    kind "json": the value itself, small and JSON-able, stored in the metadata store.
    kind "artifact": a content-addressed object in the artifact store (uri, sha256).
    """

    kind: str
    value: Any = None
    uri: str | None = None
    sha256: str | None = None
    serializer: str | None = None
    size: int | None = None
    type_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.kind == "json":
            return {"kind": "json", "value": self.value}
        return {
            "kind": self.kind,
            "uri": self.uri,
            "sha256": self.sha256,
            "serializer": self.serializer,
            "size": self.size,
            "type_name": self.type_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValueRef:
        if data["kind"] == "json":
            return cls(kind="json", value=data.get("value"))
        return cls(
            kind=data["kind"],
            uri=data.get("uri"),
            sha256=data.get("sha256"),
            serializer=data.get("serializer"),
            size=data.get("size"),
            type_name=data.get("type_name"),
        )


class ErrorKind(enum.StrEnum):
    """What kind of failure an ErrorInfo records. Stored and shown as these strings."""

    EXCEPTION = "exception"  # the task's code raised
    TIMEOUT = "timeout"  # the attempt ran past its timeout (or a sensor's wait did)
    CANCELLED = "cancelled"  # the run was cancelled, or the executor shut down, mid-attempt
    WORKER_LOST = "worker_lost"  # the process running the attempt died
    INTERRUPTED = "interrupted"  # the driver died mid-attempt; resume found it unfinished
    SERIALIZATION = "serialization"  # inputs or the return value could not cross processes
    INPUT = "input"  # an input could not be loaded (artifact missing or corrupted)
    ARTIFACT_WRITE = "artifact_write"  # the output could not be written to the artifact store
    RESOURCES = "resources"  # the task asks for more cpu, memory or GPUs than the machine has
    BRANCH = "branch"  # a branch task returned task ids that are not its downstreams
    UNKNOWN = "unknown"  # a stored kind this version does not know (read from a newer one)

    @classmethod
    def parse(cls, text: str) -> ErrorKind:
        """The member named by a stored string; UNKNOWN for a string this version lacks."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """A failure, as recorded: enough to render it without the original exception."""

    kind: ErrorKind
    type: str  # qualified exception class name
    message: str
    traceback: str = ""
    type_mro: tuple[str, ...] = ()  # qualified names, for retry_on matching across processes

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "type_mro": list(self.type_mro),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            kind=ErrorKind.parse(data.get("kind", ErrorKind.EXCEPTION)),
            type=data.get("type", ""),
            message=data.get("message", ""),
            traceback=data.get("traceback", ""),
            type_mro=tuple(data.get("type_mro", ())),
        )

    def first_line(self) -> str:
        line = self.message.strip().splitlines()[0] if self.message.strip() else ""
        short = self.type.rsplit(".", 1)[-1]
        return f"{short}: {line}" if line else short
