"""The functions the overhead benchmark runs, importable by worker processes."""


def inc(x: int) -> int:
    return x + 1


def source(n: int):
    return 1 if n == 1 else list(range(n))


def total(xs: list[int]) -> int:
    return sum(xs)
