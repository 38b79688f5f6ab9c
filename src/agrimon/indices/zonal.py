"""Zonal time series: per-zone statistics of index stacks, computed tile by tile.

For every zone (field, farm, district) of an AOI, every date and every index, the table
gives the ``mean``, ``median`` and ``std`` of the zone's clear pixels, their ``count`` and
the ``clear_fraction`` (clear pixels / pixels of the zone).

How it is computed, in three pure steps the flow can spread over tiles:

1. :func:`zone_pixels` picks each zone's pixels on one geobox by **centre in polygon**
   (``rasterio.features.rasterize`` with ``all_touched=False`` after reprojecting the zones
   to the geobox's CRS; lon/lat zones are projected like the tile footprints, with
   `agrimon.grid.from_lonlat`). Each zone is rasterized on its own (in its bounding window), so
   overlapping zones, such as an outline around smaller fields, each keep all their pixels.
2. :func:`zonal_partial` turns one tile's computed index blocks and clear mask into a
   :class:`ZonalPartial`: per zone, date and index the clear-pixel count, mean and sum of
   squared deviations (the numerically stable form of count / sum / sum of squares), and,
   unless ``median=False``, the zone's pixel values themselves.
3. :func:`combine_partials` merges the tiles' partials exactly (counts add, means and squared
   deviations merge by Chan et al.'s pairwise update, value arrays are concatenated) and
   :func:`zonal_table` turns the result into the tidy table.

Definitions:

* ``std`` is the **population** standard deviation (``ddof=0``).
* With the values kept (the default), ``mean``, ``median`` and ``std`` are computed from the
  zone's sorted values, so they do not depend on how the AOI was cut into tiles: a
  multi-tile result equals the single-grid result bit for bit. Memory: 8 bytes × dates ×
  indices × pixels of the zone, held until the table is made (2.4 MB for a 10 ha field, 100
  dates and 3 indices; 8 GB for a 1000 km² district, 100 dates and one index: pass
  ``median=False`` for such zones and get ``median`` as NaN, except for point-sized zones,
  and the other statistics from the partial sums, equal to within float rounding).
* A **zone without a pixel centre** (smaller than a pixel, or a thin sliver) is not dropped:
  it gets the one pixel that contains its representative point (``pixels`` = 1). This is
  decided after all tiles are combined, so a zone whose pixel centres lie in another tile
  never gets the extra pixel.
* A **zone outside the data** (no pixel of any tile) has ``pixels`` = 0, ``count`` = 0,
  NaN statistics and a NaN ``clear_fraction`` (undefined: no pixel). A zone inside the data
  on an all-cloudy date has ``count`` = 0, NaN statistics and ``clear_fraction`` = 0.
* A pixel counts as clear for an index on a date when the clear mask is True there and the
  index value is finite (an index NaN where it is undefined is not clear).
* Tiles of one UTM zone never overlap, but tiles of neighbouring UTM zones do: pass each
  tile's footprint mask (``agrimon.monitor.inside_mask(tile)``) as ``inside`` so that every
  piece of ground is counted once.

Writing the table (Parquet and CSV, :func:`write_zonal_table`) is the only I/O here.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from agrimon.errors import ConfigError, ProductError
from agrimon.grid import from_lonlat
from agrimon.indices.composites import nanmedian_last

__all__ = [
    "COLUMNS",
    "DEFAULT_STEM",
    "TableFormat",
    "ZonalPartial",
    "ZonePixels",
    "combine_partials",
    "read_zonal_table",
    "write_zonal_table",
    "zonal_geodataframe",
    "zonal_partial",
    "zonal_stats",
    "zonal_table",
    "zone_pixels",
]

#: Columns of the tidy table, in order. ``pixels`` is the zone's pixel count (the
#: denominator of ``clear_fraction``; 1 for a zone that fell back to its representative
#: point, 0 for a zone outside the data).
COLUMNS: tuple[str, ...] = (
    "zone_id",
    "name",
    "time",
    "index",
    "mean",
    "median",
    "std",
    "count",
    "clear_fraction",
    "pixels",
)

#: File name (less suffix) used by :func:`write_zonal_table` when given a folder.
DEFAULT_STEM = "zonal_stats"

#: Formats :func:`write_zonal_table` writes.
TableFormat = Literal["parquet", "csv"]

_DTYPES: dict[str, str] = {
    "zone_id": "int64",
    "time": "datetime64[ns]",
    "mean": "float64",
    "median": "float64",
    "std": "float64",
    "count": "int64",
    "clear_fraction": "float64",
    "pixels": "int64",
}

Floats = NDArray[np.float64]


# --- which pixels belong to which zone ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ZonePixels:
    """The pixels of one geobox that belong to each zone.

    Attributes:
        shape: ``(height, width)`` of the geobox.
        pixels: Per zone (in the zones' row order), the flat (row-major) indices of the
            pixels whose centre lies in the zone, ascending.
        fallback: Per zone, the flat index of the pixel containing the zone's representative
            point when that point lies on this geobox (and inside ``inside``), else None.
            Used only when the zone has no pixel centre on any tile.
    """

    shape: tuple[int, int]
    pixels: tuple[NDArray[np.intp], ...]
    fallback: tuple[int | None, ...]


def zone_pixels(
    zones: gpd.GeoDataFrame,
    geobox: Any,
    *,
    inside: NDArray[np.bool_] | None = None,
) -> ZonePixels:
    """Pick each zone's pixels on a geobox by centre in polygon.

    Args:
        zones: Zones with a CRS (e.g. ``Aoi.zones`` in EPSG:4326); reprojected here.
        geobox: ``odc.geo.geobox.GeoBox`` of the data (CRS, affine, shape).
        inside: Optional ``(height, width)`` mask; pixels where it is False belong to no
            zone (e.g. outside the tile's footprint).

    Returns:
        The pixels of every zone, each zone rasterized independently.

    Raises:
        ConfigError: The zones have no CRS.
        ValueError: ``inside`` does not have the geobox's shape.
    """
    height, width = (int(n) for n in geobox.shape)
    if inside is not None and inside.shape != (height, width):
        raise ValueError(f"inside mask has shape {inside.shape}, geobox {(height, width)}")
    flat_inside = None if inside is None else np.asarray(inside, dtype=bool).ravel()
    affine: Affine = geobox.affine
    inverse = ~affine
    pixels: list[NDArray[np.intp]] = []
    fallback: list[int | None] = []
    for geom in _zones_in_crs(zones, geobox.crs):
        if geom is None or geom.is_empty:
            pixels.append(np.empty(0, dtype=np.intp))
            fallback.append(None)
            continue
        found = _centre_pixels(geom, affine, inverse, (height, width))
        point = _point_pixel(geom.representative_point(), inverse, (height, width))
        if flat_inside is not None:
            found = found[flat_inside[found]]
            if point is not None and not flat_inside[point]:
                point = None
        pixels.append(found)
        fallback.append(point)
    return ZonePixels((height, width), tuple(pixels), tuple(fallback))


def _zones_in_crs(zones: gpd.GeoDataFrame, crs: Any) -> list[BaseGeometry | None]:
    """Zone geometries in ``crs``.

    Lon/lat zones go to an EPSG target through `agrimon.grid.from_lonlat`, the projection
    the tile footprints get, so that a zone equal to the AOI has the footprint's pixels.
    """
    if zones.crs is None:
        raise ConfigError(
            "zones have no CRS: give them one (e.g. read them with agrimon.aoi.read_aoi, "
            "which brings them to EPSG:4326)"
        )
    target = CRS.from_user_input(str(crs))
    source = CRS.from_user_input(zones.crs)
    geoms = zones.geometry
    if source == target:
        return list(geoms.array)
    epsg = target.to_epsg()
    if source == CRS.from_epsg(4326) and epsg is not None:
        return [None if g is None or g.is_empty else from_lonlat(g, epsg) for g in geoms.array]
    return list(geoms.to_crs(target).array)


def _centre_pixels(
    geom: BaseGeometry, affine: Affine, inverse: Affine, shape: tuple[int, int]
) -> NDArray[np.intp]:
    """Flat indices of the pixels whose centre is in ``geom``, rasterized in its window."""
    height, width = shape
    minx, miny, maxx, maxy = geom.bounds
    corners = [inverse * (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    # A pixel left of floor(min col) has its centre left of the geometry's bounds.
    c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), width)
    r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), height)
    if c0 >= c1 or r0 >= r1:
        return np.empty(0, dtype=np.intp)
    burnt = rasterize(
        [(geom, 1)],
        out_shape=(r1 - r0, c1 - c0),
        transform=affine * Affine.translation(c0, r0),
        fill=0,
        all_touched=False,
        dtype="uint8",
    )
    rr, cc = np.nonzero(burnt)
    return np.asarray((rr + r0) * width + (cc + c0), dtype=np.intp)


def _point_pixel(point: BaseGeometry, inverse: Affine, shape: tuple[int, int]) -> int | None:
    """Flat index of the pixel containing ``point``, or None off the grid."""
    col, row = inverse * (point.x, point.y)
    c, r = math.floor(col), math.floor(row)
    if 0 <= r < shape[0] and 0 <= c < shape[1]:
        return r * shape[1] + c
    return None


# --- per-tile partial statistics ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ZonalPartial:
    """Zonal statistics of part of the data (one tile), ready to be combined exactly.

    Arrays are indexed ``[zone, time, index]`` in the order of ``zone_ids``, ``times`` and
    ``indices``.

    Attributes:
        zone_ids: Zone ids, shape ``(Z,)``.
        names: Zone names.
        times: Dates, ascending, shape ``(T,)`` (``datetime64[ns]``).
        indices: Index (variable) names.
        pixels: Pixels of each zone covered here (clear or not), shape ``(Z,)``.
        count: Clear pixels, shape ``(Z, T, I)``.
        mean: Mean of the clear pixels (0 where ``count`` is 0), float64.
        m2: Sum of squared deviations from ``mean`` (0 where ``count`` is 0), float64.
        values: Per zone, the values of its pixels here, shape ``(T, I, pixels)``, NaN where
            not clear; None when the partial was made with ``median=False``.
        fallback: Per zone, the values ``(T, I)`` of the pixel holding its representative
            point when that pixel is here, else None.
    """

    zone_ids: NDArray[np.int64]
    names: tuple[str, ...]
    times: NDArray[np.datetime64]
    indices: tuple[str, ...]
    pixels: NDArray[np.int64]
    count: NDArray[np.int64]
    mean: Floats
    m2: Floats
    values: tuple[Floats, ...] | None
    fallback: tuple[Floats | None, ...]


def zonal_partial(
    indices: xr.Dataset | xr.DataArray,
    zones: gpd.GeoDataFrame,
    *,
    clear: xr.DataArray | NDArray[np.bool_] | None = None,
    geobox: Any = None,
    inside: NDArray[np.bool_] | None = None,
    median: bool = True,
) -> ZonalPartial:
    """Zonal statistics of one tile, to be combined with the other tiles'.

    Args:
        indices: Index stack ``(time, y, x)`` on one geobox, one variable per index (a
            DataArray is one index, named by its name or ``"index"``); NaN = not clear or no
            data. Dask-backed variables are computed here, one at a time.
        zones: Zones with ``zone_id`` (else 1..n), ``name`` (else ``"zone <id>"``) and a CRS.
        clear: Clear-sky mask ``(time, y, x)``, True where usable; None: every finite value
            is clear.
        geobox: The data's ``GeoBox``; default ``indices.odc.geobox``.
        inside: Optional ``(y, x)`` mask of the pixels this tile owns (its footprint).
        median: Keep the pixel values (needed for the median, and for results that do not
            depend on the tiling); False keeps only the partial sums.

    Returns:
        The tile's partial statistics.

    Raises:
        ConfigError: The zones have no CRS, none at all, or repeated ``zone_id`` values.
        ValueError: The stack is not ``(time, y, x)`` on the geobox, or ``clear`` does not
            match it.
    """
    data = (
        indices.to_dataset(name=indices.name or "index")
        if isinstance(indices, xr.DataArray)
        else indices
    )
    if geobox is None:
        geobox = data.odc.geobox
        if geobox is None:
            raise ValueError("the index stack has no geobox: pass geobox=")
    names = [str(n) for n in data.data_vars]
    if not names:
        raise ValueError("the index stack has no variable")
    blocks = [data[n].transpose("time", "y", "x") for n in names]
    n_times = int(data.sizes["time"])
    shape = (n_times, *(int(s) for s in geobox.shape))
    for name, block in zip(names, blocks, strict=True):
        if block.shape != shape:
            raise ValueError(f"index {name!r} has shape {block.shape}, expected {shape}")
    flat = [np.asarray(b.values).reshape(n_times, -1) for b in blocks]
    flat_clear: NDArray[np.bool_] | None = None
    if clear is not None:
        mask = (
            clear.transpose("time", "y", "x").values if isinstance(clear, xr.DataArray) else clear
        )
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise ValueError(f"clear mask has shape {mask.shape}, expected {shape}")
        flat_clear = mask.reshape(n_times, -1)
    zone_ids, zone_names = _zone_labels(zones)
    where = zone_pixels(zones, geobox, inside=inside)

    def gather(pix: NDArray[np.intp]) -> Floats:
        """Values ``(T, I, len(pix))`` of the given pixels, NaN where not clear."""
        out = np.stack([f[:, pix] for f in flat], axis=1).astype(np.float64)
        if flat_clear is not None:
            out[~np.broadcast_to(flat_clear[:, None, pix], out.shape)] = np.nan
        return out

    values: list[Floats] = []
    stats = []
    for pix in where.pixels:  # one zone at a time: only kept values stay in memory
        zone_values = gather(pix)
        stats.append(_moments(zone_values))
        if median:
            values.append(zone_values)
    fallback = [
        None if p is None else gather(np.array([p], dtype=np.intp))[..., 0] for p in where.fallback
    ]
    times = np.asarray(data["time"].values).astype("datetime64[ns]")
    order = np.argsort(times, kind="stable")
    return ZonalPartial(
        zone_ids=zone_ids,
        names=zone_names,
        times=times[order],
        indices=tuple(names),
        pixels=np.array([len(p) for p in where.pixels], dtype=np.int64),
        count=np.stack([s[0] for s in stats])[:, order],
        mean=np.stack([s[1] for s in stats])[:, order],
        m2=np.stack([s[2] for s in stats])[:, order],
        values=tuple(v[order] for v in values) if median else None,
        fallback=tuple(None if f is None else f[order] for f in fallback),
    )


def _zone_labels(zones: gpd.GeoDataFrame) -> tuple[NDArray[np.int64], tuple[str, ...]]:
    """Zone ids (``zone_id`` or 1..n) and names (``name`` or ``zone <id>``)."""
    if len(zones) == 0:
        raise ConfigError("there are no zones: give at least one polygon")
    if "zone_id" in zones.columns:
        ids = np.asarray(zones["zone_id"], dtype=np.int64)
    else:
        ids = np.arange(1, len(zones) + 1, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ConfigError("zone_id values are not unique: give every zone its own id")
    if "name" in zones.columns:
        names = tuple(str(n) for n in zones["name"])
    else:
        names = tuple(f"zone {i}" for i in ids)
    return ids, names


def _moments(values: Floats) -> tuple[NDArray[np.int64], Floats, Floats]:
    """Count, mean and sum of squared deviations over the last axis, ignoring NaN."""
    count = np.sum(~np.isnan(values), axis=-1).astype(np.int64)
    total = np.nansum(values, axis=-1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    m2 = np.nansum((values - mean[..., None]) ** 2, axis=-1)
    return count, mean, m2


def combine_partials(partials: Iterable[ZonalPartial]) -> ZonalPartial:
    """Merge the partials of several tiles into one, exactly.

    Tiles may hold different dates (each tile's scenes are found separately): the result
    covers the union of the dates and indices, and a tile without a date contributes its
    pixels to the zone's pixel count but no clear pixel on that date.

    Args:
        partials: Partials of the same zones, one per tile.

    Returns:
        The combined partial; values are kept only if every partial kept them.

    Raises:
        ValueError: No partial, or partials of different zones.
    """
    parts = list(partials)
    if not parts:
        raise ValueError("no partial to combine")
    first = parts[0]
    for p in parts[1:]:
        if not np.array_equal(p.zone_ids, first.zone_ids):
            raise ValueError("partials are of different zones: make them from the same zones")
    times = np.unique(np.concatenate([p.times for p in parts])).astype("datetime64[ns]")
    indices = tuple(dict.fromkeys(i for p in parts for i in p.indices))
    n_zones, shape = len(first.zone_ids), (len(times), len(indices))
    count = np.zeros((n_zones, *shape), dtype=np.int64)
    mean = np.zeros((n_zones, *shape))
    m2 = np.zeros((n_zones, *shape))
    keep = all(p.values is not None for p in parts)
    values: list[list[Floats]] = [[] for _ in range(n_zones)]
    fallback: list[Floats | None] = [None] * n_zones
    for p in parts:
        t_at = np.searchsorted(times, p.times)
        i_at = np.array([indices.index(i) for i in p.indices], dtype=np.intp)
        grid = np.ix_(np.arange(n_zones), t_at, i_at)
        pc, pm, pm2 = np.zeros_like(count), np.zeros_like(mean), np.zeros_like(m2)
        pc[grid], pm[grid], pm2[grid] = p.count, p.mean, p.m2
        total: NDArray[np.int64] = count + pc
        share = np.divide(pc, total, out=np.zeros(total.shape), where=total > 0)
        delta = pm - mean
        m2 = m2 + pm2 + delta**2 * count * share
        mean = mean + delta * share
        count = total
        for z in range(n_zones):
            if keep and p.values is not None:
                values[z].append(_expand(p.values[z], t_at, i_at, shape))
            found = p.fallback[z]
            if fallback[z] is None and found is not None:
                fallback[z] = _expand(found[..., None], t_at, i_at, shape)[..., 0]
    return ZonalPartial(
        zone_ids=first.zone_ids,
        names=first.names,
        times=times,
        indices=indices,
        pixels=np.sum([p.pixels for p in parts], axis=0).astype(np.int64),
        count=count,
        mean=mean,
        m2=m2,
        values=tuple(np.concatenate(v, axis=-1) for v in values) if keep else None,
        fallback=tuple(fallback),
    )


def _expand(
    values: Floats, t_at: NDArray[np.intp], i_at: NDArray[np.intp], shape: tuple[int, int]
) -> Floats:
    """Place ``(t, i, n)`` values on the combined ``(T, I, n)`` grid, NaN elsewhere."""
    out = np.full((*shape, values.shape[-1]), np.nan)
    out[np.ix_(t_at, i_at)] = values
    return out


# --- the table -----------------------------------------------------------------------------------


def zonal_table(partial: ZonalPartial) -> pd.DataFrame:
    """The tidy zonal time series of a (combined) partial.

    Args:
        partial: Statistics of the whole AOI (:func:`combine_partials` of every tile, or
            the partial of a single geobox).

    Returns:
        One row per zone × date × index (zones in their order, then dates, then indices)
        with the columns of :data:`COLUMNS`; see the module docstring for the definitions.
    """
    n_zones, n_times, n_indices = partial.count.shape
    cols: dict[str, list[Floats | NDArray[np.int64]]] = {
        k: [] for k in ("mean", "median", "std", "count", "clear_fraction", "pixels")
    }
    for z in range(n_zones):
        pixels = int(partial.pixels[z])
        found = partial.fallback[z]
        if pixels == 0 and found is not None:
            pixels, samples = 1, found[..., None]
        elif partial.values is not None:
            samples = partial.values[z]
        else:
            samples = None
        if samples is not None:
            count, mean, median, std = _sample_stats(samples)
        else:
            count = partial.count[z]
            mean = np.where(count > 0, partial.mean[z], np.nan)
            median = np.full(count.shape, np.nan)
            safe = np.maximum(count, 1)
            std = np.where(count > 0, np.sqrt(np.maximum(partial.m2[z], 0.0) / safe), np.nan)
        fraction = count / pixels if pixels > 0 else np.full(count.shape, np.nan)
        for key, arr in (
            ("mean", mean),
            ("median", median),
            ("std", std),
            ("count", count),
            ("clear_fraction", fraction),
            ("pixels", np.full(count.shape, pixels, dtype=np.int64)),
        ):
            cols[key].append(np.asarray(arr).ravel())
    per_zone = n_times * n_indices
    frame = pd.DataFrame(
        {
            "zone_id": np.repeat(partial.zone_ids, per_zone),
            "name": pd.Series(np.repeat(np.array(partial.names, dtype=object), per_zone)),
            "time": np.tile(np.repeat(partial.times, n_indices), n_zones),
            "index": np.tile(np.array(partial.indices, dtype=object), n_zones * n_times),
            **{k: np.concatenate(v) if v else np.empty(0) for k, v in cols.items()},
        }
    )
    return _typed(frame)


def _sample_stats(samples: Floats) -> tuple[NDArray[np.int64], Floats, Floats, Floats]:
    """Count, mean, median and population std over the last axis, ignoring NaN.

    The values are sorted first so that the result depends only on the set of values, not
    on their order (i.e. not on the tiling). The sorted copy is made C-contiguous because
    numpy's summation order follows the memory layout.
    """
    ordered = np.ascontiguousarray(np.sort(samples, axis=-1))
    count = np.sum(~np.isnan(ordered), axis=-1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(ordered, axis=-1) / count, np.nan)
        squares = np.nansum((ordered - mean[..., None]) ** 2, axis=-1)
        std = np.where(count > 0, np.sqrt(squares / count), np.nan)
    median = nanmedian_last(ordered) if ordered.shape[-1] else np.full(count.shape, np.nan)
    return count, _floats(mean), _floats(median), _floats(std)


def _floats(values: Any) -> Floats:
    """``values`` as a float64 array (for the type checker; no copy when already one)."""
    return np.asarray(values, dtype=np.float64)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in :data:`COLUMNS` order with their fixed dtypes."""
    frame = frame.astype(_DTYPES)
    frame["name"] = frame["name"].astype(str)
    frame["index"] = frame["index"].astype(str)
    return frame.loc[:, list(COLUMNS)].reset_index(drop=True)


def zonal_stats(
    indices: xr.Dataset | xr.DataArray,
    zones: gpd.GeoDataFrame,
    *,
    clear: xr.DataArray | NDArray[np.bool_] | None = None,
    geobox: Any = None,
    median: bool = True,
) -> pd.DataFrame:
    """Zonal time series of an index stack on a single geobox (one tile, or a small AOI).

    Shorthand for ``zonal_table(zonal_partial(...))``; for several tiles, make one
    :func:`zonal_partial` per tile and :func:`combine_partials` them.

    Args:
        indices: Index stack ``(time, y, x)``; see :func:`zonal_partial`.
        zones: Zones with ``zone_id``, ``name`` and a CRS.
        clear: Clear-sky mask ``(time, y, x)``, or None.
        geobox: The data's ``GeoBox``; default ``indices.odc.geobox``.
        median: Keep pixel values for the median (see the module docstring).

    Returns:
        The tidy table (:data:`COLUMNS`).
    """
    return zonal_table(zonal_partial(indices, zones, clear=clear, geobox=geobox, median=median))


def zonal_geodataframe(table: pd.DataFrame, zones: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The tidy table with each row's zone geometry, in EPSG:4326.

    Long form, not a wide summary: one feature per zone × date × index, the zone's geometry
    repeated, so that a GIS can filter by ``index`` and animate by ``time`` (QGIS temporal
    controller) without a join.

    Args:
        table: Output of :func:`zonal_table` (or :func:`read_zonal_table`).
        zones: The zones the table was made from (``zone_id`` and a CRS).

    Returns:
        GeoDataFrame with the table's columns, in its row order, plus ``geometry``.

    Raises:
        ConfigError: The zones have no CRS.
    """
    if zones.crs is None:
        raise ConfigError("zones have no CRS: give them one (e.g. read them with read_aoi)")
    ids, _ = _zone_labels(zones)
    shapes = gpd.GeoDataFrame({"zone_id": ids}, geometry=zones.geometry.to_crs(4326).array)
    joined = table.merge(shapes, on="zone_id", how="left", validate="many_to_one", sort=False)
    return gpd.GeoDataFrame(joined, geometry="geometry", crs=4326)


# --- I/O -----------------------------------------------------------------------------------------


def write_zonal_table(
    table: pd.DataFrame,
    path: str | Path,
    *,
    formats: Sequence[TableFormat] = ("parquet", "csv"),
) -> tuple[Path, ...]:
    """Write the tidy table as Parquet and/or CSV.

    Args:
        table: Output of :func:`zonal_table`.
        path: A folder (created if needed; files ``zonal_stats.parquet`` / ``.csv`` in it),
            or a file path whose suffix is replaced by each format's.
        formats: What to write. CSV floats are written in shortest round-trip form, so
            :func:`read_zonal_table` gives the table back exactly.

    Returns:
        The written files, in the order of ``formats``.

    Raises:
        ProductError: Parquet is asked for and no Parquet engine (pyarrow or fastparquet)
            is installed, or a file cannot be written; nothing is written then.
    """
    path = Path(path)
    base = (
        path.with_suffix("") if path.suffix.lower() in (".parquet", ".csv") else path / DEFAULT_STEM
    )
    if "parquet" in formats and not _parquet_engine():
        raise ProductError(
            f"cannot write {base.with_suffix('.parquet')}: no Parquet engine is installed; "
            "install pyarrow (pip install pyarrow) or write CSV only (formats=('csv',))"
        )
    written: list[Path] = []
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            target = base.with_suffix(f".{fmt}")
            if fmt == "parquet":
                table.to_parquet(target, index=False)
            elif fmt == "csv":
                table.to_csv(target, index=False)
            else:
                raise ConfigError(f"unknown table format {fmt!r}: use 'parquet' or 'csv'")
            written.append(target)
    except OSError as err:
        raise ProductError(
            f"cannot write the zonal table to {base.parent} ({err.strerror or err}): "
            "check that the folder is writable and the disk not full"
        ) from err
    return tuple(written)


def read_zonal_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_zonal_table`, with its dtypes.

    Args:
        path: A ``.parquet`` or ``.csv`` file.

    Returns:
        The table, equal to the one written.
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(
            path,
            dtype={"name": str, "index": str},
            keep_default_na=False,
            # Only the statistics can be missing: a name such as "" or "NA" stays text.
            na_values={c: [""] for c in ("mean", "median", "std", "clear_fraction")},
            parse_dates=["time"],
        )
    return _typed(frame)


def _parquet_engine() -> bool:
    """True when pandas can write Parquet (pyarrow or fastparquet importable)."""
    return any(importlib.util.find_spec(m) is not None for m in ("pyarrow", "fastparquet"))
