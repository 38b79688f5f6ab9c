"""Zonal time series against hand computations with rasterio.features, on real and toy data."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio.transform
import xarray as xr
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.features import geometry_mask
from shapely.geometry import Point, box
from shapely.geometry.base import BaseGeometry

from agrimon.aoi import read_aoi
from agrimon.errors import ConfigError, ProductError
from agrimon.grid import Tile, from_lonlat, geobox_for, plan_tiles, to_lonlat
from agrimon.indices import zonal
from agrimon.indices.masks import clear_mask
from agrimon.indices.spectral import ndvi
from agrimon.indices.zonal import (
    COLUMNS,
    MAX_EXACT_PIXELS,
    MEDIAN_BIN_WIDTH,
    MEDIAN_BINS,
    ZonalPartial,
    combine_partials,
    read_zonal_table,
    write_zonal_table,
    zonal_geodataframe,
    zonal_partial,
    zonal_stats,
    zonal_table,
    zone_pixels,
)
from agrimon.sources.local import LocalSource
from agrimon.sources.settings import SourceSettings
from agrimon.tilework import inside_mask

from .conftest import SLOVENIA_DATES, real_path, slovenia_aoi

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]
#: Hand-computed statistics of one zone: pixels, then count, mean, median, std per date.
Hand = tuple[int, NDArray[np.int64], Floats, Floats, Floats]

EPSG = 32633
RES = 10.0
SHIPPED_AOI = Path(__file__).resolve().parents[1] / "aoi" / "grootfontein.geojson"


# --- helpers --------------------------------------------------------------------------------


def _grid(height: int, width: int) -> GeoBox:
    """A toy geobox: ``height`` × ``width`` 10 m pixels, lower-left corner at (0, 0)."""
    return geobox_for((0.0, 0.0, width * RES, height * RES), EPSG, RES)


def _zones(*geoms: BaseGeometry, crs: int = EPSG) -> gpd.GeoDataFrame:
    ids = list(range(1, len(geoms) + 1))
    return gpd.GeoDataFrame(
        {"zone_id": ids, "name": [f"z{i}" for i in ids]}, geometry=list(geoms), crs=crs
    )


def _stack(values: dict[str, Floats]) -> xr.Dataset:
    n_times = next(iter(values.values())).shape[0]
    times = pd.date_range("2024-01-01", periods=n_times, freq="10D")
    return xr.Dataset(
        {k: (("time", "y", "x"), v) for k, v in values.items()}, coords={"time": times}
    )


def _random_stack(
    rng: np.random.Generator, shape: tuple[int, int, int], names: tuple[str, ...] = ("ndvi",)
) -> tuple[xr.Dataset, Bools]:
    """Random float32-valued indices with some NaN, and a random clear mask."""
    values = {}
    for name in names:
        v = rng.uniform(-0.2, 0.9, size=shape).astype(np.float32).astype(np.float64)
        v[rng.random(shape) < 0.05] = np.nan
        values[name] = v
    return _stack(values), rng.random(shape) < 0.8


def _pick(values: Floats, clear: Bools, geobox: GeoBox, geom: BaseGeometry) -> Floats:
    """``(time, pixels)`` values of one polygon rasterized on its own, NaN where not clear."""
    inside = geometry_mask(
        [geom], out_shape=geobox.shape, transform=geobox.affine, all_touched=False, invert=True
    )
    return np.where(clear[:, inside], values[:, inside], np.nan)


def _pick_owned(
    values: Floats, clear: Bools, geobox: GeoBox, geom: BaseGeometry, inside: Bools
) -> Floats:
    """Like :func:`_pick`, restricted to the pixels a tile owns (``inside``)."""
    burnt = geometry_mask(
        [geom], out_shape=geobox.shape, transform=geobox.affine, all_touched=False, invert=True
    )
    owned = burnt & inside
    return np.where(clear[:, owned], values[:, owned], np.nan)


def _summary(picked: Floats) -> Hand:
    """Hand statistics of ``(time, pixels)`` values with numpy's nan-functions."""
    count = np.sum(np.isfinite(picked), axis=1)
    rows = [r[np.isfinite(r)] for r in picked]
    mean = np.array([np.mean(r) if r.size else np.nan for r in rows])
    median = np.array([np.median(r) if r.size else np.nan for r in rows])
    std = np.array([np.std(r) if r.size else np.nan for r in rows])
    return picked.shape[1], count, mean, median, std


def _rows(table: pd.DataFrame, zone_id: int, index: str = "ndvi") -> pd.DataFrame:
    return table[(table.zone_id == zone_id) & (table["index"] == index)].sort_values("time")


def _assert_matches(
    rows: pd.DataFrame,
    hand: Hand,
    atol: float,
    label: str = "",
    *,
    median_atol: float | None = None,
) -> None:
    """Table rows of one zone equal the hand statistics (``median_atol`` for the median)."""
    pixels, count, mean, median, std = hand
    assert (rows.pixels == pixels).all(), label
    np.testing.assert_array_equal(rows["count"].to_numpy(), count, err_msg=label)
    for name, want, tol in (
        ("mean", mean, atol),
        ("median", median, atol if median_atol is None else median_atol),
        ("std", std, atol),
    ):
        np.testing.assert_allclose(
            rows[name].to_numpy(), want, rtol=0, atol=tol, equal_nan=True, err_msg=label
        )
    fraction = count / pixels if pixels else np.full(count.shape, np.nan)
    np.testing.assert_allclose(rows.clear_fraction.to_numpy(), fraction, equal_nan=True)


