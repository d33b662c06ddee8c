"""Bounded previews of stored values (artifacts/preview.py): DataFrames, Arrow tables, NumPy
arrays, JSON (inline and as artifacts), and the types the server never loads."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cadenza.artifacts import preview as pv
from cadenza.artifacts.preview import preview_value
from cadenza.artifacts.store import ArtifactStore
from cadenza.core.records import ValueRef


@pytest.fixture
def arts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def test_dataframe_shows_first_rows_columns_dtypes_and_shape(arts: ArtifactStore) -> None:
    df = pd.DataFrame({
        "id": range(1000),
        "amount": [float(i) / 3 for i in range(1000)],
        "label": ["x" * 600 if i == 1 else f"row{i}" for i in range(1000)],
        "when": pd.date_range("2026-01-01", periods=1000, freq="h", tz="UTC"),
    })
    df.loc[2, "amount"] = math.nan
    ref = arts.put(df)
    p = preview_value(ref, max_rows=5)
    assert p.kind == "dataframe" and p.serializer == "parquet-pandas"
    assert p.shape == (1000, 4)
    dtypes = {c.name: c.dtype for c in p.columns}
    assert list(dtypes) == ["id", "amount", "label", "when"]
    assert dtypes["id"] == "int64" and dtypes["amount"] == "float64"
    assert dtypes["when"].startswith("datetime64")
    assert len(p.rows) == 5 and p.truncated
    assert p.rows[0]["id"] == 0 and p.rows[3]["amount"] == pytest.approx(1.0)
    assert p.rows[2]["amount"] is None  # pandas stores a NaN float as a Parquet null
    assert len(p.rows[1]["label"]) == pv.MAX_STRING + 1  # cut, with an ellipsis
    assert p.rows[0]["when"].startswith("2026-01-01T00:00:00")
    json.dumps(p.rows, allow_nan=False)
    assert p.size_bytes == ref.size and p.type_name == "pandas.DataFrame"


def test_dataframe_index_columns_are_left_out_and_columns_capped(arts: ArtifactStore) -> None:
    wide = pd.DataFrame({f"c{i}": [i, i + 1] for i in range(pv.MAX_COLUMNS + 10)})
    wide.index = pd.Index(["a", "b"], name="key")
    p = preview_value(arts.put(wide))
    assert p.shape == (2, pv.MAX_COLUMNS + 10)
    assert len(p.columns) == pv.MAX_COLUMNS and "key" not in [c.name for c in p.columns]
    assert p.rows == [{f"c{i}": i + r for i in range(pv.MAX_COLUMNS)} for r in (0, 1)]
    assert p.truncated


def test_arrow_table(arts: ArtifactStore) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", None]})
    p = preview_value(arts.put(table))
    assert p.kind == "table" and p.shape == (3, 2)
    assert [(c.name, c.dtype) for c in p.columns] == [("a", "int64"), ("b", "string")]
    assert p.rows == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": None}]
    assert not p.truncated


def test_numpy_array_shape_dtype_and_first_values(arts: ArtifactStore) -> None:
    arr = np.arange(600, dtype=np.float32).reshape(20, 30)
    p = preview_value(arts.put(arr))
    assert p.kind == "array" and p.shape == (20, 30) and p.dtype == "float32"
    assert p.values == [float(i) for i in range(pv.MAX_VALUES)] and p.truncated
    small = preview_value(arts.put(np.array([[1, 2], [3, 4]], dtype=np.int64, order="F")))
    assert small.shape == (2, 2) and small.dtype == "int64" and not small.truncated
    assert sorted(small.values) == [1, 2, 3, 4]
    scalar = preview_value(arts.put(np.array(7.5)))
    assert scalar.shape == () and scalar.values == [7.5]


def test_numpy_datetimes_and_structured_arrays_encode(arts: ArtifactStore) -> None:
    times = preview_value(arts.put(np.array(["2026-01-01", "NaT"], dtype="datetime64[ns]")))
    assert times.dtype == "datetime64[ns]" and len(times.values) == 2
    rec = preview_value(arts.put(np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")])))
    assert rec.shape == (3,) and rec.values == [[0, 0.0]] * 3
    json.dumps([times.values, rec.values], allow_nan=False)


def test_json_values_are_cut_to_size() -> None:
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(pv.MAX_DEPTH + 2):
        deep = {"d": deep}
    ref = ValueRef(kind="json", value={"items": list(range(500)), "deep": deep, "s": "y" * 5000})
    p = preview_value(ref)
    assert p.kind == "json" and p.truncated
    assert p.value["items"] == list(range(pv.MAX_VALUES))
    assert len(p.value["s"]) == pv.MAX_STRING + 1
    assert "…" in json.dumps(p.value["deep"], ensure_ascii=False)
    small = preview_value(ValueRef(kind="json", value=[1, "two", None]))
    assert small.value == [1, "two", None] and not small.truncated


def test_json_artifact_parsed_when_small_and_shown_as_text_when_huge(
        arts: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    big_list = list(range(3000))
    p = preview_value(arts.put(big_list))  # JSON-able, stored as an artifact
    assert p.kind == "json" and p.serializer == "json"
    assert p.value == list(range(pv.MAX_VALUES)) and p.truncated
    monkeypatch.setattr(pv, "MAX_JSON_PARSE_BYTES", 1000)
    monkeypatch.setattr(pv, "TEXT_HEAD_BYTES", 100)
    huge = preview_value(arts.put(list(range(5000))))
    assert huge.value is None and huge.text is not None and huge.text.startswith("[0,1,2")
    assert len(huge.text) == pv.TEXT_HEAD_BYTES and huge.truncated


class _Trap:
    """Unpickling this writes a file: a preview must never do it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (_touch, (self.path, "unpickled"))


def _touch(path: str, text: str) -> None:
    Path(path).write_text(text)


def test_pickled_artifacts_are_never_loaded(arts: ArtifactStore, tmp_path: Path) -> None:
    marker = tmp_path / "was-unpickled"
    ref = arts.put(_Trap(str(marker)))
    assert ref.serializer == "pickle"
    p = preview_value(ref)
    assert p.kind == "opaque" and "not loaded" in p.note
    assert p.type_name is not None and p.type_name.endswith("_Trap")
    assert p.size_bytes == ref.size and p.size_bytes
    assert not marker.exists()


def test_missing_and_damaged_artifacts_are_described_not_raised(arts: ArtifactStore) -> None:
    ref = arts.put(np.arange(10))
    assert ref.uri is not None
    with open(ref.uri, "r+b") as fh:
        fh.write(b"garbage!")
    damaged = preview_value(ref)
    assert damaged.kind == "opaque" and "cannot read" in damaged.note
    os.remove(ref.uri)
    gone = preview_value(ref)
    assert gone.kind == "missing" and ref.uri in gone.note
    custom = preview_value(ValueRef(kind="artifact", uri=ref.uri, serializer="mymodel",
                                    size=3, type_name="x.Model"))
    assert custom.kind == "opaque" and "mymodel" in custom.note


def test_non_finite_floats_become_strings_so_responses_encode(arts: ArtifactStore) -> None:
    p = preview_value(arts.put(np.array([1.0, math.nan, math.inf, -math.inf])))
    assert p.values == [1.0, "NaN", "Infinity", "-Infinity"]
    table = preview_value(arts.put(pa.table({"x": pa.array([math.nan, 2.0])})))
    assert table.rows == [{"x": "NaN"}, {"x": 2.0}]
