"""The ``monitor`` flow: AOI → one task per tile → products assembled from the tiles.

Thin by design: each task calls one library stage. Each tile's task computes and persists
that tile's pixels (:func:`agrimon.tilework.run_tile`) into the run's work folder, and is
cached on its inputs (the tile's key hashes the parameters, tile, scenes, zones, model and
code), its small Prefect result persisted beside the tiles: a rerun after a kill shows the
finished tiles as ``Cached`` and computes only the others. The last task assembles the
mosaics, vectors, tables, report, catalog and manifest from the persisted tiles.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from agrimon import monitor as stages
from agrimon.cluster import connect
from agrimon.config import RunSpec
from agrimon.plan import RunPlan
from agrimon.products.manifest import RunClock
from agrimon.products.workspace import workspace
from agrimon.tilework import TileResult, TileWork, finished, run_tile

_log = logging.getLogger("agrimon.monitor")

#: Folder of the tile tasks' Prefect results in the run's work folder: resumed and removed
#: with the tiles.
RESULTS_FOLDER = "prefect-results"


def _key(work: TileWork) -> str:
    return f"agrimon-tile-{work.key}"


def _tile_key(context: Any, parameters: dict[str, Any]) -> str:
    """The tile task's cache key: the tile's own key (a hash of all its inputs)."""
    return _key(parameters["work"])


@task(name="plan tiles", cache_policy=NO_CACHE)
def plan_tiles(spec: RunSpec) -> RunPlan:
    """Read the AOI, tile it and find the scenes of each tile."""
    return stages.make_plan(spec)


@task(name="tile", cache_key_fn=_tile_key, persist_result=True)
def tile(work: TileWork) -> TileResult:
    """Compute one tile's layers, map and zonal partials and persist them (or reuse them)."""
    return run_tile(work)


@task(name="assemble products", cache_policy=NO_CACHE)
def assemble(plan: RunPlan, results: list[TileResult], clock: RunClock) -> Path:
    """Mosaics, vectors, tables, styles, report, catalog and manifest, atomically."""
    return stages.write_products(plan, results, clock=clock)


@flow(name="monitor", log_prints=True)
def monitor(spec: RunSpec) -> Path:
    """Monitor an AOI over a period and write its products.

    Args:
        spec: Run parameters.

    Returns:
        The product folder.
    """
    clock = RunClock()
    with clock.stage("plan"):
        plan = plan_tiles(spec)
    done = stages.published(plan)
    if done is not None and not spec.force:
        _log.info("%s is complete: nothing to do (--force reruns it)", done)
        return done
    final = stages.final_folder(plan)
    with workspace(final) as work, connect(spec.dask_address):
        works = stages.tile_work(plan, work)
        with clock.stage("tiles"):
            results = _run_tiles(works, (work / RESULTS_FOLDER).absolute())
        return assemble(plan, results, clock)


def _run_tiles(works: list[TileWork], storage: Path) -> list[TileResult]:
    """Every tile's task, in turn, in this thread (see :func:`agrimon.monitor.run_tiles`)."""

    def run(one: TileWork) -> TileResult:
        options = tile.with_options(
            task_run_name=f"tile {one.tile.id}",
            result_storage=storage,
            # A tile whose files are gone must not come back from a cached result.
            refresh_cache=finished(one) is None,
        )
        return options(one)

    return stages.run_tiles(works, run)