# --- real data: Slovenian land-use polygons on real Sentinel-2 scenes -------------------------


@pytest.fixture(scope="module")
def slovenia_tiles() -> list[tuple[GeoBox, xr.Dataset, xr.DataArray]]:
    """Geobox, NDVI and clear mask of each 128 px tile of the real scenes (computed)."""
    source = LocalSource(SourceSettings(local_path=real_path("slovenia-s2", "scenes")))
    out = []
    for tile in plan_tiles(slovenia_aoi(), tile_px=128):
        scenes = source.find_scenes(tile, date(2015, 7, 1), date(2015, 9, 30))
        stack = source.load(tile, scenes, bands=("red", "nir")).compute()
        out.append((tile.geobox, ndvi(stack).to_dataset(), clear_mask(stack)))
    return out


@pytest.fixture(scope="module")
def lulc() -> gpd.GeoDataFrame:
    """The real land-use polygons (EPSG:32633), numbered 1..n and named by class."""
    frame = gpd.read_file(real_path("slovenia-s2", "lulc.gpkg"))
    return frame.assign(zone_id=np.arange(1, len(frame) + 1), name=frame["LULC_NAME"])


def _hand_real(tiles: list[tuple[GeoBox, xr.Dataset, xr.DataArray]], geom: BaseGeometry) -> Hand:
    """One polygon's statistics over every tile, or its representative point's pixel."""
    picked = [
        _pick(ds["ndvi"].values.astype(np.float64), clear.values, gb, geom)
        for gb, ds, clear in tiles
    ]
    joined = np.concatenate(picked, axis=1)
    if joined.shape[1]:
        return _summary(joined)
    point = geom.representative_point()
    for gb, ds, clear in tiles:
        row, col = rasterio.transform.rowcol(gb.affine, point.x, point.y)
        if 0 <= row < gb.shape[0] and 0 <= col < gb.shape[1]:
            one = np.where(clear.values[:, row, col], ds["ndvi"].values[:, row, col], np.nan)
            return _summary(one.astype(np.float64)[:, None])
    return _summary(np.empty((len(tiles[0][1].time), 0)))


def test_real_land_use_polygons_match_a_hand_computation(
    slovenia_tiles: list[tuple[GeoBox, xr.Dataset, xr.DataArray]], lulc: gpd.GeoDataFrame
) -> None:
    assert len(slovenia_tiles) >= 2  # the scenes straddle a tile edge: zones span tiles
    assert all(str(gb.crs) == str(lulc.crs) for gb, _, _ in slovenia_tiles)
    partials = [
        zonal_partial(ds, lulc, clear=clear) for _, ds, clear in slovenia_tiles
    ]  # geobox from the stacks' own coordinates
    table = zonal_table(combine_partials(partials))
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == len(lulc) * len(SLOVENIA_DATES)
    days = sorted({str(t)[:10] for t in table.time.to_numpy()})
    assert days == list(SLOVENIA_DATES)
    kinds = {"whole": 0, "sub-pixel": 0, "outside": 0}
    for zone_id, geom in zip(lulc.zone_id, lulc.geometry, strict=True):
        hand = _hand_real(slovenia_tiles, geom)
        rows = _rows(table, int(zone_id))
        _assert_matches(rows, hand, atol=1e-6, label=f"zone {zone_id}")
        if hand[0] == 0:
            kinds["outside"] += 1
        elif hand[0] == 1 and geom.area < RES * RES:
            kinds["sub-pixel"] += 1
        else:
            kinds["whole"] += 1
    # The real polygons exercise every case: fields, slivers and polygons off the scenes.
    assert kinds["whole"] > 40 and kinds["sub-pixel"] > 0 and kinds["outside"] > 0, kinds
    assert table.loc[table.pixels > 0, "count"].sum() > 0


# --- tiles combine exactly ------------------------------------------------------------------

TILES = (
    (slice(0, 12), slice(0, 17)),
    (slice(0, 12), slice(17, 40)),
    (slice(12, 30), slice(0, 40)),
)


def _seam_zones() -> gpd.GeoDataFrame:
    """Zones across the seams (x = 170 m, y = 180 m), nested, tiny and off the grid."""
    return _zones(
        box(0, 0, 400, 300),  # everything
        box(95, 120, 260, 250),  # across both seams
        box(150, 172, 190, 188).union(box(300, 20, 330, 60)),  # two parts, one on a seam
        box(171, 181, 173, 183),  # smaller than a pixel, right at the seams
        box(0, 181, 400, 183),  # a sliver without pixel centre, along a seam
        box(1000, 1000, 1010, 1010),  # off the grid
    )


def _tile_partials(
    stack: xr.Dataset,
    clear: Bools,
    geobox: GeoBox,
    zones: gpd.GeoDataFrame,
    *,
    median: bool = True,
    max_exact_pixels: int = MAX_EXACT_PIXELS,
) -> list[ZonalPartial]:
    """Partials of the grid cut into TILES."""
    return [
        zonal_partial(
            stack.isel(y=rows, x=cols),
            zones,
            clear=clear[:, rows, cols],
            geobox=geobox[rows, cols],
            median=median,
            max_exact_pixels=max_exact_pixels,
        )
        for rows, cols in TILES
    ]


