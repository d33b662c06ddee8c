"""UI fixture project (tests/fixtures/browser.py copies it beside api_project.py).

- `nightly_report`: (`extract` is cached across runs) a cron schedule on weekdays (shown human-readable), tags, a fan-out and
  a fan-in, a mapped task, and parameters of every JSON-schema type the trigger form draws.
- `flaky`: `step` fails until the file named by `gate` exists (a failed run, then a retry).
- `with_secret`: prints and raises with the secret SERVICE_KEY (masked everywhere).
- `big_graph`: 200 tasks (the UI lays out graphs that big in a Web Worker).
- `live_demo`: `hold` runs until the file named by `gate` exists, so a browser test can see
  it running live and then turn green.
- `model_training`: attempts of visible length, two in parallel, and a retry of `train`
  (its first attempt fails): the Gantt screenshot in the README.
Self-contained (imports only cadenza).
"""

from __future__ import annotations

import time
from pathlib import Path

from cadenza import get_context, pipeline, task


@task(cache=True)
def extract(days: int) -> list[int]:
    return list(range(days))


@task
def clean(rows: list[int]) -> list[int]:
    return [r for r in rows if r >= 0]


@task
def score(row: int, threshold: float) -> float:
    return row * threshold


@task
def summarise(scores: list[float], rows: list[int]) -> dict[str, float]:
    return {"total": sum(scores), "rows": float(len(rows))}


@task
def publish(summary: dict[str, float], region: str, dry_run: bool) -> str:
    return f"{region}: {summary} (dry run: {dry_run})"


@pipeline(schedule="0 6 * * 1-5", start_date="2024-01-01", catchup=False,
          tags=["reports", "ui"])
def nightly_report(days: int = 4, threshold: float = 0.5, region: str = "eu",
                   dry_run: bool = False):
    """Scores the last few days of rows and publishes a summary."""
    rows = clean(extract(days))
    scores = score.partial(threshold=threshold).expand(row=rows)
    publish(summarise(scores, rows), region, dry_run)


@task
def prepare() -> str:
    print("\x1b[1;32mready\x1b[0m to go, \x1b[31mred\x1b[0m and plain", flush=True)
    return "ready"


@task
def step(value: str, gate: str) -> str:
    if gate and not Path(gate).exists():
        raise ValueError(f"the gate file {gate} does not exist yet")
    return value


@task
def finish(value: str) -> str:
    return value + "!"


@pipeline(tags=["ui"])
def flaky(gate: str = ""):
    finish(step(prepare(), gate))


@task
def begin() -> int:
    return 1


@task
def hold(value: int, gate: str) -> int:
    """Runs until the file `gate` exists (a condition the test sets; at most 60 s)."""
    deadline = time.monotonic() + 60
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate file {gate} did not appear within 60 s")
        time.sleep(0.02)
    return value + 1


@task
def end(value: int) -> int:
    return value * 10


@pipeline(tags=["ui"])
def live_demo(gate: str):
    end(hold(begin(), gate))


@task
def call_service() -> str:
    key = get_context().secrets["SERVICE_KEY"]
    print(f"calling the service with {key}", flush=True)
    raise RuntimeError(f"the service refused {key}")


@pipeline(tags=["ui"])
def with_secret():
    """Reads the secret SERVICE_KEY (set it first): its value must never reach the UI."""
    call_service()


@task
def link(value: int) -> int:
    return value + 1


@pipeline(tags=["ui"])
def big_graph():
    """20 chains of 10 tasks: a graph big enough to be laid out in a Web Worker."""
    for chain in range(20):
        value = link(chain)
        for _ in range(9):
            value = link(value)


@task
def load_rows() -> int:
    time.sleep(0.4)
    return 1000


@task
def user_features(rows: int) -> int:
    time.sleep(0.7)
    return rows // 2


@task
def item_features(rows: int) -> int:
    time.sleep(0.35)
    return rows // 4


@task(retries=1, retry_delay=0.4)
def train(users: int, items: int) -> float:
    """Fails its first attempt (a lost connection), succeeds the retry."""
    time.sleep(0.3)
    if get_context().attempt == 1:
        raise ConnectionError("the feature store dropped the connection")
    time.sleep(0.5)
    return (users + items) / 1000


@task
def evaluate(model: float) -> float:
    time.sleep(0.3)
    return model * 0.9


@pipeline(tags=["ui"])
def model_training():
    """Attempts that take visible time, two in parallel, and a retry: the Gantt's picture."""
    users = user_features(rows := load_rows())
    evaluate(train(users, item_features(rows)))
