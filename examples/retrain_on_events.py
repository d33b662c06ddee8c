"""User behaviour changes -> a Kafka event -> retrain -> deploy if better.

    cadenza scheduler examples/retrain_on_events.py     # consumes the topic, one run a message
    python examples/retrain_on_events.py                # one run now, without a broker

A monitoring job that notices user behaviour drifting publishes a JSON message such as
{"segment": "mobile", "regime": 3} to the Kafka topic `ml.user-behaviour`
(RETRAIN_EVENTS_URL names another trigger URL: any of SPEC §4/§9's, e.g. amqp:// or
mqtt://). The scheduler starts one run of `retrain_on_drift` per message, with the message as
its parameters; the message's offset is committed only once the run is recorded, and a
message delivered twice makes one run.

Each run trains a candidate on the segment's current behaviour, scores it and the deployed
model (the champion) on the same held-out rows, and deploys the candidate only when it is
better; otherwise the champion stays. The behaviour data are synthetic (scikit-learn's
`make_classification`; `regime` picks how users behave now) and the "deployment" is a
pickle and a JSON file under CADENZA_HOME/models/ that a serving process would load.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

from cadenza import EventTrigger, get_context, pipeline, task

EVENTS_URL = os.environ.get(
    "RETRAIN_EVENTS_URL", "kafka://127.0.0.1:9092?topic=ml.user-behaviour&group=cadenza")


def models_dir() -> Path:
    return Path(os.environ.get("CADENZA_HOME", ".cadenza")) / "models"


@task
def load_behaviour(segment: str, regime: int) -> Any:
    """The segment's recent interactions: features and whether the user converted."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=1200, n_features=8, n_informative=5,
                               random_state=1000 + regime)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["converted"] = y
    frame["split"] = np.where(np.arange(len(frame)) % 4 == 0, "test", "train")
    get_context().log_metric("rows", len(frame))
    return frame


@task
def train_candidate(data: Any) -> Any:
    from sklearn.linear_model import LogisticRegression

    rows = data[data["split"] == "train"]
    return LogisticRegression(max_iter=1000).fit(rows.filter(like="f"), rows["converted"])


@task
def compare(candidate: Any, data: Any, segment: str) -> dict:
    """ROC AUC of the candidate and of the deployed champion on the same held-out rows."""
    from sklearn.metrics import roc_auc_score

    rows = data[data["split"] == "test"]
    features, truth = rows.filter(like="f"), rows["converted"]
    scores = {"candidate": float(roc_auc_score(truth, candidate.predict_proba(features)[:, 1])),
              "champion": None}
    champion_path = models_dir() / f"{segment}.pkl"
    if champion_path.exists():
        champion = pickle.loads(champion_path.read_bytes())
        scores["champion"] = float(roc_auc_score(truth, champion.predict_proba(features)[:, 1]))
    ctx = get_context()
    for name, value in scores.items():
        if value is not None:
            ctx.log_metric(f"auc_{name}", value)
    return scores


@task.branch
def decide(scores: dict) -> str:
    better = scores["champion"] is None or scores["candidate"] > scores["champion"] + 0.001
    return "deploy" if better else "keep_champion"


@task
def deploy(candidate: Any, scores: dict, segment: str) -> str:
    """Replace the segment's model (what a serving process loads)."""
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{segment}.pkl").write_bytes(pickle.dumps(candidate))
    trigger = get_context().extra.get("trigger") or {}
    (folder / f"{segment}.json").write_text(json.dumps({
        "auc": scores["candidate"], "replaced_auc": scores["champion"],
        "run_id": get_context().run_id, "message_id": trigger.get("message_id")}))
    return f"deployed a new {segment} model (AUC {scores['candidate']:.3f})"


@task
def keep_champion(scores: dict, segment: str) -> str:
    return (f"kept the {segment} model: AUC {scores['champion']:.3f} against the "
            f"candidate's {scores['candidate']:.3f}")


@pipeline(triggers=[EventTrigger(EVENTS_URL)], tags=["retraining", "events"])
def retrain_on_drift(segment: str = "all", regime: int = 0):
    data = load_behaviour(segment, regime)
    candidate = train_candidate(data)
    scores = compare(candidate, data, segment)
    decide(scores) >> [deploy(candidate, scores, segment), keep_champion(scores, segment)]


if __name__ == "__main__":
    result = retrain_on_drift.run(segment="all", regime=0)
    for label in ("deploy", "keep_champion"):
        if result.task_states.get(label) == "success":
            print(result.outputs[label])
    print(f"With a broker: cadenza scheduler {__file__} (trigger: {EVENTS_URL})")
    raise SystemExit(0 if result.ok else 1)