def test_tiles_combine_to_the_single_grid_result_exactly() -> None:
    rng = np.random.default_rng(7)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (4, 30, 40), ("ndvi", "ndwi"))
    zones = _seam_zones()
    whole = zonal_stats(stack, zones, clear=clear, geobox=geobox)
    partials = _tile_partials(stack, clear, geobox, zones, median=True)
    for order in (partials, partials[::-1]):
        pd.testing.assert_frame_equal(zonal_table(combine_partials(order)), whole, check_exact=True)
    # Each zone is rasterized on its own: the whole-grid zone holds every pixel.
    assert (whole[whole.zone_id == 1].pixels == 30 * 40).all()
    assert (whole[whole.zone_id == 4].pixels == 1).all()  # sub-pixel: its point's pixel
    assert (whole[whole.zone_id == 5].pixels == 1).all()  # sliver: its point's pixel
    assert (whole[whole.zone_id == 6].pixels == 0).all()
    # And the numbers are the hand computation's.
    for zone_id, geom in zip(zones.zone_id[:3], zones.geometry[:3], strict=True):
        for name in ("ndvi", "ndwi"):
            hand = _summary(_pick(stack[name].values, clear, geobox, geom))
            _assert_matches(_rows(whole, int(zone_id), name), hand, atol=1e-12)


def test_partial_sums_without_values_agree_and_leave_the_median_out() -> None:
    rng = np.random.default_rng(11)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (3, 30, 40))
    zones = _seam_zones()
    whole = zonal_stats(stack, zones, clear=clear, geobox=geobox)
    sums = zonal_table(combine_partials(_tile_partials(stack, clear, geobox, zones, median=False)))
    for column in ("count", "pixels", "zone_id", "time"):
        pd.testing.assert_series_equal(sums[column], whole[column])
    for column in ("mean", "std", "clear_fraction"):
        np.testing.assert_allclose(sums[column], whole[column], rtol=1e-12, equal_nan=True)
    # The median needs the values, except for point-sized zones whose one pixel is kept.
    point_zones = sums.zone_id.isin([4, 5])
    assert sums.loc[~point_zones, "median"].isna().all()
    pd.testing.assert_series_equal(
        sums.loc[point_zones, "median"], whole.loc[point_zones, "median"]
    )


def test_a_tile_missing_a_date_counts_its_pixels_as_not_clear() -> None:
    rng = np.random.default_rng(3)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (4, 30, 40))
    zones = _seam_zones()
    partials = _tile_partials(stack, clear, geobox, zones, median=True)
    rows, cols = TILES[0]
    partials[0] = zonal_partial(
        stack.isel(y=rows, x=cols, time=[0, 2, 3]),
        zones,
        clear=clear[[0, 2, 3], rows, cols],
        geobox=geobox[rows, cols],
    )
    hidden = clear.copy()
    hidden[1, rows, cols] = False
    want = zonal_stats(stack, zones, clear=hidden, geobox=geobox)
    pd.testing.assert_frame_equal(zonal_table(combine_partials(partials)), want, check_exact=True)


# --- one row per zone and acquisition day, across UTM zones ---------------------------------

#: A county-like AOI across UTM zones 36 and 37 and the equator: tiles in 36N, 36S, 37N, 37S.
ACROSS = box(35.99, -0.005, 36.01, 0.005)


def _footprint_table(
    data: Sequence[tuple[Tile, xr.Dataset, Bools]], zones: gpd.GeoDataFrame
) -> pd.DataFrame:
    """The table of tile partials made with each tile's footprint, as the monitor makes them."""
    return zonal_table(
        combine_partials(
            zonal_partial(
                stack,
                zones,
                clear=clear,
                geobox=tile.geobox,
                inside=inside_mask(tile),
                footprint=tile.footprint,
            )
            for tile, stack, clear in data
        )
    )


def _tile_stack(rng: np.random.Generator, tile: Tile, times: list[str]) -> tuple[xr.Dataset, Bools]:
    """Random float32-valued NDVI on a tile's geobox at ``times``, and a clear mask."""
    shape = (len(times), *tile.geobox.shape)
    values = rng.uniform(-0.2, 0.9, size=shape).astype(np.float32).astype(np.float64)
    stack = xr.Dataset(
        {"ndvi": (("time", "y", "x"), values)}, coords={"time": pd.to_datetime(times)}
    )
    return stack, rng.random(shape) < 0.8


def test_a_pass_across_utm_zones_gives_one_row_per_zone_and_day() -> None:
    zones = gpd.GeoDataFrame(
        {"zone_id": [1, 2, 3], "name": ["county", "across", "west field"]},
        geometry=[ACROSS, box(35.998, -0.002, 36.003, 0.002), box(35.992, 0.001, 35.995, 0.004)],
        crs=4326,
    )
    rng = np.random.default_rng(29)
    data = []
    for k, tile in enumerate(plan_tiles(ACROSS, tile_px=256)):
        # One pass: zone 37 is acquired at 07:54 UTC, zone 36 at 08:18; the granules of
        # one zone's tiles differ by seconds.
        clock = "07:54" if tile.zone == 37 else "08:18"
        times = [f"2024-03-05T{clock}:{k:02d}", f"2024-03-15T{clock}:30"]
        data.append((tile, *_tile_stack(rng, tile, times)))
    assert {tile.epsg for tile, _, _ in data} == {32636, 32637, 32736, 32737}
    table = _footprint_table(data, zones)
    # One row per zone and day, labelled by the (local solar) date at 00:00.
    assert len(table) == 3 * 2 and table.time.dtype == "datetime64[ns]"
    days = list(pd.to_datetime(["2024-03-05", "2024-03-15"]))
    spread = []
    for zone_id, geom in zip(zones.zone_id, zones.geometry, strict=True):
        rows = _rows(table, int(zone_id))
        assert rows.time.tolist() == days
        picked = [
            _pick_owned(
                stack["ndvi"].values,
                clear,
                tile.geobox,
                from_lonlat(geom, tile.epsg),
                inside_mask(tile),
            )
            for tile, stack, clear in data
        ]
        spread.append(sum(p.shape[1] > 0 for p in picked))
        # The same numbers as one computation over all its pixels, whatever their tile.
        _assert_matches(rows, _summary(np.concatenate(picked, axis=1)), atol=1e-12)
    assert spread == [6, 4, 1]  # the county, the field across both borders, a field
    assert (table.clear_fraction > 0.7).all()  # not split into partial fractions
    # The footprint alone gives the same table (its pixel-centre mask is made from it).
    alone = zonal_table(
        combine_partials(
            zonal_partial(stack, zones, clear=clear, geobox=tile.geobox, footprint=tile.footprint)
            for tile, stack, clear in data
        )
    )
    pd.testing.assert_frame_equal(alone, table, check_exact=True)


