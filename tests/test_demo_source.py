"""The demo source: deterministic, seamless, lazy, and carrying the signals later stages need."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import pairwise

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from rasterio.features import rasterize
from shapely.geometry import box

from agrimon.aoi import DEFAULT_AOI, read_aoi
from agrimon.grid import Tile, geobox_for, plan_tiles, snap_bounds
from agrimon.indices.spectral import ndvi
from agrimon.sources import get_source, synth
from agrimon.sources.base import ALL_BANDS, Source
from agrimon.sources.demo import DemoSource, cover_truth, field_truth, render_stack, woody_truth
from agrimon.sources.settings import SourceSettings

# A 2.56 km square of the default AOI with fields, grass and shrubs in it.
GRID = geobox_for((204800.0, 7825920.0, 207360.0, 7828480.0), 32734, 10.0)
WET, DRY, PRE = date(2024, 2, 24), date(2023, 9, 1), date(2023, 10, 15)


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 6)


@pytest.fixture(scope="module")
def scenes() -> xr.Dataset:
    """Three dates rendered for GRID (dry season, before sowing, peak of the rains)."""
    return render_stack(GRID, [_at(DRY), _at(PRE), _at(WET)]).compute()


@pytest.fixture(scope="module")
def cover() -> np.ndarray:
    return cover_truth(GRID).values


def test_is_a_source_with_five_day_revisit() -> None:
    src = get_source("demo")
    assert isinstance(src, Source)
    tile = plan_tiles(box(18.15, -19.66, 18.245, -19.57))[0]
    found = src.find_scenes(tile, date(2024, 1, 1), date(2024, 1, 31))
    days = [s.time.date() for s in found]
    assert len(found) == 6
    assert all((b - a) == timedelta(days=5) for a, b in pairwise(days))
    assert all(s.id == f"DEMO_S2_L2A_{s.time:%Y%m%d}_{tile.id}" for s in found)
    # The overpass is 10:30 local solar time at the zone's central meridian (21°E): 09:06 UTC.
    assert found[0].time.hour == 9 and found[0].time.minute == 6
    # Acquisition dates do not depend on the requested start: reruns line up.
    later = src.find_scenes(tile, date(2024, 1, 3), date(2024, 1, 31))
    assert [s.id for s in later] == [s.id for s in found if s.time.date() >= date(2024, 1, 3)]


def test_check_needs_nothing_and_touches_nothing() -> None:
    """The demo source has no settings, files or network to check: check() never raises."""
    get_source("demo").check()
    # Whatever the settings (they are not the demo's).
    get_source("demo", SourceSettings(offline=True, stac_url="not a url")).check()


def test_stack_follows_the_scene_stack_convention() -> None:
    tile = plan_tiles(box(18.15, -19.66, 18.245, -19.57), tile_px=256)[5]
    src = DemoSource()
    ds = src.load(tile, src.find_scenes(tile, date(2024, 1, 1), date(2024, 1, 20)), chunk_px=128)
    assert list(ds.data_vars) == list(ALL_BANDS)
    assert ds["red"].dims == ("time", "y", "x")
    assert ds["red"].dtype == np.float32 and ds["scl"].dtype == np.uint8
    assert isinstance(ds["red"].data, da.Array)
    assert ds["red"].data.chunksize[0] == 1 and max(ds["red"].data.chunksize[1:]) <= 128
    assert ds.odc.geobox == tile.geobox
    assert ds.odc.geobox.crs.epsg == 32734
    # Pixel centres: x of the first column is half a pixel right of the tile's area edge.
    assert float(ds.x[0]) == tile.area_bounds[0] + 5.0
    assert float(ds.y[0]) == tile.area_bounds[3] - 5.0


def test_same_request_same_pixels_whatever_the_chunking() -> None:
    times = [_at(WET), _at(DRY)]
    a = render_stack(GRID, times, chunk_px=512).compute()
    b = render_stack(GRID, times, chunk_px=96).compute()
    c = render_stack(GRID, times, chunk_px=512).compute()
    for band in ALL_BANDS:
        np.testing.assert_array_equal(a[band].values, b[band].values)
        np.testing.assert_array_equal(a[band].values, c[band].values)


def test_adjacent_tiles_agree_on_their_shared_edge() -> None:
    # Two neighbouring 256 px tiles in one zone, and one grid spanning both.
    left = Tile(32734, 80, 3057, size=256)
    right = Tile(32734, 81, 3057, size=256)
    src = DemoSource()
    found = src.find_scenes(left, WET, WET + timedelta(days=5))
    assert [s.time for s in found] == [
        s.time for s in src.find_scenes(right, WET, WET + timedelta(days=5))
    ]
    both = geobox_for(
        (left.bounds[0], left.bounds[1], right.bounds[2], right.bounds[3]), 32734, 10.0
    )
    times = [s.time for s in found]
    whole = render_stack(both, times).compute()
    a = src.load(left, found).compute()
    b = src.load(right, found).compute()
    for band in ("red", "nir", "swir16", "scl"):
        joined = np.concatenate([a[band].values, b[band].values], axis=2)
        np.testing.assert_array_equal(joined, whole[band].values)
    # And no jump at the seam: the step across it is like any step between neighbours.
    red = whole["red"].values[0]
    steps = np.abs(np.diff(red, axis=1))
    seam = float(np.median(steps[:, 255]))
    inside = float(np.median(steps[:, 100:250]))
    assert seam <= 3 * inside + 1e-4


def test_planning_a_100km_aoi_computes_no_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(synth, "render", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(synth, "landscape", lambda *a, **k: calls.append(1))
    aoi = box(17.5, -20.2, 18.45, -19.3)  # about 100 × 100 km
    src = DemoSource()
    tiles = plan_tiles(aoi)
    assert len(tiles) >= 100
    stacks = [src.load(t, src.find_scenes(t, date(2023, 11, 1), date(2024, 4, 30))) for t in tiles]
    total = sum(s["red"].size for s in stacks)
    assert total > 3 * 10**9  # 12 GB of float32 red alone, had it been computed
    assert calls == []


def test_ndvi_of_a_tile_equals_hand_computation(scenes: xr.Dataset) -> None:
    red = scenes["red"].values.astype(np.float64)
    nir = scenes["nir"].values.astype(np.float64)
    by_hand = (nir - red) / (nir + red)
    got = ndvi(scenes).values
    np.testing.assert_allclose(got, by_hand, rtol=0, atol=1e-6)
    # Values are quantised like L2A digital numbers (1e-4) and within reflectance range.
    assert np.allclose(red * 1e4, np.round(red * 1e4), atol=1e-2)
    assert red.min() > 0 and red.max() <= 1.0


def _clear(scenes: xr.Dataset, t: int) -> np.ndarray:
    return np.isin(scenes["scl"].values[t], (4, 5, 6))


def test_cover_types_have_their_spectra(scenes: xr.Dataset, cover: np.ndarray) -> None:
    fractions = {synth.CLASS_NAMES[k]: float((cover == k).mean()) for k in synth.CLASS_NAMES}
    assert (
        fractions["crop"] > 0.1
        and fractions["grassland"] > 0.1
        and fractions["woody shrubs"] > 0.05
    )
    nd = ndvi(scenes).values

    def mean(var: np.ndarray, t: int, cls: int) -> float:
        sel = (cover == cls) & _clear(scenes, t)
        assert sel.sum() > 100
        return float(var[t][sel].mean())

    i_dry, i_pre, i_wet = 0, 1, 2
    red, swir = scenes["red"].values, scenes["swir16"].values
    # Savanna grass: green in the rains, senescent in the dry season.
    assert mean(nd, i_wet, synth.GRASS) > 0.45 > 0.38 > mean(nd, i_dry, synth.GRASS) > 0.25
    # Woody shrubs stay green into the dry season: higher NDVI, lower red and SWIR than dry grass.
    assert mean(nd, i_dry, synth.SHRUB) > mean(nd, i_dry, synth.GRASS) + 0.15
    assert mean(swir, i_dry, synth.SHRUB) < mean(swir, i_dry, synth.GRASS) - 0.06
    assert mean(red, i_dry, synth.SHRUB) < mean(red, i_dry, synth.GRASS) - 0.03
    # Crops: bare before sowing, green at the peak of the season.
    assert mean(nd, i_pre, synth.CROP) < 0.2
    assert mean(nd, i_wet, synth.CROP) > 0.55
    # Bare Kalahari sand: red about 0.2, SWIR about 0.38 (notes/spectra.md).
    assert mean(red, i_dry, synth.BARE) == pytest.approx(0.20, abs=0.02)
    assert mean(swir, i_dry, synth.BARE) == pytest.approx(0.38, abs=0.03)


def test_clouds_and_shadows_carry_scl_codes() -> None:
    # A whole rainy season over the square: every cloud code appears, with its brightness.
    days = synth.acquisition_dates(date(2023, 12, 1), date(2024, 3, 31))
    ds = render_stack(GRID, [_at(d) for d in days], bands=("blue", "nir", "scl")).compute()
    scl = ds["scl"].values
    codes = set(np.unique(scl).tolist())
    assert {3, 4, 8, 9, 10} <= codes
    blue = ds["blue"].values
    assert blue[scl == 9].mean() > 0.4  # thick cloud: bright in every band
    assert blue[np.isin(scl, (4, 5))].mean() < 0.1
    # Shadows are darker than the same pixels on clear dates.
    shadow = scl == 3
    clear_nir = np.where(np.isin(scl, (4, 5)), ds["nir"].values, np.nan)
    ref = np.nanmedian(clear_nir, axis=0)
    t, y, x = np.nonzero(shadow)
    ok = ~np.isnan(ref[y, x])
    assert (ds["nir"].values[t, y, x][ok] / ref[y, x][ok]).mean() < 0.5
    # The rains are cloudier than the dry season.
    dry = synth.acquisition_dates(date(2023, 7, 1), date(2023, 9, 30))
    assert np.mean([synth.cloud_cover_fraction(d) for d in dry]) < 0.05
    assert np.mean([synth.cloud_cover_fraction(d) for d in days]) > 0.1


def test_woody_truth_is_the_shrub_cover(cover: np.ndarray) -> None:
    woody = woody_truth(GRID)
    assert woody.dtype == np.uint8
    np.testing.assert_array_equal(woody.values, (cover == synth.SHRUB).astype(np.uint8))
    assert woody.odc.geobox == GRID


def test_field_truth_matches_the_pixels_and_yields_follow_greenness(cover: np.ndarray) -> None:
    aoi = read_aoi(DEFAULT_AOI)
    fields, table = field_truth(aoi.geometry, seasons=range(2018, 2025))
    assert len(fields) > 50
    assert fields["field_id"].is_unique
    assert fields["area_ha"].between(10, 40).all()
    # Field polygons burnt onto the grid (pixel centre inside) are exactly the crop pixels.
    local = fields.to_crs(32734)
    burnt = rasterize(
        ((g, 1) for g in local.geometry), out_shape=GRID.shape, transform=GRID.affine, dtype="uint8"
    )
    crop = (cover == synth.CROP).astype(np.uint8)
    assert crop.sum() > 1000
    assert np.mean(burnt != crop) < 0.002
    # One row per field and season; yields grow with the season's peak greenness.
    assert len(table) == 7 * len(fields)
    assert table["yield_t_ha"].between(0.2, 12).all()
    r = np.corrcoef(table["peak_greenness"], table["yield_t_ha"])[0, 1]
    assert r > 0.8
    # Seasons differ: a drought year yields less than a wet year on average.
    by_season = table.groupby("season")["yield_t_ha"].mean()
    assert by_season.max() - by_season.min() > 1.0
    # Calendar: sowing mid-November to late December, peak 82 days after sowing.
    assert table["sowing"].map(lambda d: (d.month, d.day) >= (11, 13) or d.month == 12).all()
    assert ((table["peak"] - table["sowing"]).map(lambda d: d.days) == 82).all()


def test_field_yield_is_visible_in_the_rendered_ndvi() -> None:
    # Seasonal peak of each field's clear-sky NDVI, measured from pixels, tracks its true yield.
    fields, table = field_truth(box(18.19, -19.63, 18.22, -19.60), seasons=[2024])
    days = synth.acquisition_dates(date(2024, 1, 1), date(2024, 4, 15))
    local = fields.to_crs(32734)
    grid = geobox_for(snap_bounds(tuple(local.total_bounds), 10.0), 32734, 10.0)
    ds = render_stack(grid, [_at(d) for d in days], bands=("red", "nir", "scl")).compute()
    nd = np.where(np.isin(ds["scl"].values, (4, 5)), ndvi(ds).values, np.nan)
    ids = rasterize(
        ((g, i + 1) for i, g in enumerate(local.geometry)),
        out_shape=grid.shape,
        transform=grid.affine,
        dtype="int32",
    )
    measured, truth = [], []
    yields = table.set_index("field_id")["yield_t_ha"]
    for i, fid in enumerate(fields["field_id"]):
        inside = ids == i + 1
        if inside.sum() > 1000:
            per_date = [
                np.nanmean(nd[t][inside])
                for t in range(len(days))
                if np.isfinite(nd[t][inside]).mean() > 0.8
            ]
            measured.append(max(per_date))
            truth.append(float(yields[fid]))
    assert len(measured) >= 10
    assert np.corrcoef(measured, truth)[0, 1] > 0.6
