"""Lineage of real runs (SPEC §3): every artifact records the task instance that produced it
and the artifacts it read; assets in `outlets` get a new version per producing instance;
`walk_lineage` follows both ways from an artifact or an asset."""

from __future__ import annotations

import pytest

from cadenza import CadenzaError, RunState
from cadenza.artifacts.lineage import LineageNode, render_tree, walk_lineage
from cadenza.core import settings as settings_mod
from cadenza.store import ArtifactNotFound, RunStore, open_store
from tests.pipelines import plan_lineage


@pytest.fixture
def store(cadenza_env: settings_mod.Settings) -> RunStore:
    return open_store(cadenza_env.database_url)


def output_sha(result, task_id: str) -> str:  # type: ignore[no-untyped-def]
    ti = next(t for t in result.instances if t.task_id == task_id)
    assert ti.output is not None and ti.output.kind == "artifact" and ti.output.sha256
    return str(ti.output.sha256)


def tasks_of(nodes: tuple[LineageNode, ...]) -> list[str]:
    return [n.artifact.task_id for n in nodes if n.artifact is not None]


def test_each_artifact_records_its_producer_and_inputs(store: RunStore, executor: str) -> None:
    result = plan_lineage.chain.run(executor=executor)
    assert result.state is RunState.SUCCESS
    raw, scaled, table = (output_sha(result, t) for t in ("load_raw", "scale", "features"))

    feats = store.get_artifact(table)
    assert (feats.run_id, feats.task_id, feats.map_index, feats.attempt) == (
        result.run_id,
        "features",
        -1,
        1,
    )
    assert feats.input_sha256s == (scaled, raw)  # in argument order
    assert feats.serializer == "npy" and feats.type_name == "numpy.ndarray"
    assert feats.size is not None and feats.size > 2 * 5000 * 8
    assert feats.code_fingerprint and len(feats.code_fingerprint) == 64
    assert store.get_artifact(raw).input_sha256s == ()
    assert [a.task_id for a in store.artifacts_produced_by(result.run_id)] == [
        "features",
        "load_raw",
        "scale",
    ]

    up = walk_lineage(store, table, direction="upstream")
    assert up.artifact == feats and up.downstream == ()
    assert tasks_of(up.upstream) == ["scale", "load_raw"]
    assert tasks_of(up.upstream[0].upstream) == ["load_raw"]
    assert up.upstream[1].repeated  # raw was shown under scale already

    down = walk_lineage(store, raw[:10], direction="downstream")
    assert down.sha256 == raw and down.upstream == ()
    assert tasks_of(down.downstream) == ["scale", "features"]
    assert tasks_of(down.downstream[0].downstream) == ["features"]
    assert down.downstream[1].repeated

    text = render_tree(walk_lineage(store, scaled))
    assert text.splitlines()[0].startswith(scaled[:12])
    assert "upstream (computed from)" in text and "downstream (used by)" in text
    assert "load_raw" in text and "features" in text and f"run {result.run_id}" in text
    assert "attempt 1" in text and f"code {feats.code_fingerprint[:8]}" not in text.splitlines()[0]


def test_outlets_get_a_version_per_run_and_lineage_starts_from_an_asset(store: RunStore) -> None:
    first = plan_lineage.chain.run(executor="inline")
    second = plan_lineage.chain.run(executor="inline", factor=3.0)

    events = store.list_asset_events("features/user")
    assert [(e.version, e.run_id) for e in events] == [(2, second.run_id), (1, first.run_id)]
    assert events[0].artifact_sha256 == output_sha(second, "features")
    assert store.asset_names() == ["features/user", "metrics/rows"]
    # Run 2 made the same raw array again: it stays credited to run 1.
    raw = output_sha(first, "load_raw")
    assert output_sha(second, "load_raw") == raw
    assert store.get_artifact(raw).run_id == first.run_id

    newest = walk_lineage(store, "features/user")
    assert newest.asset is not None and newest.asset.version == 2
    assert newest.artifact is not None and newest.artifact.run_id == second.run_id
    assert tasks_of(newest.upstream) == ["scale", "load_raw"]
    assert newest.upstream[0].artifact.run_id == second.run_id  # type: ignore[union-attr]
    older = walk_lineage(store, "features/user@1", direction="upstream")
    assert older.artifact is not None and older.artifact.run_id == first.run_id
    assert render_tree(older).splitlines()[0] == "asset features/user v1"

    # raw feeds both runs' scale and features
    down = walk_lineage(store, raw, direction="downstream")
    assert sorted(tasks_of(down.downstream)) == ["features", "features", "scale", "scale"]
    assert sum(1 for n in down.walk() if n.repeated) == 2

    inline = walk_lineage(store, "metrics/rows")
    assert inline.sha256 is None and inline.asset is not None and inline.asset.version == 2
    assert "value stored inline" in render_tree(inline)


def test_depth_limits_the_walk_and_marks_what_was_cut(store: RunStore) -> None:
    result = plan_lineage.chain.run(executor="inline")
    table = output_sha(result, "features")

    one = walk_lineage(store, table, direction="upstream", depth=1)
    scale_node, raw_node = one.upstream
    assert scale_node.upstream == () and scale_node.truncated
    assert raw_node.repeated is False and raw_node.truncated is False
    assert "(more beyond --depth)" in render_tree(one)
    none = walk_lineage(store, table, depth=0)
    assert none.upstream == () and none.downstream == () and none.truncated


def test_unknown_starts_are_explained(store: RunStore) -> None:
    plan_lineage.chain.run(executor="inline")
    with pytest.raises(ArtifactNotFound, match="0000000000"):
        walk_lineage(store, "0000000000")
    with pytest.raises(CadenzaError, match="no version 9 \\(its newest is version 1\\)"):
        walk_lineage(store, "features/user@9")
    with pytest.raises(CadenzaError, match="whole number"):
        walk_lineage(store, "features/user@latest")
    with pytest.raises(CadenzaError, match="direction"):
        walk_lineage(store, "features/user", direction="sideways")  # type: ignore[arg-type]