def test_days_are_local_solar_dates_and_a_tile_has_one_acquisition_a_day() -> None:
    # At x = 500 km in zone 60 (lon 177 E), a pass at 22:40 UTC is at 10:28 local solar
    # time on the next day: its row is that day's.
    geobox = geobox_for((500_000.0, 0.0, 500_040.0, 40.0), 32660, RES)
    values = np.arange(32, dtype=np.float64).reshape(2, 4, 4)
    stack = xr.Dataset(
        {"ndvi": (("time", "y", "x"), values)},
        coords={"time": pd.to_datetime(["2024-03-14T22:40", "2024-03-04T22:40"])},
    )
    zones = _zones(box(500_000, 0, 500_040, 40), crs=32660)
    table = zonal_stats(stack, zones, geobox=geobox)
    assert table.time.tolist() == list(pd.to_datetime(["2024-03-05", "2024-03-15"]))
    assert table["mean"].tolist() == [23.5, 7.5]  # sorted by day: the second step first
    # 22:40 UTC on the 4th and 09:00 UTC on the 5th are both the 5th there: refused.
    twice = stack.assign_coords(time=pd.to_datetime(["2024-03-04T22:40", "2024-03-05T09:00"]))
    with pytest.raises(ValueError, match="2 acquisitions on the solar day 2024-03-05"):
        zonal_stats(twice, zones, geobox=geobox)


# --- large zones: histogram medians in bounded memory ---------------------------------------

#: With this limit the seam zones 1-3 (1200, 221 and ~18 pixels) are binned, 4-6 are not.
SMALL_LIMIT = 10
BINNED = [True, True, True, False, False, False]


def test_large_zones_get_a_histogram_median_within_a_bin() -> None:
    rng = np.random.default_rng(13)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (4, 30, 40), ("ndvi", "ndwi"))
    zones = _seam_zones()
    exact = zonal_stats(stack, zones, clear=clear, geobox=geobox)
    binned = zonal_stats(stack, zones, clear=clear, geobox=geobox, max_exact_pixels=SMALL_LIMIT)
    for zone_id, geom in zip(zones.zone_id[:3], zones.geometry[:3], strict=True):
        for name in ("ndvi", "ndwi"):
            hand = _summary(_pick(stack[name].values, clear, geobox, geom))
            rows = _rows(binned, int(zone_id), name)
            # Sparse toy data (about one value per bin): less than a bin off. Dense data
            # (the shipped AOI's outline, below) is within half a bin, and much closer.
            _assert_matches(rows, hand, atol=1e-9, median_atol=MEDIAN_BIN_WIDTH)
            # Binned, not exact (the exact table has numpy's median to the last bit).
            assert not np.array_equal(rows["median"], _rows(exact, int(zone_id), name)["median"])
    # Zones under the limit keep their values: their rows are the exact table's.
    small = binned.zone_id >= 4
    pd.testing.assert_frame_equal(binned[small], exact[small], check_exact=True)
    for column in ("count", "clear_fraction", "pixels"):
        pd.testing.assert_series_equal(binned[column], exact[column], check_exact=True)


def test_histogram_medians_do_not_depend_on_the_tiling() -> None:
    rng = np.random.default_rng(17)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (3, 30, 40), ("ndvi", "ndwi"))
    whole = zonal_stats(
        stack, _seam_zones(), clear=clear, geobox=geobox, max_exact_pixels=SMALL_LIMIT
    )
    partials = _tile_partials(stack, clear, geobox, _seam_zones(), max_exact_pixels=SMALL_LIMIT)
    for order in (partials, partials[::-1]):
        tiled = zonal_table(combine_partials(order))
        # The histograms hold integer counts: the median is the single grid's bit for bit.
        exact_columns = [c for c in COLUMNS if c not in ("mean", "std")]
        pd.testing.assert_frame_equal(tiled[exact_columns], whole[exact_columns], check_exact=True)
        # Mean and std of binned zones come from the merged partial sums: float rounding.
        for column in ("mean", "std"):
            np.testing.assert_allclose(tiled[column], whole[column], rtol=1e-12, equal_nan=True)
        small = tiled.zone_id >= 4  # zones that keep their values are exact throughout
        pd.testing.assert_frame_equal(tiled[small], whole[small], check_exact=True)


