"""Property tests of the tiling grid, the composites, the polygoniser and the area estimator.

Hypothesis draws the inputs (AOIs across zone borders and the equator, NaN patterns and dask
chunkings, class rasters, stratified samples); every property is checked against a reference
worked out independently of the code under test: NumPy's NaN reducers, scipy's labelling,
pixel-centre lookups in shapely, the closed forms of a simple random sample. The unit tests
beside each module (``tests/test_grid.py``, ``test_composites.py``, ``test_area_polygons.py``,
``test_area_estimator.py``) hold the hand-made and published cases; the properties here are
the ones those do not already draw.

Every test is small (a few km of AOI, rasters of a few hundred pixels, samples of tens of
units) so that the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from unittest import mock

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from scipy import ndimage
from shapely.geometry import Polygon, box

from agrimon.area.estimator import AreaEstimate, estimate
from agrimon.area.polygons import ArrayMaps, vectorise_maps
from agrimon.grid import Tile, plan_tiles, snap_bounds, utm_epsg
from agrimon.indices import composites
from agrimon.indices.composites import (
    NETWORK_MAX,
    Reducer,
    composite,
    greenest,
    monthly_periods,
    nanpercentile_last,
    temporal_reduce,
)


def fast(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings of this file: ``examples`` cases, no deadline (shared CPUs)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` without NumPy's all-NaN-slice warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


# --- 1. the tiling grid -------------------------------------------------------------------

#: Zone borders (18° E: 33/34, 72° W: 18/19, 0°: 30/31) and latitudes on and off the equator.
BORDER_LONS = (18.0, -72.0, 0.0)
LATS = (-19.6, 0.0, 47.0)


@st.composite
def small_boxes(draw: st.DrawFn) -> Polygon:
    """Lon/lat boxes of 0.5 to 20 km, often across a zone border, the equator or both."""
    west = draw(st.sampled_from(BORDER_LONS)) + draw(st.floats(-0.2, 0.15))
    south = draw(st.sampled_from(LATS)) + draw(st.floats(-0.2, 0.15))
    width, height = draw(st.floats(0.005, 0.18)), draw(st.floats(0.005, 0.18))
    return box(west, south, west + width, south + height)


TILE_PX = st.sampled_from([256, 512, 1024])
#: Edges are straight in UTM between points 0.01° apart (``grid._DENSIFY_DEG``): back in
#: lon/lat they sag from the AOI's and the zones' edges by a few centimetres.
SAG_DEG = 1e-6


@fast(40)
@given(lon=st.floats(-180, 180), lat=st.floats(-90, 90))
def test_utm_zone_contains_the_point(lon: float, lat: float) -> None:
    epsg = utm_epsg(lon, lat)
    zone, base = epsg % 100, epsg - epsg % 100
    west = -180.0 + 6.0 * (zone - 1)
    assert 1 <= zone <= 60
    assert west <= lon < west + 6.0 or (lon == 180.0 and zone == 60)
    assert base == (32600 if lat >= 0 else 32700)


@fast(60)
@given(
    bounds=st.tuples(*[st.floats(-1e6, 1e7, allow_nan=False)] * 2, *[st.floats(0, 5e4)] * 2),
    res=st.sampled_from([10.0, 20.0, 60.0, 0.5]),
)
def test_snap_bounds_is_the_smallest_aligned_cover(
    bounds: tuple[float, float, float, float], res: float
) -> None:
    x, y, dx, dy = bounds
    left, bottom, right, top = snap_bounds((x, y, x + dx, y + dy), res)
    tol = 1e-6 * res + 1e-9 * max(abs(x), abs(y))  # snap_bounds rounds to 1e-6 pixel
    for edge in (left, bottom, right, top):
        assert edge / res == round(edge / res)  # on the global pixel grid
    # It covers the bounds, and moving any edge in by a pixel would not.
    assert left <= x + tol and bottom <= y + tol
    assert right >= x + dx - tol and top >= y + dy - tol
    assert left > x - res - tol and bottom > y - res - tol
    assert right < x + dx + res + tol and top < y + dy + res + tol


@fast(80)
@given(
    zone=st.integers(1, 60),
    north=st.booleans(),
    col=st.integers(0, 99_999),
    row=st.integers(0, 999_999),
    size=st.sampled_from([256, 1024, 4096]),
)
def test_tile_id_round_trips(zone: int, north: bool, col: int, row: int, size: int) -> None:
    tile = Tile((32600 if north else 32700) + zone, col, row, size)
    match = re.fullmatch(r"(\d{2})([NS])_(\d{4,})_(\d{4,})", tile.id)
    assert match is not None, tile.id
    assert int(match[1]) == zone and (match[2] == "N") == north
    assert (int(match[3]), int(match[4])) == (col, row)
    assert tile.zone == zone and tile.hemisphere == match[2]


@fast(25)
@given(aoi=small_boxes(), tile_px=TILE_PX)
def test_tiles_lie_in_their_zone_and_hemisphere(aoi: Polygon, tile_px: int) -> None:
    tiles = plan_tiles(aoi, tile_px=tile_px)
    for t in tiles:
        lonlat = t.footprint_lonlat()
        minx, miny, maxx, maxy = lonlat.bounds
        west = -180.0 + 6.0 * (t.zone - 1)
        assert west - SAG_DEG <= minx < maxx <= west + 6.0 + SAG_DEG, t.id
        if t.hemisphere == "N":
            assert miny >= -SAG_DEG, t.id
        else:
            assert maxy <= SAG_DEG, t.id
        inside = lonlat.representative_point()
        assert utm_epsg(inside.x, inside.y) == t.epsg, t.id
        assert aoi.buffer(SAG_DEG).contains(lonlat)
    # Back in lon/lat, the footprints add up to the AOI (they partition it).
    assert sum(t.footprint_lonlat().area for t in tiles) == pytest.approx(aoi.area, rel=1e-6)


@fast(25)
@given(aoi=small_boxes(), tile_px=TILE_PX)
def test_tiles_come_zone_by_zone_north_to_south_west_to_east(aoi: Polygon, tile_px: int) -> None:
    tiles = plan_tiles(aoi, tile_px=tile_px)
    keys = [(t.epsg, -t.row, t.col) for t in tiles]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert plan_tiles(aoi, tile_px=tile_px) == tiles  # and the same on every run


@fast(25)
@given(aoi=small_boxes(), tile_px=TILE_PX)
def test_tile_geoboxes_are_windows_of_the_tile_grid_tight_on_the_footprint(
    aoi: Polygon, tile_px: int
) -> None:
    for t in plan_tiles(aoi, tile_px=tile_px):
        full, grid, span, res = t.full_geobox, t.geobox, t.span, t.res
        assert full.shape == (tile_px, tile_px)
        assert full.affine == Affine(res, 0.0, t.col * span, 0.0, -res, (t.row + 1) * span)
        # The loaded grid is the tile grid cut at whole pixels: same pixels, an offset.
        assert grid.affine.a == res and grid.affine.e == -res
        col_off = (grid.affine.c - full.affine.c) / res
        row_off = (full.affine.f - grid.affine.f) / res
        assert col_off == round(col_off) and row_off == round(row_off)
        height, width = grid.shape
        assert col_off >= 0 and col_off + width <= tile_px
        assert row_off >= 0 and row_off + height <= tile_px
        # It holds the footprint, and one pixel less on any side would cut it.
        assert t.footprint is not None
        minx, miny, maxx, maxy = t.footprint.bounds
        left, top = grid.affine.c, grid.affine.f
        right, bottom = left + width * res, top - height * res
        tol = 1e-6 * res
        assert left <= minx + tol and minx < left + res + tol
        assert right >= maxx - tol and maxx > right - res - tol
        assert bottom <= miny + tol and miny < bottom + res + tol
        assert top >= maxy - tol and maxy > top - res - tol


@fast(20)
@given(aoi=small_boxes(), tile_px=st.sampled_from([256, 512]))
def test_tiles_of_half_the_size_nest_in_the_larger_tiles(aoi: Polygon, tile_px: int) -> None:
    small, large = plan_tiles(aoi, tile_px=tile_px), plan_tiles(aoi, tile_px=2 * tile_px)
    parents: dict[tuple[int, int, int], float] = {}
    for t in small:
        assert t.footprint is not None
        key = (t.epsg, t.col // 2, t.row // 2)
        parents[key] = parents.get(key, 0.0) + t.footprint.area
    areas = {(t.epsg, t.col, t.row): t.footprint.area for t in large if t.footprint is not None}
    # Each large tile's footprint is the union of its four children's (slivers of < 1 cm²,
    # which plan_tiles drops, aside).
    for key in set(parents) | set(areas):
        assert parents.get(key, 0.0) == pytest.approx(areas.get(key, 0.0), rel=1e-9, abs=1e-3)


# --- 2. composites -------------------------------------------------------------------------


@st.composite
def stacks(draw: st.DrawFn, max_time: int = 12, max_side: int = 9) -> NDArray[np.float32]:
    """Float32 stacks ``(time, y, x)`` with NaN patterns from none to all, ties likely."""
    shape = (
        draw(st.integers(1, max_time)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.sampled_from([3, 50, 10_000]))  # few levels: many ties
    values = (rng.integers(0, levels, shape) / levels - 0.2).astype(np.float32)
    values[rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))] = np.nan
    if draw(st.booleans()):
        values[:, 0, 0] = np.nan  # a pixel never clear
    return values


def lazy(values: NDArray[Any], chunks: tuple[int, int, int]) -> xr.DataArray:
    """``values`` as a dask-backed ``(time, y, x)`` DataArray with 5-daily times."""
    times = pd.date_range("2024-01-02 09:30", periods=values.shape[0], freq="5D")
    return xr.DataArray(
        da.from_array(values, chunks=chunks), dims=("time", "y", "x"), coords={"time": times}
    )


REFERENCES: dict[str, Callable[..., Any]] = {
    "median": np.nanmedian,
    "mean": np.nanmean,
    "max": np.nanmax,
    "min": np.nanmin,
}


@fast(50)
@given(
    values=stacks(),
    reducer=st.sampled_from(["median", "mean", "max", "min", "percentile", "count"]),
    q=st.floats(0, 100),
    data=st.data(),
)
def test_lazy_reducers_match_numpy_for_any_chunking(
    values: NDArray[np.float32], reducer: Reducer, q: float, data: st.DataObject
) -> None:
    chunks = tuple(
        data.draw(st.integers(1, n), label=f"chunk {k}") for k, n in enumerate(values.shape)
    )
    arr = lazy(values, chunks)  # type: ignore[arg-type]
    got = temporal_reduce(arr, reducer, q=q)
    assert isinstance(got.data, da.Array)
    assert got.data.chunks == arr.data.chunks[1:]  # spatial chunks kept
    # The same numbers as in memory, whatever the chunks ...
    eager = temporal_reduce(arr.compute(), reducer, q=q)
    np.testing.assert_array_equal(got.values, eager.values)
    # ... and as NumPy's NaN reducers (NaN, count 0, where a pixel has no value).
    if reducer == "count":
        np.testing.assert_array_equal(got.values, np.count_nonzero(~np.isnan(values), axis=0))
        return
    if reducer == "percentile":
        want = quiet(np.nanpercentile, values, q, axis=0, method="linear")
    else:
        want = quiet(REFERENCES[reducer], values, axis=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.values, want, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(got.values), np.isnan(values).all(axis=0))


@fast(50)
@given(values=stacks(max_time=16), data=st.data())
def test_composites_do_not_depend_on_the_order_of_the_dates(
    values: NDArray[np.float32], data: st.DataObject
) -> None:
    order = np.asarray(data.draw(st.permutations(range(values.shape[0])), label="order"))
    shuffled = values[order]
    qs = [0.0, 10.0, 50.0, 62.5, 90.0, 100.0]
    # Order statistics of the same values: identical to the bit.
    np.testing.assert_array_equal(
        nanpercentile_last(np.moveaxis(values, 0, -1), qs),
        nanpercentile_last(np.moveaxis(shuffled, 0, -1), qs),
    )
    before, after = lazy(values, (1, 4, 4)), lazy(shuffled, (1, 4, 4))
    for reducer in ("median", "max", "min", "count"):
        np.testing.assert_array_equal(
            temporal_reduce(before, reducer).values, temporal_reduce(after, reducer).values
        )
    # The mean sums in float64 in another order: equal to rounding.
    np.testing.assert_allclose(
        temporal_reduce(before, "mean").values,
        temporal_reduce(after, "mean").values,
        rtol=1e-6,
        equal_nan=True,
    )


@fast(40)
@given(
    length=st.integers(1, NETWORK_MAX + 24),
    pixels=st.integers(1, 40),
    missing=st.sampled_from([0.0, 0.2, 0.9]),
    strip=st.sampled_from([1, 7, 64, composites.STRIP_VALUES]),
    seed=st.integers(0, 2**32 - 1),
)
def test_percentiles_of_long_series_and_any_strip_match_numpy(
    length: int, pixels: int, missing: float, strip: int, seed: int
) -> None:
    # Every sorting-network length up to NETWORK_MAX, np.sort beyond it, strips of pixels
    # down to one pixel at a time.
    rng = np.random.default_rng(seed)
    values = rng.normal(0.4, 0.2, (pixels, length)).astype(np.float32)
    values[rng.random(values.shape) < missing] = np.nan
    qs = [0.0, 1.0, 33.3, 50.0, 99.0, 100.0]
    with mock.patch.object(composites, "STRIP_VALUES", strip):
        got = nanpercentile_last(values, qs)
    np.testing.assert_array_equal(got, nanpercentile_last(values, qs))
    want = quiet(np.nanpercentile, values, qs, axis=-1, method="linear")
    np.testing.assert_allclose(got, want.T, rtol=1e-6, atol=1e-7, equal_nan=True)
    # The 0th and 100th percentiles are the extremes themselves.
    np.testing.assert_array_equal(got[:, 0], quiet(np.nanmin, values, axis=-1))
    np.testing.assert_array_equal(got[:, -1], quiet(np.nanmax, values, axis=-1))


@fast(30)
@given(
    values=hnp.arrays(
        st.sampled_from([np.int16, np.uint8, np.int64]),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9),
        elements=st.integers(0, 120),
    ),
    q=st.lists(st.floats(0, 100), min_size=1, max_size=3),
)
def test_integer_percentiles_are_float64_and_numpy(values: NDArray[Any], q: list[float]) -> None:
    got = nanpercentile_last(values, q)
    assert got.dtype == np.float64
    want = np.percentile(values.astype(np.float64), q, axis=-1, method="linear")
    np.testing.assert_allclose(got, np.moveaxis(want, 0, -1), rtol=1e-12, atol=1e-12)


@fast(30)
@given(
    offsets=st.lists(st.integers(0, 120), min_size=1, max_size=14),
    seed=st.integers(0, 2**32 - 1),
)
def test_monthly_composites_are_the_reduction_of_their_own_dates(
    offsets: list[int], seed: int
) -> None:
    # Dates anywhere in four months, repeated dates and empty months included.
    start, end = date(2024, 1, 1), date(2024, 4, 30)
    days = sorted(start + timedelta(days=d) for d in offsets)
    rng = np.random.default_rng(seed)
    values = rng.uniform(-0.2, 0.9, (len(days), 3, 4)).astype(np.float32)
    values[rng.random(values.shape) < 0.4] = np.nan
    times = pd.DatetimeIndex(days) + pd.Timedelta(hours=23, minutes=59)  # late in the day
    arr = xr.DataArray(
        da.from_array(values, chunks=(2, 2, 3)), dims=("time", "y", "x"), coords={"time": times}
    )
    periods = monthly_periods(start, end)
    count = composite(arr, periods, "count").values
    p75 = composite(arr, periods, "percentile", q=75).values
    month = np.array([d.month for d in days])
    for k in range(len(periods)):
        mine = values[month == k + 1]
        np.testing.assert_array_equal(count[k], np.count_nonzero(~np.isnan(mine), axis=0))
        want = quiet(np.nanpercentile, mine, 75, axis=0) if len(mine) else np.nan
        np.testing.assert_allclose(
            p75[k], want * np.ones((3, 4)), rtol=1e-6, atol=1e-7, equal_nan=True
        )
    # The months partition the dates: their counts add up to the whole range's.
    whole = temporal_reduce(arr, "count").values
    np.testing.assert_array_equal(count.sum(axis=0), whole)


@fast(40)
@given(
    ndvi=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 7), st.integers(1, 4), st.integers(1, 4)),
        elements=st.sampled_from([np.nan, 0.1, 0.5, 0.9]),  # ties and clouds
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_greenest_takes_every_band_from_the_first_max_ndvi_date(
    ndvi: NDArray[np.float32], seed: int
) -> None:
    times = pd.date_range("2024-03-01", periods=ndvi.shape[0], freq="3D")
    dims = ("time", "y", "x")
    red = np.random.default_rng(seed).uniform(0, 0.3, ndvi.shape).astype(np.float32)
    stack = xr.Dataset({"red": (dims, red), "nir": (dims, red + 0.4)}, coords={"time": times})
    chunked = stack.chunk({"time": 2, "y": 2, "x": 3})
    out = greenest(chunked, xr.DataArray(ndvi, dims=dims, coords={"time": times}).chunk(2))
    for y, x in np.ndindex(ndvi.shape[1:]):
        series = ndvi[:, y, x]
        clear = np.flatnonzero(~np.isnan(series))
        if len(clear) == 0:
            assert np.isnan(out["red"].values[y, x]) and np.isnan(out["ndvi"].values[y, x])
            assert np.isnat(out["greenest_time"].values[y, x])
            continue
        best = int(next(i for i in clear if series[i] == series[clear].max()))  # first tie
        assert out["ndvi"].values[y, x] == series[best]
        assert out["red"].values[y, x] == red[best, y, x]
        assert out["nir"].values[y, x] == red[best, y, x] + np.float32(0.4)
        assert out["greenest_time"].values[y, x] == times[best]


# --- 3. polygons ---------------------------------------------------------------------------

TRANSFORM = Affine(10, 0, 500_000, 0, -10, 7_800_000)  # UTM 33S, 10 m pixels
CLASSES = ("grass", "bush", "water")


@st.composite
def class_rasters(draw: st.DrawFn) -> NDArray[np.uint8]:
    """Class rasters of up to 18 × 18 pixels: noise (corner contacts) or blocks, nodata (0)."""
    small = draw(
        hnp.arrays(
            np.uint8,
            st.tuples(st.integers(1, 9), st.integers(1, 9)),
            elements=st.integers(0, 3),
        )
    )
    factor = draw(st.integers(1, 2))
    return np.asarray(np.kron(small, np.ones((factor, factor), np.uint8)), dtype=np.uint8)


def polygonise(
    classes: NDArray[np.uint8], *, mmu_px: int = 0, window_px: int = 1024, simplify: float = 0
) -> gpd.GeoDataFrame:
    """Polygons of ``classes`` on :data:`TRANSFORM` at an MMU of ``mmu_px`` pixels."""
    return vectorise_maps(
        ArrayMaps(classes),
        transform=TRANSFORM,
        crs=32733,
        classes=CLASSES,
        mmu_ha=mmu_px * 100 / 10_000,
        simplify_px=simplify,
        window_px=window_px,
    )


def owner_of_pixels(frame: gpd.GeoDataFrame, shape: tuple[int, int]) -> NDArray[np.int64]:
    """Id of the polygon holding each pixel's centre, 0 for none; fails if two hold one."""
    rows, cols = np.indices(shape)
    x = TRANSFORM.c + TRANSFORM.a * (cols.ravel() + 0.5)  # a north-up grid
    y = TRANSFORM.f + TRANSFORM.e * (rows.ravel() + 0.5)
    points = shapely.points(x, y)
    owner = np.zeros(points.size, dtype=np.int64)
    if len(frame):
        point, polygon = shapely.STRtree(frame.geometry.values).query(points, predicate="within")
        assert len(np.unique(point)) == len(point), "a pixel lies in two polygons"
        owner[point] = frame["id"].to_numpy()[polygon]
    return owner.reshape(shape)


