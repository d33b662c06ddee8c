"""Data validation with pandera (SPEC §8): a failed check fails the task with a readable
report (failing columns, checks, a few failing rows and their count), not a raw traceback."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza import RunState, TaskState, pipeline, task, validate
from cadenza.core.settings import Settings
from cadenza.integrations.errors import DataValidationError

pa = pytest.importorskip("pandera.pandas",
                         reason="pandera is not installed: pip install 'cadenza[ml]'")
pd = pytest.importorskip("pandas")


def transactions_schema() -> Any:
    return pa.DataFrameSchema(
        {
            "amount": pa.Column(float, pa.Check.ge(0)),
            "country": pa.Column(str, pa.Check.isin(["FR", "DE"])),
            "hour": pa.Column(int, pa.Check.in_range(0, 23)),
            "merchant": pa.Column(str),
        },
        name="transactions",
    )


def bad_transactions(n: int = 40) -> Any:
    """`n` rows; every 4th has a negative amount, rows 3 and 7 an unknown country, and the
    'merchant' column is missing."""
    return pd.DataFrame({
        "amount": [-1.5 if i % 4 == 0 else 10.0 + i for i in range(n)],
        "country": ["XX" if i in (3, 7) else "FR" for i in range(n)],
        "hour": [i % 24 for i in range(n)],
    })


@task
def make_rows(n: int) -> Any:
    return bad_transactions(n)


@task
def check(frame: Any) -> Any:
    return validate(frame, transactions_schema())


@task
def downstream(frame: Any) -> int:
    return len(frame)


@pipeline
def validated(n: int = 40):
    downstream(check(make_rows(n)))


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_failed_check_fails_the_task_with_a_readable_report(sqlite_env: Settings,
                                                            executor: str) -> None:
    result = validated.run(executor=executor, n=40)

    assert result.state is RunState.FAILED
    assert result.task_states["check"] is TaskState.FAILED
    assert result.task_states["downstream"] is TaskState.UPSTREAM_FAILED
    error = result.failed["check"]
    assert error.type.endswith("DataValidationError")
    lines = error.message.splitlines()
    # Where, what and how much, on the first line (what `cadenza runs show` prints).
    assert lines[0] == ("pipeline 'validated', task 'check': data check 'transactions' "
                        "failed: 3 failed checks on 3 columns (amount, country, merchant); "
                        "12 of 40 rows fail")
    assert "  column 'merchant': missing (the schema requires it)" in lines
    assert ("  column 'amount': 10 values fail greater_than_or_equal_to(0): -1.5 (row 0), "
            "-1.5 (row 4), -1.5 (row 8), ... 7 more") in lines
    assert "  column 'country': 2 values fail isin(['FR', 'DE']): 'XX' (row 3), 'XX' (row 7)" in lines
    # A few failing rows, the first ones in data order, as a table.
    start = lines.index("failing rows (first 5 of 12):")
    table = lines[start + 1:start + 7]
    assert table[0].split() == ["amount", "country", "hour"]
    assert [row.split()[0] for row in table[1:]] == ["0", "3", "4", "7", "8"]
    assert "  Fix: fix the data upstream" in error.message
    # Readable: neither pandera's JSON dump nor a traceback in the message.
    assert '"SCHEMA"' not in error.message and "Traceback" not in error.message


class Transaction(pa.DataFrameModel):
    amount: float = pa.Field(ge=0)
    hour: int = pa.Field(in_range={"min_value": 0, "max_value": 23})

    class Config:
        coerce = True


def test_dataframe_model_passes_and_returns_the_coerced_frame() -> None:
    frame = pd.DataFrame({"amount": [1, 2], "hour": ["3", "4"]})

    checked = validate(frame, Transaction)

    assert str(checked["amount"].dtype) == "float64"
    assert checked["hour"].tolist() == [3, 4]


def test_dataframe_model_failure_outside_a_task_keeps_the_details() -> None:
    frame = pd.DataFrame({"amount": [1.0, -2.0, None, 4.0], "hour": [1, 30, 2, 3]})

    with pytest.raises(DataValidationError) as info:
        validate(frame, Transaction)

    err = info.value
    assert err.pipeline is None and err.task is None
    assert err.schema == "Transaction" and err.failing_rows == 2
    assert set(err.failure_cases["column"]) == {"amount", "hour"}
    text = str(err)
    assert text.startswith("data check 'Transaction' failed: 3 failed checks on 2 columns "
                           "(amount, hour); 2 of 4 rows fail")
    assert "column 'amount': 1 null value (the column is not nullable)" in text
    assert "column 'hour': 1 value fails in_range(0, 23): 30.0 (row 1)" in text


def test_wrong_type_is_reported_as_such() -> None:
    frame = pd.DataFrame({"amount": [1.0], "hour": [1.5]})
    schema = pa.DataFrameSchema({"amount": pa.Column(float), "hour": pa.Column(int)},
                                name="typed")

    with pytest.raises(DataValidationError,
                       match="column 'hour': wrong type, expected 'int64', got float64"):
        validate(frame, schema)


def test_not_a_frame_and_not_a_schema_are_explained() -> None:
    with pytest.raises(DataValidationError, match="could not run on a dict") as info:
        validate({"amount": [1.0]}, transactions_schema())
    assert info.value.hint and "pandas DataFrame" in info.value.hint
    with pytest.raises(DataValidationError, match="needs a pandera schema, got dict"):
        validate(pd.DataFrame(), {"amount": float})
