"""The monitor stages as plain functions: the Prefect flow only wires these together.

plan → load scene stacks → clear mask and NDVI → seasonal composites → products.
Every stage up to the products is lazy; pixels are computed tile by tile while the COGs are
written, so memory follows the tile and chunk size, not the AOI.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from dask.base import compute
from rasterio.features import geometry_mask

from agrimon.aoi import read_aoi
from agrimon.cluster import connect
from agrimon.config import RunSpec
from agrimon.errors import SourceError
from agrimon.grid import Tile, geobox_for, zone_pieces
from agrimon.indices import composites, masks, spectral
from agrimon.plan import MONITOR_BANDS, RunPlan, TilePlan, plan_run
from agrimon.products.catalog import ZoneProducts, write_catalog
from agrimon.products.cog import CogWriter, Layer
from agrimon.products.folder import staged_folder
from agrimon.products.manifest import write_manifest
from agrimon.sources import get_source

#: The products of the monitor run, by file stem.
LAYERS: dict[str, Layer] = {
    "ndvi_median": Layer(
        "ndvi_median", "Median NDVI of clear observations", "float32", float("nan"), "1", "average"
    ),
    "clear_count": Layer(
        "clear_count", "Number of clear-sky observations", "uint16", 65535, "count", "nearest"
    ),
}


@dataclass(frozen=True, eq=False)
class TileComposite:
    """Lazy seasonal layers of one tile, by layer name."""

    tile: Tile
    layers: dict[str, xr.DataArray]


def make_plan(spec: RunSpec) -> RunPlan:
    """Read and check the AOI, tile it and find the scenes: the ``plan`` stage."""
    aoi = read_aoi(spec.aoi, max_area_km2=spec.max_area_km2)
    return plan_run(spec, aoi, get_source(spec.source, spec.source_settings))


def load_stack(spec: RunSpec, tile_plan: TilePlan) -> xr.Dataset:
    """Lazy scene stack of one tile with the bands the monitor needs."""
    if not tile_plan.scenes:
        raise SourceError(
            f"source '{spec.source}' has no scenes for tile {tile_plan.tile.id} between "
            f"{spec.start} and {spec.end}: widen the period with --start/--end"
        )
    source = get_source(spec.source, spec.source_settings)
    return source.load(
        tile_plan.tile, tile_plan.scenes, bands=MONITOR_BANDS, chunk_px=spec.chunk_px
    )


def composite_tile(spec: RunSpec, tile: Tile, stack: xr.Dataset) -> TileComposite:
    """Clear mask, NDVI and the seasonal composites of one tile (lazy)."""
    clear = masks.clear_mask(stack, invalid=spec.invalid_scl)
    ndvi = spectral.ndvi(stack).where(clear)
    return TileComposite(
        tile=tile,
        layers={
            "ndvi_median": composites.median(ndvi),
            "clear_count": masks.clear_count(clear),
        },
    )


def inside_mask(tile: Tile) -> np.ndarray:
    """True for the pixels of ``tile.geobox`` whose centre lies in the tile's footprint."""
    geobox = tile.geobox
    if tile.footprint is None:
        return np.ones(geobox.shape, dtype=bool)
    outside = geometry_mask(
        [tile.footprint], out_shape=geobox.shape, transform=geobox.affine, all_touched=False
    )
    return np.asarray(~outside, dtype=bool)


#: Tiles computed at once: keeps both cores (or every worker) busy while memory stays a
#: small multiple of one tile's.
TILES_IN_FLIGHT = 2


def _write_tiles(comps: Sequence[TileComposite], writers: dict[str, CogWriter]) -> None:
    """Compute every layer of a few tiles in one pass and write them, nodata outside the AOI."""
    names = list(writers)
    lazy = [comp.layers[n] for comp in comps for n in names]
    values = compute(*lazy)  # type: ignore[no-untyped-call]
    for k, comp in enumerate(comps):
        inside = inside_mask(comp.tile)
        for j, name in enumerate(names):
            arr = np.asarray(values[k * len(names) + j])
            writers[name].write(comp.tile.geobox, np.where(inside, arr, writers[name].layer.nodata))


def write_products(plan: RunPlan, results: Sequence[TileComposite]) -> Path:
    """Write COGs, ``catalog.json`` and ``manifest.json`` into the run's folder, atomically.

    Args:
        plan: The run plan.
        results: Lazy composites of every tile.

    Returns:
        The product folder ``<out>/<aoi>/<start>_<end>``.
    """
    spec = plan.spec
    final = spec.out / plan.aoi.name / spec.period
    zones = sorted({r.tile.epsg for r in results})
    with staged_folder(final) as folder, connect(spec.dask_address):
        zone_products = []
        for epsg in zones:
            in_zone = [r for r in results if r.tile.epsg == epsg]
            grid = geobox_for(
                _union_bounds([r.tile.area_bounds for r in in_zone]), epsg, in_zone[0].tile.res
            )
            suffix = (
                ""
                if len(zones) == 1
                else f"_{in_zone[0].tile.zone:02d}{in_zone[0].tile.hemisphere}"
            )
            tags = {
                "PERIOD": f"{spec.start}/{spec.end}",
                "SOURCE": spec.source,
                "AOI": plan.aoi.name,
            }
            files = {name: folder / f"{name}{suffix}.tif" for name in LAYERS}
            with ExitStack() as stack:
                writers = {
                    name: stack.enter_context(CogWriter(files[name], grid, layer, tags=tags))
                    for name, layer in LAYERS.items()
                }
                for i in range(0, len(in_zone), TILES_IN_FLIGHT):
                    _write_tiles(in_zone[i : i + TILES_IN_FLIGHT], writers)
            footprint = zone_pieces(plan.aoi.geometry)[epsg]
            zone_products.append(
                ZoneProducts(
                    epsg, footprint, (grid.shape.y, grid.shape.x), list(grid.affine)[:6], files
                )
            )
        run_id = f"{plan.aoi.name}-{spec.period}"
        write_catalog(
            folder,
            run_id=run_id,
            title=f"agrimon monitor: {plan.aoi.name}, {spec.start} to {spec.end}",
            start=spec.start,
            end=spec.end,
            zones=zone_products,
            layers=LAYERS,
        )
        write_manifest(folder, run_record(plan))
    return final


def run_record(plan: RunPlan) -> dict[str, Any]:
    """Inputs, parameters and scenes of a run, for the manifest."""
    source = get_source(plan.spec.source, plan.spec.source_settings)
    return {
        "flow": "monitor",
        "parameters": plan.spec.model_dump(mode="json"),
        "aoi": {
            "path": str(plan.aoi.path),
            "name": plan.aoi.name,
            "sha256": plan.aoi.sha256,
            "area_km2": round(plan.aoi.area_km2, 3),
            "zones": [str(n) for n in plan.aoi.zones["name"]],
        },
        "source": {"name": plan.spec.source, **source.describe()},
        "tiles": [
            {
                "id": t.tile.id,
                "epsg": t.tile.epsg,
                "bounds": list(t.tile.area_bounds),
                "scenes": [s.id for s in t.scenes],
            }
            for t in plan.tiles
        ],
    }


def _union_bounds(
    bounds: Sequence[tuple[float, float, float, float]],
) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )


def run_monitor(spec: RunSpec) -> Path:
    """The whole monitor run without Prefect (library use, tests); returns the product folder."""
    plan = make_plan(spec)
    results = [composite_tile(spec, tp.tile, load_stack(spec, tp)) for tp in plan.tiles]
    return write_products(plan, results)
