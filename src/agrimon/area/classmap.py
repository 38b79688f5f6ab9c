"""A class map on disk: its classes, its grid, and reads window by window (the I/O side).

A class raster is a single-band integer GeoTIFF in a projected CRS: ``0`` is no data,
value ``v`` is class ``v − 1`` of its class list. The monitor's ``invasive_class.tif``
names its classes in the band tag ``CATEGORY_NAMES`` (values 0, 1, …); a raster without
names gets ``"1"``, ``"2"``, … Everything here reads a window at a time, so memory is
bounded by the window, not by the map.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from numpy.typing import NDArray
from rasterio.features import rasterize
from rasterio.windows import Window as RioWindow
from shapely.geometry.base import BaseGeometry

from agrimon.area.sampling import Window, block_windows, count_strata
from agrimon.errors import ConfigError

#: Window side of every pass over a map.
BLOCK_PX = 1024

Reader = Callable[[Window], NDArray[np.integer]]


@dataclass(frozen=True)
class ClassMap:
    """What a class raster is, without its pixels.

    Attributes:
        path: The GeoTIFF.
        classes: Names of the values ``1..K``.
        shape: ``(rows, cols)``.
        transform: Pixel to map coordinates.
        crs: The projected CRS, as WKT.
        pixel_area_ha: Area of one pixel in hectares.
    """

    path: Path
    classes: tuple[str, ...]
    shape: tuple[int, int]
    transform: Affine
    crs: str
    pixel_area_ha: float

    def windows(self, block: int = BLOCK_PX) -> list[Window]:
        """Blocks covering the map, row by row."""
        return block_windows(self.shape, block)


def raster_classes(src: rasterio.io.DatasetReader) -> tuple[str, ...] | None:
    """Class names a raster stores: band tag ``CATEGORY_NAMES``, or tag ``CLASSES``."""
    categories = src.tags(1).get("CATEGORY_NAMES")
    if categories:
        names = json.loads(categories)
        if isinstance(names, list) and len(names) > 1:
            return tuple(str(n) for n in names[1:])
    listed = src.tags().get("CLASSES")
    return tuple(n.strip() for n in listed.split(",")) if listed else None


def open_class_map(path: Path, what: str = "map") -> ClassMap:
    """Check that ``path`` is a class raster and describe it.

    Raises:
        ConfigError: Missing, unreadable, not one integer band, geographic or no CRS.
    """
    where = f"{what} {path}"
    if not path.is_file():
        raise ConfigError(
            f"{where} does not exist: give a class raster such as a run's invasive_class.tif"
        )
    try:
        with rasterio.open(path) as src:
            dtype = np.dtype(src.dtypes[0])
            if src.count != 1 or dtype.kind not in "ui":
                raise ConfigError(
                    f"{where} is not a class raster ({src.count} band(s) of {dtype}): give a "
                    "single-band integer raster such as a run's invasive_class.tif"
                )
            if src.crs is None or not src.crs.is_projected:
                raise ConfigError(
                    f"{where} has {'no' if src.crs is None else 'a geographic'} CRS: areas "
                    "need a projected one (a run's invasive_class.tif is in UTM)"
                )
            names = raster_classes(src)
            shape = (src.height, src.width)
            transform, crs = src.transform, src.crs
    except rasterio.errors.RasterioIOError as err:
        raise ConfigError(f"{where} cannot be read ({err}): give a GeoTIFF") from err
    metres = crs.linear_units_factor[1]
    pixel_area_ha = abs(transform.a * transform.e - transform.b * transform.d) * metres**2 / 1e4
    if names is None:
        names = _numbered_classes(path, shape)
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"{where} names its classes {list(names)}: names must be unique")
    return ClassMap(path, names, shape, transform, crs.to_wkt(), pixel_area_ha)


def _numbered_classes(path: Path, shape: tuple[int, int]) -> tuple[str, ...]:
    """Names ``"1".."max"`` of a raster that names no classes."""
    top = 0
    with class_reader(path) as read:
        for window in block_windows(shape, BLOCK_PX):
            top = max(top, int(read(window).max(initial=0)))
    if top == 0:
        raise ConfigError(f"map {path} holds no class value (only 0, no data)")
    return tuple(str(v) for v in range(1, top + 1))


@contextmanager
def class_reader(path: Path) -> Iterator[Reader]:
    """A reader of the raster's windows as int64 class values (0 = no data)."""
    with rasterio.open(path) as src:
        nodata = src.nodata

        def read(window: Window) -> NDArray[np.integer]:
            band = src.read(
                1, window=RioWindow(window.col_off, window.row_off, window.width, window.height)
            )
            values: NDArray[np.int64] = np.asarray(band, dtype=np.int64)
            if nodata is not None and not math.isnan(nodata) and nodata != 0:
                values[values == int(nodata)] = 0
            return values

        yield read


