"""CLI fixture: one task fails (with output before the error), its downstream is upstream_failed."""

from __future__ import annotations

from cadenza import pipeline, task


@task
def load(rows: int) -> list[int]:
    return list(range(rows))


@task
def validate(data: list[int]) -> list[int]:
    print(f"checking {len(data)} rows")
    bad = [x for x in data if x % 7 == 6]
    if bad:
        raise ValueError(f"bad row {bad[0]}: values must not end a week\nsecond line of the message")
    return data


@task
def train(data: list[int]) -> float:
    return sum(data) / max(len(data), 1)


@pipeline
def failing(rows: int = 10):
    train(validate(load(rows)))
