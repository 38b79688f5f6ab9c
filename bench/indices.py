"""Benchmark: agrimon's index stage against the analyst's script and against decoding alone.

Writes a stack of tiled, DEFLATE-compressed GeoTIFFs to a temporary folder — 12 dates
five days apart in the 2023/24 rainy season × (red, nir, blue, scl) × 4096 × 4096 px in
EPSG:32734 on the global 10 m grid, uint16 digital numbers (reflectance × 10000) and uint8
SCL, nodata 0, one file per band and date (``S2_20240105_B04.tif``…) — then times three
ways of getting the median NDVI and EVI composites of clear observations:

1. **baseline**: the straightforward script: rasterio reads every whole file, numpy masks
   SCL classes {0, 1, 3, 8, 9, 10}, computes NDVI and EVI per date, stacks the dates and
   takes ``np.nanmedian`` over time;
2. **agrimon**: ``LocalSource`` → ``clear_mask`` → NDVI, EVI (masked in the same pass) →
   ``composites.median``, computed by dask's threaded scheduler with 2 threads, in a
   process set up as agrimon's tile processes are (freed blocks kept for the next chunk,
   :func:`agrimon.malloc.keep_freed_memory`);
3. **limit**: decoding every input band once and nothing else (one thread).

Scenes are rendered by the demo source's generator (``render_stack``) on the western
2048 × 2048 px of the tile and mirrored to 4096 × 4096 (rendering all of it would take
longer than the rest of the benchmark); two dates lose a swath edge to nodata.

Each phase runs in a fresh process (``multiprocessing`` spawn), so no phase inherits another's
allocator state; the parent waits for them one after the other. A phase's memory figure is
its peak resident set above the resident set it started with (after imports): the kernel's
high-water mark (``VmHWM``), reset at the start of the phase through
``/proc/self/clear_refs``, or a 20 ms sampler where that is not available.

Checks that baseline and agrimon agree (1e-6, NaN-equal), prints the machine (CPU model,
the SIMD features numpy found, the threads, numpy's version) and ends with three lines:
``time_ratio`` (agrimon / baseline time), ``memory_ratio`` (agrimon / baseline peak RSS
increase) and ``limit_ratio`` (agrimon / limit time). Lower is better for all three; a
figure from one CPU may not hold on another.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dask
import numpy as np
import rasterio
import xarray as xr
from numpy.typing import NDArray

from agrimon.grid import Tile
from agrimon.indices.composites import median
from agrimon.indices.masks import DEFAULT_INVALID_SCL, clear_mask
from agrimon.indices.spectral import compute_indices
from agrimon.malloc import keep_freed_memory
from agrimon.sources.demo import render_stack
from agrimon.sources.local import LocalSource
from agrimon.sources.settings import SourceSettings
from bench._measure import cpu_and_simd, in_child, peak_rss_increase

DATES, SIDE, THREADS = 12, 4096, 2
#: File tile side (and render chunk); agrimon's dask chunk (one file window read per chunk).
BLOCK, CHUNK = 512, 1024
#: Rendered side; the rest of the tile is its mirror image.
RENDER = SIDE // 2
#: One 4096 px tile of the global 10 m grid in UTM 34S, near Grootfontein (Namibia).
TILE = Tile(32734, 4, 191, SIDE)
FIRST, STEP = date(2024, 1, 5), timedelta(days=5)
DAYS = [FIRST + i * STEP for i in range(DATES)]
#: File name token of each band.
FILE_BANDS = {"red": "B04", "nir": "B08", "blue": "B02", "scl": "SCL"}
#: Dates (indices into DAYS) that lose a swath edge to nodata.
EDGE_DATES = (2, 7)
DN_PER_REFLECTANCE = 10000
# EVI (Huete et al. 2002): G (nir - red) / (nir + C1 red - C2 blue + L).
G, C1, C2, L = 2.5, 6.0, 7.5, 1.0

F32 = NDArray[np.float32]


# --- input ----------------------------------------------------------------------------


def band_path(folder: Path, day: date, band: str) -> Path:
    return folder / f"S2_{day:%Y%m%d}_{FILE_BANDS[band]}.tif"


def mirrored(block: NDArray[Any]) -> NDArray[Any]:
    """The block and its mirror images, twice as wide and high."""
    top = np.concatenate([block, block[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def swath_edge() -> NDArray[np.bool_]:
    """Pixels beyond a slanted swath edge across the tile's western part."""
    rows, cols = np.ogrid[:SIDE, :SIDE]
    return np.asarray(cols < SIDE // 5 + rows // 8)


def write_inputs(folder: Path) -> None:
    """Render the scenes and write one tiled, DEFLATE GeoTIFF per band and date."""
    full = TILE.geobox
    part = full[:RENDER, :RENDER]
    times = [datetime(d.year, d.month, d.day, 9, 10) for d in DAYS]
    stack = render_stack(part, times, bands=tuple(FILE_BANDS), chunk_px=BLOCK)
    with dask.config.set(scheduler="threads", num_workers=THREADS):
        rendered = stack.compute()
    edge = swath_edge()
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": SIDE,
        "height": SIDE,
        "count": 1,
        "crs": f"EPSG:{TILE.epsg}",
        "transform": full.affine,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 2,
        "nodata": 0,
        "num_threads": THREADS,
    }
    for t, day in enumerate(DAYS):
        for band in FILE_BANDS:
            values = rendered[band].values[t]
            if band == "scl":
                dn = mirrored(values.astype(np.uint8))
            else:
                dn = mirrored(np.round(values * DN_PER_REFLECTANCE).astype(np.uint16))
            if t in EDGE_DATES:
                dn[edge] = 0
            with rasterio.open(band_path(folder, day, band), "w", dtype=dn.dtype, **profile) as f:
                f.write(dn, 1)


