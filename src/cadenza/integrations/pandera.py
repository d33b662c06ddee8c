"""Data validation with pandera: `validate(df, schema)` inside a task.

What belongs here: running a pandera schema on a data frame and, when it fails, turning
pandera's failure cases into a report a person reads in the task's error (which columns,
which checks, a few failing values and rows, how many rows fail). What does not: schemas
themselves (users write them with pandera) or retry decisions (a failed check is a normal
task failure; the engine decides).

pandera is imported on first call, never at `import cadenza`.
"""

from __future__ import annotations

from typing import Any

from cadenza.integrations.errors import DataValidationError, task_location

_MAX_GROUPS = 12  # (column, check) lines shown; the rest are counted
_MAX_VALUE_CHARS = 40


def _pandera() -> Any:
    try:
        from pandera import errors
    except ImportError as exc:
        pipeline, task = task_location()
        raise DataValidationError(
            "pandera is not installed in this environment", pipeline=pipeline, task=task,
            hint="pip install 'cadenza[ml]' (or pip install pandera)") from exc
    return errors


def _schema_name(schema: Any) -> str:
    name = getattr(schema, "name", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(schema, type):
        return schema.__name__
    return type(schema).__name__


def _short(value: Any) -> str:
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()  # numpy scalar -> Python, for a plain repr
        except (ValueError, TypeError):
            pass
    text = repr(value)
    if isinstance(value, float) and len(text) > 10:
        text = f"{value:.6g}"
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _is_null(value: Any) -> bool:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list-like value: not a missing index
        return False


def _describe(column: str, check: str, cases: Any) -> str:
    """One line for one (column, check) pair."""
    where = f"column '{column}'" if column else "data frame"
    values = [(row["failure_case"], row["index"]) for _, row in cases.iterrows()]
    count = len(values)
    if check == "column_in_dataframe":
        missing = ", ".join(f"'{v}'" for v, _ in values)
        return f"column {missing}: missing (the schema requires it)"
    if check.startswith("dtype("):
        got = ", ".join(sorted({str(v) for v, _ in values})) or "?"
        return f"{where}: wrong type, expected {check[6:-1]}, got {got}"
    if check == "not_nullable":
        return f"{where}: {count} null value{'s' if count != 1 else ''} (the column is not nullable)"
    examples = []
    for value, index in values[:3]:
        where_row = "" if _is_null(index) else f" (row {_short(index)})"
        examples.append(f"{_short(value)}{where_row}")
    more = f", ... {count - 3} more" if count > 3 else ""
    noun = "value fails" if count == 1 else "values fail"
    return f"{where}: {count} {noun} {check}: {', '.join(examples)}{more}"


def _report(df: Any, schema_name: str, cases: Any, max_rows: int) -> tuple[str, int]:
    """(report text, number of failing rows)."""
    import pandas as pd

    if not isinstance(cases, pd.DataFrame) and hasattr(cases, "to_pandas"):
        cases = cases.to_pandas()
    cases = cases.copy()
    cases["column"] = cases["column"].map(lambda c: "" if _is_null(c) or c == schema_name
                                          else str(c))
    cases["check"] = cases["check"].map(lambda c: "" if _is_null(c) else str(c))
    groups = list(cases.groupby(["column", "check"], sort=False, dropna=False))
    columns = {col for (col, _), _ in groups if col}
    columns |= {str(v) for v in cases.loc[cases["check"] == "column_in_dataframe", "failure_case"]}
    indexed = cases[cases["index"].map(lambda v: not _is_null(v))]
    failing_index = list(dict.fromkeys(indexed["index"].tolist()))
    n_rows = len(failing_index)
    total = len(df) if hasattr(df, "__len__") else 0
    parts = [f"{len(groups)} failed check{'s' if len(groups) != 1 else ''}"]
    if columns:
        parts.append(f"on {len(columns)} column{'s' if len(columns) != 1 else ''} "
                     f"({', '.join(sorted(columns))})")
    head = f"data check '{schema_name}' failed: {' '.join(parts)}; {n_rows} of {total} rows fail"
    lines = [head]
    for (col, check), sub in groups[:_MAX_GROUPS]:
        lines.append("  " + _describe(col, check, sub))
    if len(groups) > _MAX_GROUPS:
        lines.append(f"  ... and {len(groups) - _MAX_GROUPS} more failed checks")
    if n_rows and isinstance(df, pd.DataFrame):
        try:
            sample = df[df.index.isin(failing_index)].head(max_rows)
            table = sample.to_string(max_cols=12, max_colwidth=24)
        except Exception as exc:  # noqa: BLE001 - the report must not fail on a display quirk
            sample, table = (), f"(rows not shown: {exc})"
        lines.append(f"failing rows (first {min(max_rows, n_rows)} of {n_rows}):")
        lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines), n_rows


def validate(df: Any, schema: Any, *, max_rows: int = 5) -> Any:
    """Check `df` against a pandera schema; return the validated frame (with any coercions
    the schema asks for).

    `schema` is a `pandera.pandas.DataFrameSchema` or a `DataFrameModel` class. Every check
    runs (pandera's lazy mode), so one failure shows every problem at once: the task fails
    with a DataValidationError whose message lists the failing columns and checks, a few
    failing values, the first `max_rows` failing rows and how many rows fail.

    Example:
        import pandera.pandas as pa

        TRANSACTIONS = pa.DataFrameSchema({"amount": pa.Column(float, pa.Check.ge(0))},
                                          name="transactions")

        @task
        def check_data(df):
            return validate(df, TRANSACTIONS)
    """
    errors = _pandera()
    pipeline, task = task_location()
    name = _schema_name(schema)
    if not hasattr(schema, "validate"):
        raise DataValidationError(
            f"validate() needs a pandera schema, got {type(schema).__name__}",
            pipeline=pipeline, task=task, schema=name,
            hint="pass a pandera DataFrameSchema or a DataFrameModel class")
    try:
        return schema.validate(df, lazy=True)
    except errors.SchemaErrors as exc:
        report, n_rows = _report(df, name, exc.failure_cases, max_rows)
        raise DataValidationError(
            report, pipeline=pipeline, task=task, schema=name, failing_rows=n_rows,
            failure_cases=exc.failure_cases,
            hint=f"fix the data upstream, or change schema '{name}' if the data is right "
            "(or filter out the failing rows before validate())") from None
    except errors.SchemaError as exc:
        cases = getattr(exc, "failure_cases", None)
        if cases is not None and hasattr(cases, "columns") and "index" in cases.columns:
            report, n_rows = _report(df, name, cases, max_rows)
        else:
            report, n_rows = f"data check '{name}' failed: {exc}", 0
        raise DataValidationError(
            report, pipeline=pipeline, task=task, schema=name, failing_rows=n_rows,
            failure_cases=cases, hint=f"fix the data upstream, or change schema '{name}'"
        ) from None
    except (TypeError, errors.BackendNotFoundError) as exc:
        # pandera's answer to a frame type the schema has no backend for.
        raise DataValidationError(
            f"data check '{name}' could not run on a {type(df).__name__}: {exc}",
            pipeline=pipeline, task=task, schema=name,
            hint="pass a pandas DataFrame (or the frame type the schema was written for)"
        ) from exc