def test_a_large_zone_keeps_a_histogram_and_no_pixel_values() -> None:
    rng = np.random.default_rng(19)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (4, 30, 40), ("ndvi", "ndwi"))
    # The seam zones, then a small field (9 pixels) and a large zone off the grid.
    zones = _zones(*_seam_zones().geometry, box(0, 0, 30, 30), box(2000, 0, 3000, 1000))
    where = zone_pixels(zones, geobox)
    assert where.expected[0] == pytest.approx(1200.0) and where.expected[7] == pytest.approx(1e4)
    partial = zonal_partial(stack, zones, clear=clear, geobox=geobox, max_exact_pixels=SMALL_LIMIT)
    assert partial.binned.tolist() == [*BINNED, False, True]
    assert partial.pixels[6] == 9
    assert partial.values is not None and partial.histogram is not None
    for z, big in enumerate(partial.binned):
        kept, counts = partial.values[z], partial.histogram[z]
        if big and z < 7:  # a histogram (T, I, bins) whatever the zone's size; no values
            assert kept is None and counts is not None
            assert counts.shape == (4, 2, MEDIAN_BINS) and counts.dtype == np.uint32
            np.testing.assert_array_equal(counts.sum(axis=-1), partial.count[z])
        elif big:  # no pixel here: nothing kept
            assert kept is None and counts is None
        else:  # float32 values (lossless: the stack holds float32 values), no histogram
            assert kept is not None and counts is None
            assert kept.dtype == np.float32 and kept.shape == (4, 2, partial.pixels[z])
    table = zonal_table(combine_partials([partial]))
    off = table[table.zone_id == 8]
    assert (off.pixels == 0).all() and off[["mean", "median", "std"]].isna().all().all()
    # Values that float32 cannot hold are kept as float64, and the result stays exact.
    wide = stack + 1e-9
    kept64 = zonal_partial(wide, zones, clear=clear, geobox=geobox, max_exact_pixels=SMALL_LIMIT)
    assert kept64.values is not None and kept64.values[6] is not None
    assert kept64.values[6].dtype == np.float64
    field = _rows(zonal_table(kept64), 7)
    hand = _summary(_pick(wide["ndvi"].values, clear, geobox, box(0, 0, 30, 30)))
    _assert_matches(field, hand, atol=1e-12)
    # Without median nothing is kept at all.
    sums = zonal_partial(stack, zones, clear=clear, geobox=geobox, median=False)
    assert sums.values is None and sums.histogram is None


def test_histogram_median_of_sparse_and_out_of_range_values() -> None:
    geobox = _grid(1, 4)
    zone = _zones(box(0, 0, 40, 10))  # 4 pixels, binned with a limit of 1
    values = np.array([[[0.0, 1.0, np.nan, np.nan]], [[-0.5, 0.25, 0.3, 7.0]]])
    table = zonal_stats(_stack({"ndvi": values}), zone, geobox=geobox, max_exact_pixels=1)
    # Two values far apart: the mean of the two middle values, each within half a bin
    # (a bin of one value gives its middle), not the edge of the first one's bin.
    assert table["median"].iloc[0] == pytest.approx(0.5, abs=MEDIAN_BIN_WIDTH / 2)
    assert table["median"].iloc[1] == pytest.approx(0.275, abs=MEDIAN_BIN_WIDTH / 2)
    # A value out of the range counts (in the last bin), and mean/std stay exact.
    assert table["count"].tolist() == [2, 4]
    assert table["mean"].iloc[1] == pytest.approx(np.mean(values[1]), abs=1e-12)
    assert table["std"].iloc[1] == pytest.approx(np.std(values[1]), abs=1e-12)


def test_partials_binning_different_zones_are_refused() -> None:
    rng = np.random.default_rng(23)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (2, 30, 40))
    zones = _seam_zones()
    binned = zonal_partial(stack, zones, clear=clear, geobox=geobox, max_exact_pixels=SMALL_LIMIT)
    kept = zonal_partial(stack, zones, clear=clear, geobox=geobox)
    with pytest.raises(ValueError, match="max_exact_pixels"):
        combine_partials([binned, kept])


# --- zones: overlapping, tiny, outside; cloudy dates -----------------------------------------


def _ramp(n_times: int = 3) -> tuple[xr.Dataset, Bools, GeoBox]:
    """10 × 10 grid whose pixel (row r, col c) holds ``10 r + c + 100 t`` on date t."""
    values = np.arange(100, dtype=np.float64).reshape(10, 10)
    stack = _stack({"ndvi": np.stack([values + 100 * t for t in range(n_times)])})
    return stack, np.ones((n_times, 10, 10), dtype=bool), _grid(10, 10)


def test_overlapping_zones_each_get_their_own_pixels() -> None:
    stack, clear, geobox = _ramp()
    outline, a, b = box(0, 0, 100, 100), box(0, 0, 40, 40), box(30, 30, 60, 60)
    zones = _zones(outline, a, b)
    table = zonal_stats(stack, zones, clear=clear, geobox=geobox)
    for zone_id, geom, pixels in ((1, outline, 100), (2, a, 16), (3, b, 9)):
        rows = _rows(table, zone_id)
        assert (rows.pixels == pixels).all() and (rows["count"] == pixels).all()
        assert (rows.clear_fraction == 1.0).all()
        hand = _summary(_pick(stack["ndvi"].values, clear, geobox, geom))
        _assert_matches(rows, hand, atol=1e-12)
    # Zone a is rows 6..9, cols 0..3: mean 10 * 7.5 + 1.5 on date 0.
    assert _rows(table, 2)["mean"].iloc[0] == pytest.approx(76.5)
    # The shared pixel (row 6, col 3) belongs to a and b alike.
    found = zone_pixels(zones, geobox)
    assert 63 in found.pixels[1] and 63 in found.pixels[2]