def patches(classes: NDArray[np.integer[Any]]) -> list[tuple[int, NDArray[np.bool_]]]:
    """``(class value, mask)`` of every 4-connected patch of one class, by scipy."""
    found = []
    for value in np.unique(classes[classes > 0]):
        labels, count = ndimage.label(classes == value)
        found += [(int(value), labels == i) for i in range(1, count + 1)]
    return found


def class_raster_of(frame: gpd.GeoDataFrame, owner: NDArray[np.int64]) -> NDArray[np.uint8]:
    """The class map the polygons draw (0 outside every polygon)."""
    value_of = np.zeros(len(frame) + 1, dtype=np.uint8)
    value_of[frame["id"].to_numpy()] = [CLASSES.index(c) + 1 for c in frame["class"]]
    return value_of[owner]


@fast(40)
@given(classes=class_rasters())
def test_unsieved_polygons_are_the_patches_pixel_for_pixel(classes: NDArray[np.uint8]) -> None:
    frame = polygonise(classes)
    owner = owner_of_pixels(frame, classes.shape)  # no pixel in two polygons: no overlap
    assert len(frame) == len(patches(classes))
    np.testing.assert_array_equal(class_raster_of(frame, owner), classes)
    for _, mask in patches(classes):
        (number,) = np.unique(owner[mask])  # one polygon per patch, all of it
        assert (owner == number).sum() == mask.sum()
    geometries = frame.geometry.values
    assert shapely.is_valid(geometries).all() and set(frame.geom_type) <= {"Polygon"}
    np.testing.assert_array_equal(shapely.area(geometries), frame["pixels"] * 100.0)
    np.testing.assert_allclose(frame["area_ha"], frame["pixels"] * 0.01, rtol=1e-12)
    # Per class: the polygons' area is the pixel count times the pixel area, and the union
    # of all polygons (no overlap) has the area of all classed pixels.
    for k, name in enumerate(CLASSES):
        mine = frame[frame["class"] == name]
        assert mine.geometry.area.sum() == (classes == k + 1).sum() * 100.0
    if len(frame):
        assert shapely.union_all(geometries).area == (classes > 0).sum() * 100.0