def class_counts(cmap: ClassMap) -> NDArray[np.int64]:
    """Pixels of each class over the whole map.

    Raises:
        ConfigError: A value beyond the map's classes.
    """
    windows = cmap.windows()
    with class_reader(cmap.path) as read:
        counts = count_strata(windows, _checked(read, cmap), len(cmap.classes))
    return np.asarray(counts.sum(axis=0), dtype=np.int64)


def zone_class_counts(cmap: ClassMap, zones: gpd.GeoDataFrame) -> NDArray[np.int64]:
    """Pixels of each class inside each zone (pixel centres), ``(zones, classes)``.

    Zones may overlap (a district and the farms inside it): a pixel counts in every zone
    that holds it.
    """
    shapes = list(zones.to_crs(cmap.crs).geometry)
    k = len(cmap.classes)
    counts = np.zeros((len(zones), k), dtype=np.int64)
    with class_reader(cmap.path) as read:
        for window in cmap.windows():
            values = _checked(read, cmap)(window)
            transform = cmap.transform * Affine.translation(window.col_off, window.row_off)
            for z, inside in zone_masks(shapes, values.shape, transform):
                these = values[inside & (values > 0)]
                counts[z] += np.bincount(these - 1, minlength=k)[:k]
    return counts


def zone_masks(
    shapes: Sequence[BaseGeometry | None], shape: tuple[int, int], transform: Affine
) -> Iterator[tuple[int, NDArray[np.bool_]]]:
    """``(zone index, pixels whose centre it holds)`` for each zone touching the window."""
    for z, geometry in enumerate(shapes):
        if geometry is None or geometry.is_empty:
            continue
        inside = rasterize(
            [(geometry, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8"
        ).astype(bool)
        if inside.any():
            yield z, inside


def _checked(read: Reader, cmap: ClassMap) -> Reader:
    def checked(window: Window) -> NDArray[np.integer]:
        values = read(window)
        top = int(values.max(initial=0))
        if top > len(cmap.classes) or int(values.min(initial=0)) < 0:
            raise ConfigError(
                f"map {cmap.path} holds class value {top} but names only "
                f"{len(cmap.classes)} classes ({', '.join(cmap.classes)}): give a class "
                "raster whose CATEGORY_NAMES tag lists every class"
            )
        return values

    return checked


def pixel_of(
    cmap: ClassMap, x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Row and column of map coordinates (``-1`` where outside the map)."""
    inv = ~cmap.transform
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cols = inv.a * x + inv.b * y + inv.c
    rows = inv.d * x + inv.e * y + inv.f
    r, c = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    outside = (r < 0) | (c < 0) | (r >= cmap.shape[0]) | (c >= cmap.shape[1])
    return np.where(outside, -1, r), np.where(outside, -1, c)


def values_at(
    cmap: ClassMap, rows: NDArray[np.int64], cols: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Class values at pixels (all inside the map), read window by window."""
    out = np.zeros(rows.shape, dtype=np.int64)
    with class_reader(cmap.path) as read:
        for window in cmap.windows():
            here = (
                (rows >= window.row_off)
                & (rows < window.row_off + window.height)
                & (cols >= window.col_off)
                & (cols < window.col_off + window.width)
            )
            if here.any():
                values = read(window)
                out[here] = values[rows[here] - window.row_off, cols[here] - window.col_off]
    return out


def pixel_centres(
    cmap: ClassMap, rows: NDArray[np.int64], cols: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Map coordinates of pixel centres."""
    t = cmap.transform
    c, r = cols + 0.5, rows + 0.5
    return t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f
