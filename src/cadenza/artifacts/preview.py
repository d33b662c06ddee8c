"""Bounded previews of task inputs and outputs, for the API and the UI.

What belongs here: turning a `ValueRef` into a small, JSON-safe description of the value:
the first rows of a DataFrame or Arrow table with its columns, dtypes and shape; the shape,
dtype and first values of a NumPy array; a JSON value cut down to a size; for anything else
its type name and size. What does not: HTTP (the API's schemas wrap `Preview`), loading
whole values (`store.load_value`).

Every preview is bounded whatever the artifact's size: only the header and the first rows
or values are read (Parquet: the footer and the first record batch of the first row group;
.npy: the header and the first values; JSON artifacts are parsed only up to
`MAX_JSON_PARSE_BYTES`, larger ones show their first bytes as text), and what is returned
is capped in rows, columns, items, string lengths and nesting depth (`truncated` says so).

Pickled artifacts (cloudpickle, the fallback serializer) and those of user-registered
serializers are never loaded here. Unpickling runs code named by the bytes, in the
process that unpickles: the server would execute whatever whoever can write to the artifact
store (often a bucket shared more widely than the API's viewers) put there, with the
server's credentials and secret key, for a viewer's GET; it would also have to import the
project's classes and hold the whole object (a 2 GB model) in memory to show one line.
The preview of such an artifact is its recorded type name and size (the worker records
both when it writes it), which is what is safely known without running anything.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any, Literal

from cadenza.core.records import ValueRef

PreviewKind = Literal["json", "dataframe", "table", "array", "opaque", "missing"]

MAX_ROWS = 20
MAX_COLUMNS = 50
MAX_VALUES = 50  # array values, list items, dict keys
MAX_STRING = 500  # characters of one string
MAX_DEPTH = 6
MAX_JSON_PARSE_BYTES = 4 * 1024 * 1024
TEXT_HEAD_BYTES = 4096  # what a JSON artifact too large to parse shows, as text


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    name: str
    dtype: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """A bounded description of one value.

    kind: "json" (`value`), "dataframe"/"table" (`columns`, `rows`, `shape`), "array"
    (`shape`, `dtype`, `values` in storage order), "opaque" (only type and size are known,
    `note` says why), "missing" (the artifact is not in the artifact store).
    `truncated`: something was left out (rows, columns, items, characters, depth).
    """

    kind: PreviewKind
    type_name: str | None = None
    serializer: str | None = None
    size_bytes: int | None = None
    truncated: bool = False
    value: Any = None
    text: str | None = None  # the head of a JSON artifact too large to parse
    columns: tuple[Column, ...] = ()
    rows: list[dict[str, Any]] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    values: list[Any] = field(default_factory=list)
    note: str = ""


def preview_value(ref: ValueRef, *, max_rows: int = MAX_ROWS) -> Preview:
    """A bounded preview of the value `ref` points to (see the module docstring).

    Never raises for what the artifact contains or lacks: a missing file is kind "missing",
    an unreadable or unsupported one kind "opaque" with the reason in `note`.

    Example:
        >>> p = preview_value(ti.output)
        >>> p.kind, p.shape, [c.name for c in p.columns]
        ('dataframe', (1000, 3), ['id', 'amount', 'label'])
    """
    max_rows = max(0, min(max_rows, 500))
    if ref.kind == "json":
        cut = _Cutter()
        return Preview(kind="json", type_name=type(ref.value).__name__, serializer="json",
                       value=cut.value(ref.value), truncated=cut.truncated)
    base = _base(ref)
    if not ref.uri:
        return Preview(kind="opaque", note="the reference names no artifact", **base)
    serializer = ref.serializer or ""
    reader = _READERS.get(serializer)
    if reader is None:
        why = ("pickled artifacts are not loaded by the server (loading runs code)"
               if serializer == "pickle" else
               f"the '{serializer}' serializer is registered by the project; the server does "
               "not run it")
        return Preview(kind="opaque", note=why, **base)
    try:
        fh = _open(ref.uri)
    except FileNotFoundError:
        return Preview(kind="missing", note=f"artifact {ref.uri} is not in the artifact store",
                       **base)
    try:
        with fh:
            return reader(fh, ref, max_rows)
    except FileNotFoundError:
        return Preview(kind="missing", note=f"artifact {ref.uri} is not in the artifact store",
                       **base)
    except ImportError as exc:
        return Preview(kind="opaque", note=f"cannot read it here: {exc.name or exc} is not "
                       "installed in the server (pip install 'cadenza[data]')", **base)
    except (OSError, ValueError, SyntaxError, struct.error, TypeError) as exc:
        # pyarrow's errors derive from these; a damaged file is not the caller's fault.
        return Preview(kind="opaque", note=f"cannot read the artifact: {_short(exc)}", **base)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _open(uri: str) -> IO[bytes]:
    if "://" not in uri or uri.startswith("file://"):
        return open(uri.removeprefix("file://"), "rb")
    import fsspec

    fh: IO[bytes] = fsspec.open(uri, "rb").open()
    return fh


# ---------------------------------------------------------------------------------------------
# Readers, by serializer name


def _read_json(fh: IO[bytes], ref: ValueRef, max_rows: int) -> Preview:
    base = _base(ref)
    head = fh.read(MAX_JSON_PARSE_BYTES + 1)
    if len(head) > MAX_JSON_PARSE_BYTES:
        text = head[:TEXT_HEAD_BYTES].decode("utf-8", errors="replace")
        return Preview(kind="json", text=text, truncated=True,
                       note=f"larger than {MAX_JSON_PARSE_BYTES} bytes: its first "
                       f"{len(text)} characters as text", **base)
    cut = _Cutter()
    value = cut.value(json.loads(head))
    return Preview(kind="json", value=value, truncated=cut.truncated, **base)


def _read_npy(fh: IO[bytes], ref: ValueRef, max_rows: int) -> Preview:
    shape, fortran, descr = _npy_header(fh)
    count = math.prod(shape)
    wanted = min(count, MAX_VALUES)
    values: list[Any] = []
    dtype_text = descr if isinstance(descr, str) else "structured"
    note = "values in Fortran (column-major) order" if fortran and len(shape) > 1 else ""
    try:
        import numpy as np
    except ImportError:
        note = "numpy is not installed in the server: no values shown"
    else:
        dtype = np.dtype(descr)
        dtype_text = str(dtype)
        if wanted and dtype.itemsize:
            data = fh.read(wanted * dtype.itemsize)
            arr = np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)
            cut = _Cutter()
            values = [cut.value(v) for v in arr.tolist()]
    return Preview(kind="array", shape=tuple(shape), dtype=dtype_text, values=values,
                   truncated=count > len(values), note=note, **_base(ref))


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, Any]:
    """(shape, fortran_order, descr) of an .npy file, read without numpy (format 1-3)."""
    magic = fh.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy file")
    major = magic[6]
    if major == 1:
        (length,) = struct.unpack("<H", fh.read(2))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", fh.read(4))
    else:
        raise ValueError(f".npy format version {major} is not known")
    if length > 1024 * 1024:
        raise ValueError(".npy header is implausibly large")
    header = ast.literal_eval(fh.read(length).decode("utf-8" if major == 3 else "latin1"))
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= header.keys():
        raise ValueError(".npy header lacks descr, fortran_order or shape")
    shape = tuple(int(n) for n in header["shape"])
    return shape, bool(header["fortran_order"]), header["descr"]


def _read_parquet(fh: IO[bytes], ref: ValueRef, max_rows: int) -> Preview:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fh)
    schema = pf.schema_arrow
    pandas_meta = _pandas_metadata(schema.metadata)
    # Index columns are stored as columns; a RangeIndex is a dict here and not stored at all.
    hidden = {c for c in (pandas_meta.get("index_columns") or ()) if isinstance(c, str)}
    numpy_types = {
        c.get("field_name"): c.get("numpy_type")
        for c in (pandas_meta.get("columns") or ()) if isinstance(c, dict)
    } if pandas_meta else {}
    names = [n for n in schema.names if n not in hidden]
    shown = names[:MAX_COLUMNS]
    columns = tuple(
        Column(name=str(n), dtype=str(numpy_types.get(n) or schema.field(n).type))
        for n in shown
    )
    rows: list[dict[str, Any]] = []
    cut = _Cutter()
    if max_rows and pf.metadata.num_rows and shown:
        batch = next(pf.iter_batches(batch_size=max_rows, columns=shown), None)
        if batch is not None:
            rows = [{k: cut.value(v) for k, v in r.items()} for r in batch.to_pylist()[:max_rows]]
    num_rows = int(pf.metadata.num_rows)
    kind: PreviewKind = "dataframe" if ref.serializer == "parquet-pandas" else "table"
    return Preview(
        kind=kind, columns=columns, rows=rows, shape=(num_rows, len(names)),
        truncated=cut.truncated or len(rows) < num_rows or len(shown) < len(names),
        **_base(ref),
    )


def _pandas_metadata(meta: dict[bytes, bytes] | None) -> dict[str, Any]:
    raw = (meta or {}).get(b"pandas")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _base(ref: ValueRef) -> dict[str, Any]:
    return {"type_name": ref.type_name, "serializer": ref.serializer, "size_bytes": ref.size}


_READERS = {
    "json": _read_json,
    "npy": _read_npy,
    "parquet-pandas": _read_parquet,
    "parquet-arrow": _read_parquet,
}


# ---------------------------------------------------------------------------------------------
# JSON-safe, bounded values


class _Cutter:
    """Makes values JSON-safe and small; remembers whether anything was cut.

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity" (JSON has no such
    numbers, and a response must never fail to encode); times become ISO strings; bytes a
    base64 head; anything else its repr, cut to MAX_STRING.
    """

    def __init__(self) -> None:
        self.truncated = False

    def text(self, s: str) -> str:
        if len(s) > MAX_STRING:
            self.truncated = True
            return s[:MAX_STRING] + "…"
        return s

    def value(self, v: Any, depth: int = 0) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v if abs(v) < 2**63 else str(v)
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, (datetime, date, time)):
            return v.isoformat()
        if isinstance(v, timedelta):
            return f"{v.total_seconds()}s"
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            data = bytes(v)
            if len(data) > 48:
                self.truncated = True
            return "base64:" + base64.b64encode(data[:48]).decode()
        if depth >= MAX_DEPTH and isinstance(v, (dict, list, tuple)):
            self.truncated = True
            return "…"
        if isinstance(v, dict):
            items = list(v.items())
            if len(items) > MAX_VALUES:
                self.truncated = True
            return {self.text(str(k)): self.value(x, depth + 1) for k, x in items[:MAX_VALUES]}
        if isinstance(v, (list, tuple)):
            if len(v) > MAX_VALUES:
                self.truncated = True
            return [self.value(x, depth + 1) for x in v[:MAX_VALUES]]
        item = getattr(v, "item", None)  # numpy scalars
        if callable(item) and type(v).__module__.partition(".")[0] == "numpy":
            plain = item()
            if type(plain) is not type(v):  # a datetime64 without a Python equivalent stays
                return self.value(plain, depth)
        return self.text(repr(v))