@fast(40)
@given(
    classes=class_rasters(),
    mmu_px=st.integers(0, 6),
    simplify=st.sampled_from([0.0, 1.0]),
    data=st.data(),
)
def test_polygons_do_not_depend_on_the_window_size(
    classes: NDArray[np.uint8], mmu_px: int, simplify: float, data: st.DataObject
) -> None:
    window = data.draw(st.integers(1, max(classes.shape)), label="window_px")
    got = polygonise(classes, mmu_px=mmu_px, window_px=window, simplify=simplify)
    want = polygonise(classes, mmu_px=mmu_px, simplify=simplify)
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert shapely.equals_exact(got.geometry.values, want.geometry.values, 0).all()


@fast(40)
@given(classes=class_rasters(), mmu_px=st.integers(2, 10))
def test_sieve_leaves_no_patch_below_the_mmu_and_keeps_the_large_ones(
    classes: NDArray[np.uint8], mmu_px: int
) -> None:
    frame = polygonise(classes, mmu_px=mmu_px, window_px=5)
    owner = owner_of_pixels(frame, classes.shape)
    sieved = class_raster_of(frame, owner)
    # The polygons are the whole patches of the sieved map, none below the MMU.
    assert (frame["pixels"] >= mmu_px).all()
    found = patches(sieved)
    assert len(found) == len(frame)
    for _, mask in found:
        (number,) = np.unique(owner[mask])
        assert (owner == number).sum() == mask.sum() == frame.set_index("id")["pixels"][number]
    # Merges stay inside a connected area of classed pixels, which keeps its pixels; only an
    # area smaller than the MMU as a whole (nodata all round) is dropped. Nothing grows into
    # nodata.
    regions, count = ndimage.label(classes > 0)
    size = np.bincount(regions.ravel(), minlength=count + 1)
    np.testing.assert_array_equal(sieved > 0, (classes > 0) & (size[regions] >= mmu_px))
    # Patches at or above the MMU keep their class on every pixel.
    for value, mask in patches(classes):
        if mask.sum() >= mmu_px:
            assert (sieved[mask] == value).all()
    # Sieving the sieved map again changes nothing.
    again = polygonise(sieved, mmu_px=mmu_px)
    assert again.drop(columns="geometry").equals(frame.drop(columns="geometry"))
    assert shapely.equals_exact(again.geometry.values, frame.geometry.values, 0).all()