def test_zone_smaller_than_a_pixel_takes_its_representative_points_pixel() -> None:
    stack, clear, geobox = _ramp()
    clear[0, 4, 1] = False  # the tiny zone's pixel is cloudy on the first date
    tiny, sliver = box(12, 52, 14, 54), box(0, 21, 100, 22)
    table = zonal_stats(stack, _zones(tiny, sliver), clear=clear, geobox=geobox)
    rows = _rows(table, 1)
    assert (rows.pixels == 1).all()
    assert rows["count"].tolist() == [0, 1, 1]
    assert rows.clear_fraction.tolist() == [0.0, 1.0, 1.0]
    # (x 13, y 53) lies in row 4, col 1: value 41 + 100 t.
    assert rows["mean"].tolist()[1:] == [141.0, 241.0]
    assert rows["median"].tolist()[1:] == [141.0, 241.0]
    assert rows["std"].tolist()[1:] == [0.0, 0.0]
    assert rows[["mean", "median", "std"]].iloc[0].isna().all()
    sliver_rows = _rows(table, 2)
    assert (sliver_rows.pixels == 1).all() and (sliver_rows["count"] == 1).all()
    point = sliver.representative_point()
    row, col = rasterio.transform.rowcol(geobox.affine, point.x, point.y)
    assert sliver_rows["mean"].iloc[0] == 10 * row + col


def test_fields_smaller_than_a_pixel_are_the_aoi_and_keep_their_pixel() -> None:
    # Real-size tiny fields (8 m x 8 m, 8 m x 3 m) placed so that no pixel centre (at
    # 5 m mod 10 m) lies in them; the AOI is the fields themselves, and so are the tiles'
    # footprints. One field in zone 37, one in zone 36, one across their border (36 E).
    y0 = 55_300.0
    border = from_lonlat(Point(36.0, 0.5), 32637).x
    lat = [to_lonlat(Point(border, y0 + dy), 32637).y for dy in (46.0, 49.0)]
    metre = 1 / 111_320  # degrees of longitude per metre at the equator, about
    fields = [
        to_lonlat(box(166_105.5, y0 + 1, 166_113.5, y0 + 9), 32637),
        to_lonlat(box(833_905.5, y0 + 1, 833_913.5, y0 + 9), 32636),
        box(36.0 - 2.5 * metre, lat[0], 36.0 + 5.5 * metre, lat[1]),  # its point is east
    ]
    zones = gpd.GeoDataFrame(
        {"zone_id": [1, 2, 3], "name": ["east", "west", "across"]}, geometry=fields, crs=4326
    )
    tiles = plan_tiles(zones.union_all(), tile_px=256)
    assert sorted(t.epsg for t in tiles) == [32636, 32637]
    assert all(inside_mask(t).sum() == 0 for t in tiles)  # no pixel centre in a footprint
    # Each representative point, by hand in UTM: the middle of the field, or for the one
    # across the border, 1.5 m east of it (in zone 37).
    points = [
        (32637, 166_109.5, y0 + 5),
        (32636, 833_909.5, y0 + 5),
        (32637, border + 1.5, y0 + 47.5),
    ]
    rng = np.random.default_rng(31)
    times = ["2024-03-05T07:54", "2024-03-15T07:54"]
    data = [(tile, *_tile_stack(rng, tile, times)) for tile in tiles]
    table = _footprint_table(data, zones)
    for zone_id, (epsg, x, y) in zip(zones.zone_id, points, strict=True):
        want = []
        for tile, stack, clear in data:
            row, col = rasterio.transform.rowcol(tile.geobox.affine, x, y)
            height, width = tile.geobox.shape
            if tile.epsg == epsg and 0 <= row < height and 0 <= col < width:
                ndvi = stack["ndvi"].values[:, row, col]
                want.append(np.where(clear[:, row, col], ndvi, np.nan))
        assert len(want) == 1
        rows = _rows(table, int(zone_id))
        assert (rows.pixels == 1).all(), zone_id
        np.testing.assert_array_equal(rows["mean"], want[0])
        np.testing.assert_array_equal(rows["median"], want[0])
        assert rows["count"].tolist() == np.isfinite(want[0]).astype(int).tolist()
    # Exactly one tile offers each field's pixel, also for the field across the border.
    offers = [
        zone_pixels(zones, t.geobox, inside=inside_mask(t), footprint=t.footprint).fallback
        for t in tiles
    ]
    for z in range(3):
        assert sum(f[z] is not None for f in offers) == 1


def test_zone_outside_the_data_has_no_pixel_and_nan_statistics() -> None:
    stack, clear, geobox = _ramp()
    table = zonal_stats(stack, _zones(box(500, 500, 510, 510)), clear=clear, geobox=geobox)
    assert (table.pixels == 0).all() and (table["count"] == 0).all()
    assert table[["mean", "median", "std", "clear_fraction"]].isna().all().all()


def test_all_cloudy_date_gives_count_zero_and_clear_fraction_zero() -> None:
    stack, clear, geobox = _ramp()
    clear[1] = False
    table = zonal_stats(
        stack, _zones(box(0, 0, 100, 100), box(0, 0, 40, 40)), clear=clear, geobox=geobox
    )
    cloudy = table[table.time == table.time.unique()[1]]
    assert (cloudy["count"] == 0).all() and (cloudy.clear_fraction == 0.0).all()
    assert cloudy[["mean", "median", "std"]].isna().all().all()
    assert cloudy.pixels.tolist() == [100, 16]
    sunny = table[table.time != table.time.unique()[1]]
    assert (sunny.clear_fraction == 1.0).all()


