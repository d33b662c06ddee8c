"""examples/retrain_on_events.py (seed 004's loop) driven by real Kafka messages (Tansu,
tests/fixtures/brokers.py): user behaviour changes -> an event -> a retraining run -> the
candidate is deployed only when it beats the deployed model on current data."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import pytest

from cadenza.core.states import RunState, TaskState
from cadenza.store import open_store
from cadenza.triggers.loop import Scheduler
from tests.integration.test_events import poll_until
from tests.integration.test_events_kafka import committed, produce

pytest.importorskip("sklearn", reason="scikit-learn is not installed: pip install 'cadenza[ml]'")
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "retrain_on_events.py"


def load_example(url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RETRAIN_EVENTS_URL", url)
    spec = importlib.util.spec_from_file_location(f"retrain_example_{uuid.uuid4().hex}",
                                                  EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_behaviour_event_retrains_and_deploys_only_a_better_model(
        cadenza_env, kafka_bootstrap, monkeypatch, home: Path):
    topic = f"ml.user-behaviour.{uuid.uuid4().hex[:8]}"
    example = load_example(f"kafka://{kafka_bootstrap}?topic={topic}&group=cadenza"
                           "&session_timeout_ms=6000", monkeypatch)
    sched = Scheduler([example.retrain_on_drift], executor="threads")
    sched.open_consumers()
    store = open_store(cadenza_env.database_url)
    outcomes = []
    for regime in (0, 0, 5):  # behaviour as before, unchanged, then changed
        produce(kafka_bootstrap, topic, [json.dumps({"segment": "web",
                                                     "regime": regime}).encode()])
        poll_until(sched, 1)
        sched.run_once(timeout_s=120)
        (run,) = [r for r in store.list_runs(pipeline="retrain_on_drift", limit=10)
                  if r.run_id not in {o[0] for o in outcomes}]
        assert run.state is RunState.SUCCESS and run.trigger == "event"
        deployed = store.get_task_instance(run.run_id, "deploy").state
        outcomes.append((run.run_id, deployed))
    assert [o[1] for o in outcomes] == [TaskState.SUCCESS, TaskState.SKIPPED, TaskState.SUCCESS]
    kept = store.get_task_instance(outcomes[1][0], "keep_champion").output.value
    assert kept.startswith("kept the web model")
    model = json.loads((home / "models" / "web.json").read_text())
    assert model["run_id"] == outcomes[2][0]
    assert model["message_id"] == f"{topic}:0:2"
    assert model["auc"] > model["replaced_auc"] + 0.1  # the old model no longer fits
    sched.close()
    assert committed(kafka_bootstrap, topic, "cadenza") == [3]
