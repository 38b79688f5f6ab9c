"""The ``monitor`` flow: AOI → scene stacks → index composites and phenology → products.

Thin by design: each task calls one library stage from :mod:`agrimon.monitor`. Tasks pass
lazy dask-backed objects, so nothing is computed until the products task writes the COGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import xarray as xr
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from agrimon import monitor as stages
from agrimon.config import RunSpec
from agrimon.plan import RunPlan, TilePlan
from agrimon.products.manifest import RunClock


@task(name="plan tiles", cache_policy=NO_CACHE)
def plan_tiles(spec: RunSpec) -> RunPlan:
    """Read the AOI, tile it and find the scenes of each tile."""
    return stages.make_plan(spec)


@task(name="load scene stack", cache_policy=NO_CACHE)
def load_stack(spec: RunSpec, tile_plan: TilePlan) -> xr.Dataset:
    """Lazy scene stack of one tile."""
    return stages.load_stack(spec, tile_plan)


@task(name="mask, indices and composites", cache_policy=NO_CACHE)
def composite(spec: RunSpec, tile_plan: TilePlan, stack: xr.Dataset) -> stages.TileComposite:
    """Cloud mask, indices, seasonal composites and phenology of one tile (lazy)."""
    return stages.composite_tile(spec, tile_plan.tile, stack)


@task(name="write products", cache_policy=NO_CACHE)
def write_products(plan: RunPlan, results: list[stages.TileComposite], clock: RunClock) -> Path:
    """Compute and write the COGs, the STAC catalog and the manifest, atomically."""
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
    results = []
    for tile_plan in plan.tiles:
        # mypy matches Dataset (dynamic attributes) to Prefect's coroutine overload: say it.
        stack = cast(xr.Dataset, load_stack(spec, tile_plan))
        results.append(composite(spec, tile_plan, stack))
    return write_products(plan, results, clock)