def test_nan_index_values_are_not_clear_even_under_a_clear_mask() -> None:
    stack, clear, geobox = _ramp(1)
    stack["ndvi"][0, 0, :5] = np.nan
    table = zonal_stats(stack, _zones(box(0, 90, 100, 100)), clear=clear, geobox=geobox)
    assert table["count"].tolist() == [5] and table.clear_fraction.tolist() == [0.5]
    assert table["mean"].tolist() == [7.0]
    # Without a clear mask every finite value counts.
    assert zonal_stats(stack, _zones(box(0, 90, 100, 100)), geobox=geobox)["count"].tolist() == [5]


def test_inside_mask_drops_pixels_outside_the_tile_footprint() -> None:
    stack, clear, geobox = _ramp(1)
    inside = np.zeros((10, 10), dtype=bool)
    inside[:, 5:] = True
    zones = _zones(box(0, 0, 100, 100), box(12, 52, 14, 54))
    table = zonal_table(zonal_partial(stack, zones, clear=clear, geobox=geobox, inside=inside))
    assert table.pixels.tolist() == [50, 0]  # the tiny zone's pixel is another tile's
    assert table["mean"].iloc[0] == pytest.approx(np.arange(100).reshape(10, 10)[:, 5:].mean())


def test_dataarray_and_dask_input_give_the_same_table() -> None:
    rng = np.random.default_rng(5)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (2, 30, 40))
    zones = _seam_zones()
    want = zonal_stats(stack, zones, clear=clear, geobox=geobox)
    lazy = stack["ndvi"].copy(data=da.from_array(stack["ndvi"].values, chunks=(1, 16, 16)))
    lazy_clear = xr.DataArray(clear, dims=("time", "y", "x"))
    got = zonal_stats(lazy, zones, clear=lazy_clear, geobox=geobox)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.parametrize("max_exact_pixels", [MAX_EXACT_PIXELS, 50])
def test_chunk_by_chunk_partial_equals_the_whole_tiles(max_exact_pixels: int) -> None:
    rng = np.random.default_rng(13)
    geobox = _grid(30, 40)
    stack, clear = _random_stack(rng, (5, 30, 40), ("ndvi", "ndwi"))
    zones = _seam_zones()
    want = zonal_stats(stack, zones, clear=clear, geobox=geobox, max_exact_pixels=max_exact_pixels)
    # Chunks that cut every zone, uneven at the edges; values NaN where not clear.
    masked = stack.where(clear).chunk({"time": 1, "y": 7, "x": 9})
    lazy = zonal.zonal_partial_lazy(masked, zones, geobox=geobox, max_exact_pixels=max_exact_pixels)
    got = zonal_table(lazy.compute())
    # Counts, pixels and medians exactly; mean and std merged from 20 chunks by Chan's update.
    exact = ["zone_id", "name", "time", "index", "median", "count", "clear_fraction", "pixels"]
    pd.testing.assert_frame_equal(got[exact], want[exact], check_exact=True)
    for column in ("mean", "std"):
        np.testing.assert_allclose(got[column], want[column], rtol=0, atol=1e-12, equal_nan=True)
    assert _rows(got, 4).pixels.tolist() == [1] * 5  # the sub-pixel zone found its pixel once
    binned = max_exact_pixels < 30 * 40
    assert bool(combine_partials([lazy.compute()]).binned[0]) is binned


def test_shipped_aoi_zones_in_lonlat_overlap_on_utm_tiles() -> None:
    aoi = read_aoi(SHIPPED_AOI)
    tiles = plan_tiles(aoi.geometry, tile_px=512)
    rng = np.random.default_rng(2)
    data = []
    for tile in tiles:
        values = rng.uniform(0, 1, size=(2, *tile.geobox.shape)).astype(np.float64)
        data.append((tile, _stack({"ndvi": values}), rng.random(values.shape) < 0.9))
    table = zonal_table(
        combine_partials(
            zonal_partial(stack, aoi.zones, clear=clear, geobox=tile.geobox)
            for tile, stack, clear in data
        )
    )
    pixels = table.groupby("zone_id").pixels.first()
    assert (pixels > 1000).all()
    assert pixels[1] > pixels[2:].sum()  # the outline holds the fields, which keep theirs
    # The outline (~1 M pixels) is too large to keep its values: its median is binned.
    expected = np.array(zone_pixels(aoi.zones, tiles[0].geobox).expected)
    np.testing.assert_allclose(expected, pixels.to_numpy(), rtol=0.01)
    binned = expected > MAX_EXACT_PIXELS
    assert binned.tolist() == [True] + [False] * (len(binned) - 1)
    for zone_id, geom, big in zip(aoi.zones.zone_id, aoi.zones.geometry, binned, strict=True):
        picked = [
            _pick(stack["ndvi"].values, clear, tile.geobox, from_lonlat(geom, tile.epsg))
            for tile, stack, clear in data
        ]
        hand = _summary(np.concatenate(picked, axis=1))
        rows = _rows(table, int(zone_id))
        tol = MEDIAN_BIN_WIDTH / 2 if big else None
        _assert_matches(rows, hand, atol=1e-12, label=f"zone {zone_id}", median_atol=tol)
    # Zones are projected like the tile footprints: restricting each tile to its footprint,
    # as a flow over several UTM zones must, loses no pixel of a zone inside the AOI.
    owned = zonal_table(
        combine_partials(
            zonal_partial(
                stack, aoi.zones, clear=clear, geobox=tile.geobox, inside=inside_mask(tile)
            )
            for tile, stack, clear in data
        )
    )
    pd.testing.assert_frame_equal(owned, table, check_exact=True)


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_message() -> None:
    stack, clear, geobox = _ramp()
    zones = _zones(box(0, 0, 50, 50))
    with pytest.raises(ConfigError, match="no CRS"):
        zonal_stats(stack, zones.set_crs(None, allow_override=True), geobox=geobox)
    with pytest.raises(ValueError, match="clear mask"):
        zonal_stats(stack, zones, clear=clear[:, :5], geobox=geobox)
    with pytest.raises(ValueError, match="expected"):
        zonal_stats(stack, zones, geobox=_grid(5, 5))
    with pytest.raises(ValueError, match="no geobox"):
        zonal_stats(stack, zones)
    with pytest.raises(ConfigError, match="unique"):
        zonal_stats(
            stack, _zones(box(0, 0, 5, 5), box(1, 1, 5, 5)).assign(zone_id=1), geobox=geobox
        )
    one = zonal_partial(stack, zones, geobox=geobox)
    other = zonal_partial(stack, _zones(box(0, 0, 5, 5), box(1, 1, 5, 5)), geobox=geobox)
    with pytest.raises(ValueError, match="different zones"):
        combine_partials([one, other])
    with pytest.raises(ValueError, match="no partial"):
        combine_partials([])