# --- 4. the area estimator -----------------------------------------------------------------


@st.composite
def samples(draw: st.DrawFn, strata_are_map: bool = False) -> dict[str, Any]:
    """A stratified sample: strata, map and reference classes, strata sizes.

    With ``strata_are_map`` the strata are the map classes (Olofsson's design), else 1 to 4
    strata that cut across them (Stehman's). Most units are mapped right.
    """
    k = draw(st.integers(2, 4))
    h = k if strata_are_map else draw(st.integers(1, 4))
    n_h = draw(st.lists(st.integers(2, 12), min_size=h, max_size=h))
    stratum = np.repeat(np.arange(h), n_h)
    n = len(stratum)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mapped = stratum.copy() if strata_are_map else rng.integers(0, k, n)
    right = rng.random(n) < draw(st.floats(0, 1))
    reference = np.where(right, mapped, rng.integers(0, k, n))
    pixels = np.array(n_h, dtype=np.float64) + rng.integers(0, 10**6, h)
    return {
        "stratum": stratum,
        "map_class": mapped,
        "reference": reference,
        "stratum_pixels": pixels,
        "classes": [f"c{i}" for i in range(k)],
        "pixel_area_ha": 0.01,
    }


def assert_same_estimates(
    got: AreaEstimate,
    want: AreaEstimate,
    *,
    rtol: float = 1e-12,
    order: NDArray[np.intp] | slice = slice(None),
) -> None:
    """Every figure of ``got`` equals ``want``'s for class ``order[k]`` at index ``k``."""

    def close(a: Any, b: Any) -> None:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-15, equal_nan=True)

    close(got.error_matrix, want.error_matrix[order][:, order])
    for name in ("users_accuracy", "producers_accuracy", "area_proportion"):
        close(getattr(got, name).value, getattr(want, name).value[order])
        close(getattr(got, name).se, getattr(want, name).se[order])
    close(got.overall_accuracy.value, want.overall_accuracy.value)
    close(got.overall_accuracy.se, want.overall_accuracy.se)


