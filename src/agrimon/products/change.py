"""Change between two runs of one AOI: encroachment gained and lost, index anomalies.

The earlier run is the newest complete run of the same AOI whose period ends before this
one's (or the folder given with ``--compare``). Both runs' rasters lie on the same global
10 m grid, so pixels pair up by position, without resampling; where the earlier run covers
less of the AOI, the change is nodata. Rasters are read and written block by block, so
memory follows the block size, not the AOI.

Products, per UTM zone suffix:

* ``invasive_change.tif``: 1 not encroached in both, 2 gained (newly encroached), 3 lost,
  4 encroached in both, 0 nodata;
* ``<index>_anomaly.tif``: this period's median minus the earlier one's;
* ``invasive_change_polygons`` (run GeoPackage) and ``invasive_change.geojson``: polygons
  of gains and losses with their areas, sieved to the minimum mapping unit;
* ``invasive_change_areas.csv``: gained, lost and net hectares per zone (pixel counts).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.windows import Window, from_bounds

from agrimon.area.classmap import zone_masks
from agrimon.errors import ConfigError
from agrimon.products.cog import BLOCK_PX, CogWriter, Layer
from agrimon.products.folder import writing
from agrimon.products.runs import Run
from agrimon.products.vectors import add_layer, write_geojson

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]

#: Names of the change classes 1–4 (0 is nodata).
CHANGE_NAMES = ("not encroached", "gained", "lost", "encroached")
CHANGE_LAYER = Layer(
    name="invasive_change",
    title="Encroachment change since the earlier run",
    dtype="uint8",
    nodata=0,
    units="1",
    resampling="mode",
    palette=(
        (0, 0, 0, 0),
        (224, 243, 219, 255),
        (215, 48, 31, 255),
        (43, 140, 190, 255),
        (166, 97, 26, 255),
    ),
    categories=("", *CHANGE_NAMES),
)
CHANGE_POLYGONS = "invasive_change_polygons"
CHANGE_AREAS_CSV = "invasive_change_areas.csv"
#: The class of an encroachment map that counts as encroached.
TARGET = "encroached"


@dataclass(frozen=True)
class ChangeSummary:
    """What changed, for the report and the catalog.

    Attributes:
        earlier: The run compared with.
        files: The change products by name (``invasive_change``, ``ndvi_anomaly``,
            ``invasive_change_areas``, ``invasive_change_geojson``…, with the UTM-zone suffix).
        zones: Per zone: ``gained_ha``, ``lost_ha``, ``net_ha`` (when both runs mapped
            encroachment) and ``<index>_anomaly`` (mean of the zone's pixels).
        total: The same figures over the whole AOI (the maps' valid pixels): zones may
            overlap or leave gaps, so their sum is no total.
    """

    earlier: Run
    files: dict[str, Path] = field(default_factory=dict)
    zones: dict[str, dict[str, float]] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)


def incompatibility(earlier: Run, epsgs: Sequence[int]) -> str | None:
    """Why ``earlier``'s rasters cannot pair with a run in UTM zones ``epsgs``, or None."""
    theirs = set()
    for path in earlier.folder.glob("*_median*.tif"):
        with rasterio.open(path) as src:
            theirs.add(src.crs.to_epsg() if src.crs is not None else None)
    if not theirs & set(epsgs):
        listed = ", ".join(f"EPSG:{e}" for e in sorted(e for e in theirs if e is not None))
        mine = ", ".join(f"EPSG:{e}" for e in sorted(epsgs))
        return (
            f"earlier run {earlier.folder} is in {listed or 'no CRS'}, this run in {mine}: "
            "compare runs of the same AOI"
        )
    return None


def anomaly_layer(name: str) -> Layer:
    """The layer of an index anomaly raster ``<index>_anomaly[<suffix>]``."""
    index = name.split("_anomaly")[0]
    return Layer(
        f"{index}_anomaly",
        f"{index.upper()} anomaly: this period's median minus the earlier run's",
        "float32",
        float("nan"),
        "1",
        "average",
    )


# --- pure ----------------------------------------------------------------------------------


def change_classes(
    before: NDArray[np.integer], now: NDArray[np.integer], *, target_before: int, target_now: int
) -> U8:
    """Change class of each pixel from two class maps (0 = nodata in either)."""
    valid = (before != 0) & (now != 0)
    was = before == target_before
    is_ = now == target_now
    out = np.zeros(np.shape(now), dtype=np.uint8)
    out[valid & ~was & ~is_] = 1
    out[valid & ~was & is_] = 2
    out[valid & was & ~is_] = 3
    out[valid & was & is_] = 4
    return out


def anomaly(before: NDArray[np.floating], now: NDArray[np.floating]) -> F32:
    """This period's value minus the earlier one's (NaN where either is NaN)."""
    return (np.asarray(now, np.float32) - np.asarray(before, np.float32)).astype(np.float32)


# --- I/O -----------------------------------------------------------------------------------


def write_change(
    folder: Path,
    earlier: Run,
    *,
    suffixes: Sequence[str],
    indices: Sequence[str],
    zones: gpd.GeoDataFrame,
    gpkg: Path,
    mmu_ha: float,
) -> ChangeSummary:
    """Write the change products of the run in ``folder`` against ``earlier``.

    Products that either run lacks (an encroachment map, an index) are left out; a UTM zone
    the earlier run does not have is skipped.

    Args:
        folder: This run's (staged) folder, its rasters written.
        earlier: The run to compare with.
        suffixes: This run's UTM-zone file suffixes (``""`` for a single zone).
        indices: This run's indices.
        zones: The AOI's zones (``name``).
        gpkg: The run's GeoPackage, which gets the change polygons.
        mmu_ha: Minimum mapping unit of the change polygons.

    Returns:
        What was written and the per-zone figures.
    """
    summary = ChangeSummary(earlier)
    names = [str(n) for n in zones["name"]]
    sums: dict[str, NDArray[np.float64]] = {}
    for suffix in suffixes:
        for index in indices:
            now = folder / f"{index}_median{suffix}.tif"
            before = earlier.folder / f"{index}_median{suffix}.tif"
            if not (now.is_file() and before.is_file()):
                continue
            out = folder / f"{index}_anomaly{suffix}.tif"
            layer = anomaly_layer(f"{index}_anomaly{suffix}")
            part = _paired(now, before, out, layer, zones, anomaly)
            key = f"{index}_anomaly"
            sums[key] = part if key not in sums else sums[key] + part
            summary.files[f"{index}_anomaly{suffix}"] = out
        now = folder / f"invasive_class{suffix}.tif"
        before = earlier.folder / now.name
        if not (now.is_file() and before.is_file()):
            continue
        t_now, t_before = _target_value(now), _target_value(before)
        if t_now is None or t_before is None:
            continue
        out = folder / f"{CHANGE_LAYER.name}{suffix}.tif"
        counts = _paired(
            now,
            before,
            out,
            CHANGE_LAYER,
            zones,
            partial(change_classes, target_before=t_before, target_now=t_now),
        )
        sums["change"] = counts if "change" not in sums else sums["change"] + counts
        summary.files[f"{CHANGE_LAYER.name}{suffix}"] = out
        summary.files.update(_change_polygons(folder, out, suffix, gpkg, mmu_ha))
    for key, part in sums.items():
        # The last row of each part is the whole AOI's.
        for z, name in enumerate([*names, None]):
            row = summary.zones.setdefault(name, {}) if name is not None else summary.total
            if key == "change":
                row["gained_ha"] = float(part[z, 2])
                row["lost_ha"] = float(part[z, 3])
                row["net_ha"] = float(part[z, 2] - part[z, 3])
            else:
                total, count = part[z]
                row[key] = float(total / count) if count else float("nan")
    if "change" in sums:
        path = folder / CHANGE_AREAS_CSV
        with writing(path), path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["zone", "gained_ha", "lost_ha", "net_ha"])
            for name in names:
                row = summary.zones[name]
                writer.writerow(
                    [name, *(f"{row[k]:.4f}" for k in ("gained_ha", "lost_ha", "net_ha"))]
                )
        summary.files["invasive_change_areas"] = path
    return summary


def _target_value(path: Path) -> int | None:
    from agrimon.area.classmap import raster_classes

    with rasterio.open(path) as src:
        classes = raster_classes(src)
    if not classes or TARGET not in classes:
        return None
    return classes.index(TARGET) + 1


def _blocks(shape: tuple[int, int]) -> Iterator[Window]:
    rows, cols = shape
    for r in range(0, rows, BLOCK_PX):
        for c in range(0, cols, BLOCK_PX):
            yield Window(c, r, min(BLOCK_PX, cols - c), min(BLOCK_PX, rows - r))


def _paired(
    now_path: Path,
    before_path: Path,
    out: Path,
    layer: Layer,
    zones: gpd.GeoDataFrame,
    combine: Callable[[NDArray[Any], NDArray[Any]], NDArray[Any]],
) -> NDArray[np.float64]:
    """Write ``combine(before, now)`` block by block; return per-zone figures.

    For a class layer, the pixel area in hectares of each zone and change class
    ``(zones + 1, 5)``; for a continuous one, the sum and count of finite values
    ``(zones + 1, 2)``. The last row is the whole raster's.
    """
    classes = bool(layer.categories)
    figures = np.zeros((len(zones) + 1, 5 if classes else 2), dtype=np.float64)
    with ExitStack() as stack:
        now = stack.enter_context(rasterio.open(now_path))
        before = stack.enter_context(rasterio.open(before_path))
        if before.crs != now.crs or not np.allclose(before.res, now.res):
            raise ConfigError(
                f"earlier run {before_path.parent} is in {before.crs} at {before.res[0]:g} m, "
                f"this one in {now.crs} at {now.res[0]:g} m: compare runs of the same AOI"
            )
        grid = GeoBox((now.height, now.width), now.transform, now.crs)
        shapes = list(zones.to_crs(now.crs).geometry)
        pixel_ha = abs(now.transform.a * now.transform.e) / 10_000
        writer = stack.enter_context(CogWriter(out, grid, layer))
        fill = before.nodata if before.nodata is not None else 0
        for window in _blocks((now.height, now.width)):
            values = now.read(1, window=window)
            bounds = rasterio.windows.bounds(window, now.transform)
            theirs = (
                from_bounds(*bounds, transform=before.transform).round_offsets().round_lengths()
            )
            previous = before.read(1, window=theirs, boundless=True, fill_value=fill)
            result = np.asarray(combine(previous, values))
            part = grid[
                window.row_off : window.row_off + window.height,
                window.col_off : window.col_off + window.width,
            ]
            writer.write(part, result)
            everywhere = np.ones(result.shape, dtype=bool)
            masks = [*zone_masks(shapes, result.shape, part.affine), (len(zones), everywhere)]
            for z, inside in masks:
                if classes:
                    figures[z] += np.bincount(result[inside], minlength=5)[:5] * pixel_ha
                else:
                    finite = result[inside & np.isfinite(result)].astype(np.float64)
                    figures[z] += (finite.sum(), finite.size)
    return figures


def _change_polygons(
    folder: Path, change: Path, suffix: str, gpkg: Path, mmu_ha: float
) -> Mapping[str, Path]:
    """Polygons of the gains and losses of a change raster, with their areas."""
    from agrimon.area.polygons import vectorise

    frame = vectorise(change, mmu_ha=mmu_ha)
    frame = frame[frame["class"].isin(("gained", "lost"))].rename(columns={"class": "change"})
    frame = frame[["change", "pixels", "area_ha", "geometry"]].reset_index(drop=True)
    frame.insert(0, "id", np.arange(1, len(frame) + 1, dtype=np.int64))
    layer = f"{CHANGE_POLYGONS}{suffix}"
    add_layer(frame, gpkg, layer=layer)
    geojson = write_geojson(frame, folder / f"{CHANGE_POLYGONS}{suffix}.geojson")
    return {f"invasive_change_geojson{suffix}": geojson}
