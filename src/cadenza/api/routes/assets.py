"""`/api/v1/assets`: assets (names with at least one version), their versions, and each
version's lineage both ways: what produced it (the task instance and the artifacts its
output was computed from) and what consumed it (artifacts computed from it, and the runs
it triggered). Reads only.

Asset names may contain `/` (e.g. "features/user"): the routes take the name as a path,
with the more specific routes (`.../versions...`) declared first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cadenza.api.auth import RequireViewer
from cadenza.api.deps import StoreDep
from cadenza.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_after, encode_cursor
from cadenza.api.routes.task_instances import MAX_LINEAGE_NODES, lineage_out
from cadenza.api.schemas import (
    AssetLineageOut,
    AssetOut,
    AssetRunOut,
    AssetVersionOut,
    LineageNodeOut,
    Page,
)
from cadenza.artifacts.lineage import walk_lineage
from cadenza.core.errors import ArtifactNotFound
from cadenza.core.records import AssetEventRecord, AssetSummary, RunRecord, Slice
from cadenza.core.suggest import did_you_mean
from cadenza.store import RunStore
from cadenza.store.browse import browse_store

router = APIRouter(prefix="/assets", tags=["assets"])

AssetName = Annotated[str, Path(description="The asset's name (may contain '/').",
                                min_length=1, max_length=500)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="The version (from 1).")]
Depth = Annotated[int, Query(ge=0, le=50, description="At most this many steps away.")]


def asset_out(a: AssetSummary) -> AssetOut:
    return AssetOut(name=a.name, latest_version=a.latest_version, versions=a.versions,
                    updated_at=a.updated_at)


def version_out(e: AssetEventRecord) -> AssetVersionOut:
    assert e.version is not None  # read from the store: always numbered
    return AssetVersionOut(asset=e.asset, version=e.version, run_id=e.run_id,
                           task_id=e.task_id, map_index=e.map_index, attempt=e.attempt,
                           artifact_sha256=e.artifact_sha256, created_at=e.created_at)


def _asset_run(r: RunRecord) -> AssetRunOut:
    return AssetRunOut(run_id=r.run_id, pipeline=r.pipeline, state=r.state,
                       created_at=r.created_at)


def _no_asset(store: RunStore, name: str) -> ArtifactNotFound:
    names = store.asset_names()
    return ArtifactNotFound(
        f"no asset named '{name}' has a version." + did_you_mean(name, names),
        hint="an asset gets a version when a task with it in `outlets` succeeds; "
        f"assets: {', '.join(names[:20]) or '(none yet)'}")


def _version(store: RunStore, name: str, version: int) -> AssetEventRecord:
    event = store.get_asset_event(name, version)
    if event is not None:
        return event
    latest = store.latest_asset_version(name)
    if latest is None:
        raise _no_asset(store, name)
    raise ArtifactNotFound(f"asset '{name}' has no version {version} (its newest is "
                           f"{latest.version})", hint=f"versions are 1 to {latest.version}")


def _runs_page(store: RunStore, name: str, version: int, after: tuple[Any, ...] | None,
               limit: int) -> Page[AssetRunOut]:
    got: Slice[RunRecord] = browse_store(store).runs_triggered_by(name, version, after=after,
                                                                  limit=limit)
    return Page[AssetRunOut](items=[_asset_run(r) for r in got.items],
                             next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("", dependencies=[RequireViewer])
def list_assets(store: StoreDep, prefix: Annotated[str | None, Query(
        max_length=500, description="Only names starting with this.")] = None,
        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[AssetOut]:
    """Assets with at least one version, by name: newest version, how many, when updated."""
    after = decode_after(cursor, (str,))
    got = browse_store(store).assets_page(after=after, limit=limit, prefix=prefix)
    return Page[AssetOut](items=[asset_out(a) for a in got.items],
                          next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("/{name:path}/versions/{version}/lineage", dependencies=[RequireViewer])
def version_lineage(name: AssetName, version: Version, store: StoreDep, depth: Depth = 3,
                    limit: Limit = DEFAULT_LIMIT) -> AssetLineageOut:
    """Both ways from one version: the artifact that is the version with what it was
    computed from (`produced_by`), the artifacts computed from it (`consumed_by`), and the
    first page of runs it triggered (more at `.../versions/{version}/runs`)."""
    event = _version(store, name, version)
    produced: LineageNodeOut | None = None
    consumed: list[LineageNodeOut] = []
    if event.artifact_sha256 is not None:
        tree = walk_lineage(store, f"{name}@{version}", direction="both", depth=depth,
                            max_nodes=MAX_LINEAGE_NODES)
        node = lineage_out(tree)
        consumed = node.downstream
        produced = node.model_copy(update={"downstream": []})
    return AssetLineageOut(version=version_out(event), produced_by=produced,
                           consumed_by=consumed,
                           triggered_runs=_runs_page(store, name, version, None, limit))


@router.get("/{name:path}/versions/{version}/runs", dependencies=[RequireViewer])
def version_runs(name: AssetName, version: Version, store: StoreDep,
                 limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[AssetRunOut]:
    """The runs this version triggered (asset-triggered pipelines), oldest first."""
    after = decode_after(cursor, (datetime, str))  # 422 for a bad cursor before any 404
    _version(store, name, version)
    return _runs_page(store, name, version, after, limit)


@router.get("/{name:path}/versions/{version}", dependencies=[RequireViewer])
def get_version(name: AssetName, version: Version, store: StoreDep) -> AssetVersionOut:
    """One version: the task instance that made it and its artifact."""
    return version_out(_version(store, name, version))


@router.get("/{name:path}/versions", dependencies=[RequireViewer])
def list_versions(name: AssetName, store: StoreDep, limit: Limit = DEFAULT_LIMIT,
                  cursor: Cursor = None) -> Page[AssetVersionOut]:
    """An asset's versions, newest first."""
    after = decode_after(cursor, (int,))
    got = browse_store(store).asset_versions_page(name, after=after, limit=limit)
    if not got.items and after is None:
        raise _no_asset(store, name)
    return Page[AssetVersionOut](items=[version_out(e) for e in got.items],
                                 next_cursor=encode_cursor(*got.after) if got.after else None)


@router.get("/{name:path}", dependencies=[RequireViewer])
def get_asset(name: AssetName, store: StoreDep) -> AssetOut:
    """An asset: its newest version, how many it has, when it was last updated."""
    got = browse_store(store).assets_page(prefix=name, limit=1)
    if not got.items or got.items[0].name != name:
        raise _no_asset(store, name)
    return asset_out(got.items[0])
