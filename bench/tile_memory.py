"""Benchmark: the memory one tile in flight needs, against ``agrimon plan``'s estimate.

Writes a synthetic AOI of one whole 1024-px tile (inset ``INSET_M`` from its edges, the
farmland of the demo world near Grootfontein) and runs that tile's work (``run_tile``: load,
mask, indices, composites, season metrics, the shipped encroachment model, zonal
partials, persisted GeoTIFFs) over a whole season of 5-day demo scenes, in a fresh
process each (``multiprocessing`` spawn), twice:

1. **whole** (baseline): the tile's index series, clear mask and feature image are computed
   whole, then mapped and turned into zonal partials (how tiles were computed before);
2. **chunked**: ``run_tile`` as the monitor runs it: the model maps and the zonal partials
   are made chunk by chunk, in one graph with the layers.

Before each, the process is warmed: agrimon, torch and the model are imported and loaded
and one small tile is computed, so the peak counts what the tile in flight holds, not what a
process loads once. ``peak_tile_mb`` is the peak resident set above the warm one (kernel
high-water mark, reset before the tile). ``memory_ratio`` is chunked / whole (lower is
better); ``estimate_ratio`` is ``agrimon plan``'s per-tile estimate over the measured peak
(1 is exact; the plan aims within 0.85..1.15). About 2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from shapely.geometry import mapping

from agrimon.sources.base import DEFAULT_CHUNK_PX
from bench._measure import cpu_and_simd, in_child, peak_rss_increase
from bench.scaling import aoi_geometry

TILE_PX = 1024
#: The run's default chunk side.
CHUNK_PX = DEFAULT_CHUNK_PX
START, END = date(2023, 7, 1), date(2024, 6, 30)
THREADS = 2
MIB = 2**20


def write_aoi(folder: Path) -> Path:
    """One whole tile's AOI as GeoJSON in ``folder``."""
    path = folder / "tile.geojson"
    feature = {
        "type": "Feature",
        "properties": {"name": "tile"},
        "geometry": mapping(aoi_geometry(TILE_PX, 1, 1)),
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def _whole(work: Any) -> None:
    """The baseline: the tile's series and clear mask computed whole, then partials."""
    from dask.base import compute

    from agrimon.indices import zonal
    from agrimon.tilework import (
        composite_tile,
        inside_mask,
        load_stack,
        monitor_checkpoint,
        product_layers,
    )

    spec, tile = work.spec, work.tile
    comp = composite_tile(spec, tile, load_stack(spec, work.tile_plan))
    names = list(product_layers(spec))
    computed = compute(*(comp.layers[n] for n in names), comp.features, comp.series, comp.clear)
    features, series, clear = computed[-3], computed[-2], computed[-1]
    loaded = monitor_checkpoint(spec)
    if loaded is not None:
        from agrimon.invasive.mapping import TileMapper

        TileMapper(spec, loaded, [work.tile_plan]).map(tile, features)
    inside = inside_mask(tile)
    for frame in (work.zones, work.units):
        if frame is not None:
            zonal.zonal_partial(
                series,
                frame,
                clear=clear,
                geobox=tile.geobox,
                inside=inside,
                footprint=tile.footprint,
            )


def measure(
    aoi: Path, out: Path, mode: str, chunk_px: int = CHUNK_PX, model: str = "auto"
) -> dict[str, Any]:
    """Warm a process, then the peak memory of one tile's work (``whole`` or ``chunked``)."""
    import dask

    from agrimon.config import make_spec
    from agrimon.monitor import preflight, tile_work
    from agrimon.tilework import monitor_checkpoint, run_tile

    dask.config.set(scheduler="threads", num_workers=THREADS)
    grid: dict[str, Any] = {"tile_px": TILE_PX, "chunk_px": chunk_px}
    spec = make_spec(aoi=aoi, out=out, start=START, end=END, invasive_model=model, **grid)
    run_plan = preflight(spec)
    works = tile_work(run_plan, out / "work")
    monitor_checkpoint(spec)  # torch and the model, once per process
    (work,) = works
    small = replace(work, folder=out / "warm")
    warm_plan = replace(work.tile_plan, scenes=work.tile_plan.scenes[:8])
    run_tile(replace(small, tile_plan=warm_plan))
    result: dict[str, int] = {}
    with peak_rss_increase(result):
        if mode == "whole":
            _whole(work)
        else:
            run_tile(work)
    return {
        "peak": result["peak"],
        "estimate": run_plan.tile_memory_bytes(THREADS),
        "dates": len(work.tile_plan.scenes),
        "pixels": work.tile_plan.pixels,
    }


def main() -> None:
    print(f"{cpu_and_simd()} cores={os.cpu_count()} threads={THREADS}")
    with tempfile.TemporaryDirectory(prefix="agrimon-bench-") as tmp:
        folder = Path(tmp)
        aoi = write_aoi(folder)
        whole = in_child(measure, aoi, folder / "out-whole", "whole")
        chunked = in_child(measure, aoi, folder / "out-chunked", "chunked")
    print(
        f"tile: {chunked['pixels']} px ({TILE_PX} px side, chunks {CHUNK_PX}), "
        f"{chunked['dates']} dates {START}..{END}, with the encroachment model"
    )
    print(f"whole_tile_mb={whole['peak'] / MIB:.0f} chunked_tile_mb={chunked['peak'] / MIB:.0f}")
    print(f"plan_tile_estimate_mb={chunked['estimate'] / MIB:.0f}")
    print(f"memory_ratio={chunked['peak'] / whole['peak']:.3f}")
    print(f"estimate_ratio={chunked['estimate'] / chunked['peak']:.3f}")
    print(f"peak_tile_mb={chunked['peak'] / MIB:.0f}")


if __name__ == "__main__":
    main()
