"""CLI fixture: two pipelines in one file (the :PIPELINE part is then required)."""

from __future__ import annotations

from datetime import timedelta

from cadenza import pipeline, task


@task
def hello(name: str) -> str:
    print(f"hello {name}")
    return f"hello {name}"


@task
def shout(text: str) -> str:
    return text.upper()


@pipeline(schedule=timedelta(hours=1), tags=["greeting"])
def greet(name: str = "world"):
    shout(hello(name))


@pipeline
def greet_twice(name: str = "world", times: int = 2):
    hello.expand(name=[name, name])