# --- the three phases -----------------------------------------------------------------


def read_full(path: Path) -> NDArray[Any]:
    with rasterio.open(path) as src:
        return np.asarray(src.read(1))


def baseline(folder: Path) -> tuple[F32, F32]:
    """The analyst's script: whole arrays, numpy, ``np.nanmedian``."""
    ndvis, evis = [], []
    for day in DAYS:
        red, nir, blue = (
            read_full(band_path(folder, day, b)).astype(np.float32) / DN_PER_REFLECTANCE
            for b in ("red", "nir", "blue")
        )
        clear = ~np.isin(read_full(band_path(folder, day, "scl")), DEFAULT_INVALID_SCL)
        with np.errstate(divide="ignore", invalid="ignore"):
            nd = (nir - red) / (nir + red)
            ev = G * (nir - red) / (nir + C1 * red - C2 * blue + L)
        nd[~clear] = np.nan
        ev[~clear] = np.nan
        ndvis.append(nd)
        evis.append(ev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        return (
            np.asarray(np.nanmedian(np.stack(ndvis), axis=0)),
            np.asarray(np.nanmedian(np.stack(evis), axis=0)),
        )


def agrimon(folder: Path) -> tuple[F32, F32]:
    """The agrimon stage on the same files."""
    keep_freed_memory()  # as tilework.warm_process sets up every process that computes tiles
    source = LocalSource(SourceSettings(local_path=folder))
    scenes = source.find_scenes(TILE, DAYS[0], DAYS[-1])
    stack = source.load(TILE, scenes, bands=tuple(FILE_BANDS), chunk_px=CHUNK)
    clear = clear_mask(stack)
    series = compute_indices(stack, ("ndvi", "evi"), clear=clear)
    composites = xr.Dataset({name: median(series[name]) for name in ("ndvi", "evi")})
    with dask.config.set(scheduler="threads", num_workers=THREADS):
        done = composites.compute()
    return np.asarray(done["ndvi"].values), np.asarray(done["evi"].values)


def limit(folder: Path) -> tuple[F32, F32]:
    """Decode every input band once, in one thread, and nothing else."""
    for day in DAYS:
        for band in FILE_BANDS:
            read_full(band_path(folder, day, band))
    empty = np.empty(0, dtype=np.float32)
    return empty, empty


PHASES: dict[str, Callable[[Path], tuple[F32, F32]]] = {
    "baseline": baseline,
    "agrimon": agrimon,
    "limit": limit,
}


# --- measuring ------------------------------------------------------------------------


def run_phase(name: str, folder: Path) -> tuple[float, float, int]:
    """Run one phase in this (fresh) process; save its composites beside the inputs.

    Returns:
        ``(seconds, CPU seconds of all threads, peak RSS increase in bytes)``.
    """
    memory: dict[str, int] = {}
    with peak_rss_increase(memory):
        start, cpu = time.perf_counter(), time.process_time()
        nd, ev = PHASES[name](folder)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if nd.size:
        np.save(folder / f"{name}_ndvi.npy", nd)
        np.save(folder / f"{name}_evi.npy", ev)
    return seconds, cpu, memory["peak"]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agrimon-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        in_child(write_inputs, folder)
        size = sum(p.stat().st_size for p in folder.glob("*.tif"))
        print(
            f"inputs: {DATES} dates x {len(FILE_BANDS)} bands x {SIDE}x{SIDE} px, "
            f"{size / 2**20:.0f} MiB on disk, written in {time.perf_counter() - start:.1f} s"
        )
        results = {name: in_child(run_phase, name, folder) for name in PHASES}
        for index in ("ndvi", "evi"):
            np.testing.assert_allclose(
                np.load(folder / f"agrimon_{index}.npy"),
                np.load(folder / f"baseline_{index}.npy"),
                rtol=0,
                atol=1e-6,
                equal_nan=True,
            )
    print(f"{cpu_and_simd()} threads={THREADS} numpy={np.__version__}")
    for name, (seconds, cpu, peak) in results.items():
        print(
            f"{name}_s={seconds:.2f} {name}_cpu_s={cpu:.2f} "
            f"{name}_peak_rss_increase_mib={peak / 2**20:.0f}"
        )
    (t_base, _, m_base), (t_agri, _, m_agri), (t_limit, _, _) = (
        results["baseline"],
        results["agrimon"],
        results["limit"],
    )
    print(f"time_ratio={t_agri / t_base:.3f}")
    print(f"memory_ratio={m_agri / m_base:.3f}")
    print(f"limit_ratio={t_agri / t_limit:.3f}")


if __name__ == "__main__":
    main()
