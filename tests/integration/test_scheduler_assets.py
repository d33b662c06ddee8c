"""Asset-driven pipelines (SPEC §4): a run when every listed asset (AnyOf: any) has a new
version since the pipeline's last triggered run, with the versions in the run's context."""

from __future__ import annotations

import threading

from cadenza.core.states import RunState
from cadenza.store import open_store
from cadenza.triggers.loop import Scheduler, assets_ready, pause, unpause
from tests.pipelines import sched_assets as A

CONSUMERS = [A.train_on_both, A.train_on_any]


def triggered(settings, name: str) -> list[dict]:
    runs = open_store(settings.database_url).list_runs(pipeline=name, limit=1000)
    return [r.extra["trigger"]["assets"] for r in sorted(runs, key=lambda r: r.created_at)]


def test_assets_ready_is_all_of_or_any_of() -> None:
    assert assets_ready(["a", "b"], {}, {"a": 1}, any_of=False) is None
    assert assets_ready(["a", "b"], {}, {"a": 1, "b": 2}, any_of=False) == {"a": 1, "b": 2}
    assert assets_ready(["a", "b"], {"a": 1, "b": 2}, {"a": 2, "b": 2}, any_of=False) is None
    assert assets_ready(["a", "b"], {"a": 1, "b": 2}, {"a": 2, "b": 2}, any_of=True) == {"a": 2}
    assert assets_ready(["a", "b"], {"a": 2, "b": 2}, {"a": 2, "b": 2}, any_of=True) is None


def test_all_of_waits_for_every_asset_and_any_of_for_one(cadenza_env):
    sched = Scheduler(CONSUMERS, max_runs=0)
    assert sched.tick().created == []
    A.make_features.run(executor="inline")
    sched.tick()
    assert triggered(cadenza_env, "train_on_both") == []
    assert triggered(cadenza_env, "train_on_any") == [{"sched/features": 1}]
    A.make_labels.run(executor="inline")
    sched.tick()
    assert triggered(cadenza_env, "train_on_both") == [{"sched/features": 1, "sched/labels": 1}]
    assert triggered(cadenza_env, "train_on_any") == [{"sched/features": 1}, {"sched/labels": 1}]
    assert sched.tick().created == []
    A.make_features.run(executor="inline")
    A.make_features.run(executor="inline")
    sched.tick()
    assert len(triggered(cadenza_env, "train_on_both")) == 1  # labels did not move
    assert triggered(cadenza_env, "train_on_any")[-1] == {"sched/features": 3}
    A.make_labels.run(executor="inline")
    sched.tick()
    assert triggered(cadenza_env, "train_on_both")[-1] == {"sched/features": 3,
                                                            "sched/labels": 2}


def test_the_triggering_versions_are_in_the_task_context(cadenza_env):
    A.make_features.run(executor="inline")
    A.make_labels.run(executor="inline")
    Scheduler([A.train_on_both], executor="inline").run_once(timeout_s=60)
    store = open_store(cadenza_env.database_url)
    (run,) = store.list_runs(pipeline="train_on_both")
    assert run.state is RunState.SUCCESS and run.trigger == "asset"
    out = store.get_task_instance(run.run_id, "seen_trigger").output.value
    assert out["trigger"] == {"kind": "asset",
                              "assets": {"sched/features": 1, "sched/labels": 1}}


def test_concurrent_schedulers_make_one_run_per_asset_update(cadenza_env):
    A.make_features.run(executor="inline")
    A.make_labels.run(executor="inline")
    scheds = [Scheduler(CONSUMERS, max_runs=0) for _ in range(3)]
    barrier = threading.Barrier(3)

    def tick(s: Scheduler) -> None:
        barrier.wait(timeout=30)
        s.tick()

    threads = [threading.Thread(target=tick, args=(s,)) for s in scheds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(triggered(cadenza_env, "train_on_both")) == 1
    assert len(triggered(cadenza_env, "train_on_any")) == 1


def test_a_paused_pipeline_is_not_triggered_until_unpaused(cadenza_env):
    pause("train_on_any")
    sched = Scheduler([A.train_on_any], max_runs=0)
    A.make_features.run(executor="inline")
    assert sched.tick().created == []
    unpause("train_on_any")
    assert len(sched.tick().created) == 1
    assert triggered(cadenza_env, "train_on_any") == [{"sched/features": 1}]
