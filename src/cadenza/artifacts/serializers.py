"""Serializers chosen by the type of a task output, and the registry users extend.

A serializer turns an object into bytes and back. `choose_serializer(obj)` picks the first
registered serializer whose `accepts(obj)` is true, newest registration first, so a
user's `register_serializer` wins over the built-ins; pickle (cloudpickle) is the fallback.
Heavy libraries (numpy, pandas, pyarrow) are imported only when an object of theirs appears.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cadenza.core.errors import ArtifactError


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    accepts: Callable[[Any], bool]
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    extension: str = ""


def is_json_value(obj: Any, _depth: int = 0) -> bool:
    """True when `obj` survives a JSON round trip unchanged (no tuples, no NaN, str keys)."""
    t = type(obj)
    if obj is None or t is bool or t is int or t is str:
        return True
    if t is float:
        return math.isfinite(obj)
    if _depth > 64:
        return False
    if t is list:
        return all(is_json_value(v, _depth + 1) for v in obj)
    if t is dict:
        return all(type(k) is str and is_json_value(v, _depth + 1) for k, v in obj.items())
    return False


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _pickle_dumps(obj: Any) -> bytes:
    import cloudpickle

    data: bytes = cloudpickle.dumps(obj, protocol=5)
    return data


def _pickle_loads(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)


def _type_module(obj: Any) -> str:
    return type(obj).__module__.partition(".")[0]


def _is_numpy(obj: Any) -> bool:
    if _type_module(obj) != "numpy":
        return False
    import numpy as np

    return isinstance(obj, np.ndarray) and obj.dtype != object


def _npy_dumps(obj: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=False)
    return buf.getvalue()


def _npy_loads(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _is_pandas_frame(obj: Any) -> bool:
    if _type_module(obj) != "pandas":
        return False
    import pandas as pd

    return isinstance(obj, pd.DataFrame)


def _parquet_dumps_pandas(obj: Any) -> bytes:
    buf = io.BytesIO()
    obj.to_parquet(buf)
    return buf.getvalue()


def _parquet_loads_pandas(data: bytes) -> Any:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


def _is_arrow_table(obj: Any) -> bool:
    if _type_module(obj) != "pyarrow":
        return False
    import pyarrow as pa

    return isinstance(obj, pa.Table)


def _parquet_dumps_arrow(obj: Any) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(obj, buf)
    return buf.getvalue()


def _parquet_loads_arrow(data: bytes) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data))


JSON = Serializer("json", is_json_value, _json_dumps, json.loads, ".json")
PICKLE = Serializer("pickle", lambda obj: True, _pickle_dumps, _pickle_loads, ".pkl")

_registry: list[Serializer] = [
    Serializer("npy", _is_numpy, _npy_dumps, _npy_loads, ".npy"),
    Serializer("parquet-pandas", _is_pandas_frame, _parquet_dumps_pandas, _parquet_loads_pandas,
               ".parquet"),
    Serializer("parquet-arrow", _is_arrow_table, _parquet_dumps_arrow, _parquet_loads_arrow,
               ".parquet"),
    JSON,
]
_by_name: dict[str, Serializer] = {s.name: s for s in [*_registry, PICKLE]}


def register_serializer(
    type_: type[Any],
    *,
    name: str,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    extension: str = "",
) -> None:
    """Store outputs of `type_` (and subclasses) with your own format.

    Example:
        register_serializer(MyModel, name="mymodel", dumps=MyModel.to_bytes,
                            loads=MyModel.from_bytes, extension=".bin")
    """
    ser = Serializer(name, lambda obj: isinstance(obj, type_), dumps, loads, extension)
    _registry.insert(0, ser)
    _by_name[name] = ser


def choose_serializer(obj: Any) -> Serializer:
    for ser in _registry:
        if ser.accepts(obj):
            return ser
    return PICKLE


def get_serializer(name: str) -> Serializer:
    try:
        return _by_name[name]
    except KeyError:
        raise ArtifactError(
            f"no serializer named '{name}' is registered in this process",
            hint="call register_serializer(...) in the module that defines the task, "
            "so workers register it too",
        ) from None