@fast(60)
@given(sample=samples())
def test_estimates_hang_together_and_stay_in_range(sample: dict[str, Any]) -> None:
    e = estimate(**sample)
    p = e.error_matrix
    total = sample["stratum_pixels"].sum()
    assert p.sum() == pytest.approx(1.0, rel=1e-12)
    assert e.area_proportion.value.sum() == pytest.approx(1.0, rel=1e-12)
    assert e.area_ha.value.sum() == pytest.approx(total * 0.01, rel=1e-12)
    assert e.zone_area_ha == pytest.approx(total * 0.01, rel=1e-15)
    # Every figure is a sum of error-matrix cells, or a ratio of two such sums.
    np.testing.assert_allclose(e.area_proportion.value, p.sum(axis=0), rtol=1e-12)
    assert e.overall_accuracy.value == pytest.approx(np.trace(p), rel=1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        users = np.where(p.sum(axis=1) > 0, np.diag(p) / p.sum(axis=1), np.nan)
        producers = np.where(p.sum(axis=0) > 0, np.diag(p) / p.sum(axis=0), np.nan)
    np.testing.assert_allclose(e.users_accuracy.value, users, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(e.producers_accuracy.value, producers, rtol=1e-12, equal_nan=True)
    # Proportions and accuracies lie in [0, 1]; standard errors are finite and >= 0 wherever
    # the figure is defined (NaN exactly where it is not).
    for figure in (e.users_accuracy, e.producers_accuracy, e.area_proportion):
        defined = ~np.isnan(figure.value)
        assert np.all((figure.value[defined] >= -1e-15) & (figure.value[defined] <= 1 + 1e-12))
        np.testing.assert_array_equal(np.isnan(figure.se), ~defined)
        assert np.all(figure.se[defined] >= 0) and np.isfinite(figure.se[defined]).all()
    assert (p >= 0).all() and 0 <= e.overall_accuracy.value <= 1 + 1e-12
    assert e.overall_accuracy.se >= 0


@fast(40)
@given(sample=samples(strata_are_map=True))
def test_map_classes_as_strata_give_the_mapped_proportions_as_row_sums(
    sample: dict[str, Any],
) -> None:
    e = estimate(**sample, map_pixels=sample["stratum_pixels"])
    weights = sample["stratum_pixels"] / sample["stratum_pixels"].sum()
    np.testing.assert_allclose(e.error_matrix.sum(axis=1), weights, rtol=1e-12)
    assert e.map_area_ha is not None
    np.testing.assert_allclose(e.map_area_ha, sample["stratum_pixels"] * 0.01, rtol=1e-15)


@fast(40)
@given(sample=samples(strata_are_map=True), fpc=st.booleans())
def test_a_perfect_map_is_its_own_area_estimate_without_error(
    sample: dict[str, Any], fpc: bool
) -> None:
    sample["reference"] = sample["map_class"]
    e = estimate(**sample, map_pixels=sample["stratum_pixels"], fpc=fpc)
    assert e.map_area_ha is not None
    np.testing.assert_allclose(e.area_ha.value, e.map_area_ha, rtol=1e-12)
    np.testing.assert_array_equal(e.area_proportion.se, 0.0)
    np.testing.assert_allclose(e.users_accuracy.value, 1.0, rtol=1e-12)
    np.testing.assert_allclose(e.producers_accuracy.value, 1.0, rtol=1e-12)
    np.testing.assert_array_equal(e.users_accuracy.se, 0.0)
    np.testing.assert_array_equal(e.producers_accuracy.se, 0.0)
    assert e.overall_accuracy.value == pytest.approx(1.0, rel=1e-12)
    assert e.overall_accuracy.se == 0.0
    np.testing.assert_allclose(np.diag(e.error_matrix), e.error_matrix.sum(axis=0), rtol=1e-12)


@fast(40)
@given(sample=samples(), data=st.data())
def test_the_order_of_the_sample_units_does_not_matter(
    sample: dict[str, Any], data: st.DataObject
) -> None:
    order = np.asarray(data.draw(st.permutations(range(len(sample["stratum"]))), label="order"))
    shuffled = {
        **sample,
        **{key: sample[key][order] for key in ("stratum", "map_class", "reference")},
    }
    assert_same_estimates(estimate(**shuffled), estimate(**sample))


@fast(40)
@given(sample=samples(), data=st.data())
def test_renaming_the_classes_permutes_every_figure(
    sample: dict[str, Any], data: st.DataObject
) -> None:
    k = len(sample["classes"])
    new = np.asarray(data.draw(st.permutations(range(k)), label="new index of each class"))
    renamed = {
        **sample,
        "map_class": new[sample["map_class"]],
        "reference": new[sample["reference"]],
    }
    # Class k of the renamed sample is class back[k] of the original.
    back = np.argsort(new)
    assert_same_estimates(estimate(**renamed), estimate(**sample), order=back)


@fast(40)
@given(sample=samples(), factor=st.integers(2, 1000), area=st.floats(1e-4, 100))
def test_proportions_do_not_depend_on_the_unit_of_area(
    sample: dict[str, Any], factor: int, area: float
) -> None:
    # Without the finite-population correction, counting every pixel as ``factor`` smaller
    # pixels, or another pixel area, changes areas, never proportions or their SEs.
    base = estimate(**sample, fpc=False)
    finer = estimate(
        **{**sample, "stratum_pixels": sample["stratum_pixels"] * factor, "pixel_area_ha": area},
        fpc=False,
    )
    assert_same_estimates(finer, base, rtol=1e-10)
    np.testing.assert_allclose(
        finer.area_ha.value, base.area_ha.value * factor * area / 0.01, rtol=1e-10
    )


@fast(40)
@given(sample=samples(), data=st.data())
def test_merging_two_classes_adds_their_areas(sample: dict[str, Any], data: st.DataObject) -> None:
    k = len(sample["classes"])
    a, b = data.draw(st.lists(st.integers(0, k - 1), min_size=2, max_size=2, unique=True))
    keep = [c for c in range(k) if c != b]
    index = np.array([keep.index(a if c == b else c) for c in range(k)])  # b joins a
    merged = {
        **sample,
        "map_class": index[sample["map_class"]],
        "reference": index[sample["reference"]],
        "classes": sample["classes"][:-1],
    }
    before, after = estimate(**sample), estimate(**merged)
    # The error matrix of the merged classes is the sum of the rows and columns merged.
    matrix = np.zeros((k - 1, k - 1))
    np.add.at(matrix, (index[:, None], index[None, :]), before.error_matrix)
    np.testing.assert_allclose(after.error_matrix, matrix, rtol=1e-12, atol=1e-15)
    want = np.bincount(index, weights=before.area_proportion.value, minlength=k - 1)
    np.testing.assert_allclose(after.area_proportion.value, want, rtol=1e-12)
    # Confusing a with b is no longer an error: accuracy can only rise.
    assert after.overall_accuracy.value >= before.overall_accuracy.value - 1e-12


@fast(40)
@given(
    reference=st.lists(st.integers(0, 2), min_size=2, max_size=40),
    extra=st.integers(0, 10**6),
    fpc=st.booleans(),
)
def test_one_stratum_is_a_simple_random_sample(reference: list[int], extra: int, fpc: bool) -> None:
    n = len(reference)
    big_n = float(n + extra)
    e = estimate(
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.array(reference),
        stratum_pixels=[big_n],
        classes="abc",
        pixel_area_ha=0.01,
        fpc=fpc,
    )
    # The area proportion of a class is its share of the sample, with the binomial SE
    # sqrt((1 - n/N) p (1 - p) / (n - 1)) of a simple random sample.
    correction = 1 - n / big_n if fpc else 1.0
    for c in range(3):
        share = reference.count(c) / n
        assert e.area_proportion.value[c] == pytest.approx(share, rel=1e-12, abs=1e-15)
        se = math.sqrt(correction * share * (1 - share) / (n - 1))
        assert e.area_proportion.se[c] == pytest.approx(se, rel=1e-9, abs=1e-15)
    # Everything is mapped a: the overall accuracy is the share of a, a's user's accuracy too.
    assert e.overall_accuracy.value == pytest.approx(reference.count(0) / n, rel=1e-12)
    assert e.users_accuracy.value[0] == pytest.approx(reference.count(0) / n, rel=1e-12)
    assert np.isnan(e.users_accuracy.value[1:]).all()  # b and c are never mapped