# --- outputs --------------------------------------------------------------------------------


def _table() -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    rng = np.random.default_rng(9)
    stack, clear = _random_stack(rng, (3, 30, 40), ("ndvi", "ndwi"))
    zones = _seam_zones()
    zones.loc[1, "name"] = "NA"  # text that CSV readers like to turn into a missing value
    zones.loc[2, "name"] = "Farm, north; «Grünfeld»"
    return zonal_stats(stack, zones, clear=clear, geobox=_grid(30, 40)), zones


def test_csv_round_trip_gives_the_table_back(tmp_path: Path) -> None:
    table, _ = _table()
    (written,) = write_zonal_table(table, tmp_path / "out", formats=("csv",))
    assert written == tmp_path / "out" / "zonal_stats.csv"
    pd.testing.assert_frame_equal(read_zonal_table(written), table, check_exact=True)
    (named,) = write_zonal_table(table, tmp_path / "fields.csv", formats=("csv",))
    assert named == tmp_path / "fields.csv" and named.exists()


#: Zone names a spreadsheet would run as formulas, names that start like an escaped one,
#: and names that need no escape.
RISKY_NAMES = (
    '=HYPERLINK("http://evil","x")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTAB",
    "\rCR",
    "'quoted",
    "''",
    "North field",
    "a=b",
)


def _risky() -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    stack, clear, geobox = _ramp(1)
    zones = _zones(*(box(10 * i, 0, 10 * i + 10, 10) for i in range(len(RISKY_NAMES))))
    zones = zones.assign(name=list(RISKY_NAMES))
    return zonal_stats(stack, zones, clear=clear, geobox=geobox), zones


def test_csv_names_are_escaped_against_formula_injection(tmp_path: Path) -> None:
    table, _ = _risky()
    assert table["name"].tolist() == list(RISKY_NAMES)
    (written,) = write_zonal_table(table, tmp_path, formats=("csv",))
    with written.open(newline="", encoding="utf-8") as f:
        cells = [row[COLUMNS.index("name")] for row in csv.reader(f)][1:]
    assert cells == [
        "'" + '=HYPERLINK("http://evil","x")',
        "'+1+2",
        "'-2+3",
        "'@SUM(A1:A2)",
        "'\tTAB",
        "'\rCR",
        "''quoted",
        "'''",
        "North field",
        "a=b",
    ]
    assert '"\'=HYPERLINK(""http://evil"",""x"")"' in written.read_text(encoding="utf-8")
    # Reading gives the names back as they were; the table itself is not changed.
    pd.testing.assert_frame_equal(read_zonal_table(written), table, check_exact=True)
    assert table["name"].tolist() == list(RISKY_NAMES)


def test_parquet_and_geopackage_keep_risky_names_as_they_are(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow is not installed: Parquet cannot be written")
    table, zones = _risky()
    parquet, csv_path = write_zonal_table(table, tmp_path)
    assert pd.read_parquet(parquet)["name"].tolist() == list(RISKY_NAMES)
    for path in (parquet, csv_path):
        pd.testing.assert_frame_equal(read_zonal_table(path), table, check_exact=True)
    assert zonal_geodataframe(table, zones)["name"].tolist() == list(RISKY_NAMES)


def test_parquet_and_csv_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow is not installed: Parquet cannot be written")
    table, _ = _table()
    parquet, csv = write_zonal_table(table, tmp_path)
    assert parquet.suffix == ".parquet" and csv.suffix == ".csv"
    for path in (parquet, csv):
        pd.testing.assert_frame_equal(read_zonal_table(path), table, check_exact=True)


def test_parquet_without_an_engine_is_refused_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zonal, "_parquet_engine", lambda: False)
    table, _ = _table()
    with pytest.raises(ProductError, match="pyarrow"):
        write_zonal_table(table, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert write_zonal_table(table, tmp_path / "out", formats=("csv",))[0].exists()


def test_geodataframe_has_the_zone_geometries_in_lonlat() -> None:
    table, zones = _table()
    frame = zonal_geodataframe(table, zones)
    assert frame.crs.to_epsg() == 4326
    assert list(frame.columns) == [*COLUMNS, "geometry"]
    pd.testing.assert_frame_equal(pd.DataFrame(frame.drop(columns="geometry")), table)
    lonlat = zones.to_crs(4326).set_index("zone_id").geometry
    want = gpd.GeoSeries(lonlat.loc[table.zone_id].to_numpy(), crs=4326)
    assert frame.geometry.geom_equals_exact(want, tolerance=1e-12).all()
