"""The demo source: deterministic, seamless, lazy, and carrying the signals later stages need."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import pairwise

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize
from shapely.geometry import box

from agrimon.aoi import DEFAULT_AOI, read_aoi
from agrimon.grid import Tile, geobox_for, plan_tiles, snap_bounds, to_lonlat
from agrimon.indices.spectral import ndvi
from agrimon.sources import get_source, synth
from agrimon.sources.base import ALL_BANDS, Source
from agrimon.sources.demo import (
    DemoSource,
    cover_truth,
    encroached_truth,
    field_truth,
    lonlat_grid,
    render_stack,
    woody_cover_truth,
    woody_truth,
)
from agrimon.sources.settings import SourceSettings

# A 2.56 km square of the default AOI with fields, grass and shrubs in it.
GRID = geobox_for((204800.0, 7825920.0, 207360.0, 7828480.0), 32734, 10.0)
WET, DRY, PRE = date(2024, 3, 10), date(2023, 9, 1), date(2023, 10, 15)


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
    with dask.config.set(num_workers=2):  # as many chunks as threads or more: whole series
        ds = src.load(
            tile, src.find_scenes(tile, date(2024, 1, 1), date(2024, 1, 20)), chunk_px=128
        )
    assert list(ds.data_vars) == list(ALL_BANDS)
    assert ds["red"].dims == ("time", "y", "x")
    assert ds["red"].dtype == np.float32 and ds["scl"].dtype == np.uint8
    assert isinstance(ds["red"].data, da.Array)
    assert ds["red"].data.chunksize[0] == len(ds.time) and max(ds["red"].data.chunksize[1:]) <= 128
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


#: Dates of the block test: clouds with shadows and cirrus (rains), burn scars (dry season).
CLOUDY = (date(2024, 1, 15), date(2024, 2, 14), date(2024, 3, 10), date(2024, 3, 30))
BURNING = (date(2023, 9, 1), date(2023, 10, 22))
#: Static layers a pixel's rendering depends on (``field_index`` numbers a block's fields).
STATIC = ("cover", "ci", "cj", "shrub", "trees", "riparian", "herb", "encroached", "burn")


@pytest.mark.parametrize(
    "grid",
    [
        # 257 × 301 px of GRID's square (fields, shrubs, trees) ...
        geobox_for((204800.0, 7825910.0, 207810.0, 7828480.0), 32734, 10.0),
        # ... and a lon/lat grid, whose block origins are not whole numbers.
        GeoBox((257, 301), Affine(0.0001, 0.0, 18.2003, 0.0, -0.0001, -19.5703), "EPSG:4326"),
    ],
    ids=["utm", "lonlat"],
)
def test_a_pixel_is_the_same_whatever_block_it_is_rendered_in(grid: GeoBox) -> None:
    """Every pixel is a function of its coordinates and date only, bit for bit.

    A block and its cut into odd-sized sub-blocks (so the vectorised loops, BLAS kernels and
    block origins all differ) render the same reflectance, SCL and truth: no sharp decision
    (cloud, SCL class, cover, field edge, burn scar, quantisation) may flip with the cut.
    """
    ys, xs = (0, 97, 228, 257), (0, 131, 170, 301)
    assert grid.shape == (ys[-1], xs[-1])
    days = CLOUDY + BURNING
    land = synth.landscape(*lonlat_grid(grid))
    whole = [synth.render(land, day) for day in days]
    truths = (
        (cover_truth, woody_cover_truth, encroached_truth)
        if grid.crs is not None and grid.crs.projected
        else ()
    )
    whole_truth = [truth(grid).values for truth in truths]
    for y0, y1 in pairwise(ys):
        for x0, x1 in pairwise(xs):
            block = grid[y0:y1, x0:x1]
            part = synth.landscape(*lonlat_grid(block))
            for name in STATIC:
                got, want = getattr(part, name), getattr(land, name)
                assert np.array_equal(got, want[..., y0:y1, x0:x1]), (name, y0, x0)
            for day, (refl, scl) in zip(days, whole, strict=True):
                got_refl, got_scl = synth.render(part, day)
                assert np.array_equal(got_refl, refl[:, y0:y1, x0:x1]), (day, y0, x0)
                assert np.array_equal(got_scl, scl[y0:y1, x0:x1]), (day, y0, x0)
            for truth, values in zip(truths, whole_truth, strict=True):
                np.testing.assert_array_equal(truth(block).values, values[y0:y1, x0:x1])
    # The dates do test the sharp decisions: clouds of every kind, burn scars, fields.
    codes = set(np.unique([scl for _, scl in whole]).tolist())
    assert {synth.SCL_SHADOW, synth.SCL_CIRRUS, synth.SCL_CLOUD_MED, synth.SCL_CLOUD_HIGH} <= codes
    assert synth.burn_scar(land, BURNING[1]).any()
    assert {synth.CROP, synth.SHRUB, synth.GRASS, synth.TREES} <= set(
        np.unique(land.cover).tolist()
    )


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


@pytest.fixture(scope="module")
def land() -> synth.Landscape:
    return synth.landscape(*lonlat_grid(GRID))


def test_cover_types_have_their_spectra(
    scenes: xr.Dataset, cover: np.ndarray, land: synth.Landscape
) -> None:
    fractions = {synth.CLASS_NAMES[k]: float((cover == k).mean()) for k in synth.CLASS_NAMES}
    assert (
        fractions["crop"] > 0.1
        and fractions["grassland"] > 0.1
        and fractions["woody shrubs"] > 0.05
    )
    nd = ndvi(scenes).values
    canopy = land.shrub + land.trees + land.riparian
    # Nearly pure pixels of each cover (most savanna pixels are mixtures).
    pure = {
        synth.SHRUB: land.shrub >= 0.6,
        synth.GRASS: (cover == synth.GRASS) & (canopy < 0.1) & (land.herb > 0.6),
        synth.CROP: cover == synth.CROP,
        synth.BARE: (cover == synth.BARE) & ((1 - canopy) * (1 - land.herb) > 0.7),
    }

    def mean(var: np.ndarray, t: int, cls: int) -> float:
        sel = pure[cls] & _clear(scenes, t)
        assert sel.sum() > 50
        return float(var[t][sel].mean())

    i_dry, i_pre, i_wet = 0, 1, 2
    red, swir = scenes["red"].values, scenes["swir16"].values
    # Savanna grass: green in the rains, senescent in the dry season.
    assert mean(nd, i_wet, synth.GRASS) > 0.45 > 0.38 > mean(nd, i_dry, synth.GRASS) > 0.2
    # Woody shrubs stay green into the dry season: higher NDVI, lower red and SWIR than dry grass.
    assert mean(nd, i_dry, synth.SHRUB) > mean(nd, i_dry, synth.GRASS) + 0.15
    assert mean(swir, i_dry, synth.SHRUB) < mean(swir, i_dry, synth.GRASS) - 0.06
    assert mean(red, i_dry, synth.SHRUB) < mean(red, i_dry, synth.GRASS) - 0.03
    # Crops: bare before sowing, green at the peak of the season.
    assert mean(nd, i_pre, synth.CROP) < 0.2
    assert mean(nd, i_wet, synth.CROP) > 0.55
    # Bare Kalahari sand: red about 0.2, SWIR about 0.38 (notes/spectra.md) at unit
    # brightness; soils are darker or brighter across the landscape.
    soil = land.soil.astype(np.float64)
    assert mean(red / soil, i_dry, synth.BARE) == pytest.approx(0.20, abs=0.02)
    assert mean(swir / soil, i_dry, synth.BARE) == pytest.approx(0.38, abs=0.03)
    assert np.ptp(soil) > 0.3


def test_cover_fractions_are_fractions(land: synth.Landscape) -> None:
    canopy = land.shrub + land.trees + land.riparian
    for part in (land.shrub, land.trees, land.riparian, land.herb, canopy):
        assert part.min() >= 0.0 and part.max() <= 1.0 + 1e-6
    woody = woody_cover_truth(GRID)
    assert woody.dtype == np.float32 and woody.dims == ("y", "x")
    assert woody.odc.geobox == GRID
    assert float(woody.min()) >= 0.0 and float(woody.max()) <= 1.0
    # Gradients, not blobs: a good share of the pixels lies between open and closed.
    values = woody.values[cover_truth(GRID).values != synth.CROP]
    assert float(np.mean((values > 0.05) & (values < 0.6))) > 0.2
    np.testing.assert_array_equal(woody.values, land.shrub)
    encroached = encroached_truth(GRID)
    assert encroached.dtype == np.uint8
    np.testing.assert_array_equal(encroached.values, (land.shrub >= 0.30).astype(np.uint8))


def test_a_pixel_is_the_cover_weighted_mixture_of_its_end_members(
    scenes: xr.Dataset, land: synth.Landscape
) -> None:
    day, t = DRY, 0
    season, dos = synth.season_of(day)
    assert not synth.burn_scar(land, day).any()  # no fire in this square on this day
    clear = _clear(scenes, t)
    mixed = (land.shrub > 0.3) & (land.shrub < 0.6) & (land.trees > 0.05) & clear
    crop = (land.cover == synth.CROP) & clear
    bands = np.stack([scenes[b].values[t] for b in ALL_BANDS if b != "scl"])

    def spec(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def between(dry: tuple[float, ...], wet: tuple[float, ...], g: float) -> np.ndarray:
        return np.asarray(spec(dry) + (spec(wet) - spec(dry)) * g)

    y, x = (int(v[0]) for v in np.nonzero(mixed))
    s, tr, r = (float(a[y, x]) for a in (land.shrub, land.trees, land.riparian))
    herb, soil = float(land.herb[y, x]), float(land.soil[y, x])
    g_grass = min(1.0, synth.grass_greenness(dos, season) * float(land.vigour[y, x]))
    g_shrub = sum(
        float(land.species[k, y, x]) * sp.greenness(dos, season)
        for k, sp in enumerate(synth.SHRUB_SPECIES)
    )
    g_tree = synth.TREE_PHENOLOGY.greenness(dos, season)
    g_rip = synth.RIPARIAN_PHENOLOGY.greenness(dos, season)
    rest = 1.0 - s - tr - r
    by_hand = (
        s * between(synth.SHRUB_DRY, synth.SHRUB_WET, g_shrub)
        + tr * between(synth.TREE_DRY, synth.TREE_WET, g_tree)
        + r * between(synth.TREE_DRY, synth.TREE_WET, g_rip)
        + rest * herb * between(synth.GRASS_DRY, synth.GRASS_GREEN, g_grass)
        + rest * (1.0 - herb) * soil * spec(synth.SOIL)
    ) * float(land.texture[y, x])
    # Sensor noise is within ±0.004, quantisation 0.00005.
    np.testing.assert_allclose(bands[:, y, x], by_hand, rtol=0, atol=0.0042)

    # A crop pixel before sowing: its field's soil.
    y, x = (int(v[0]) for v in np.nonzero(crop))
    by_hand = float(land.soil[y, x]) * spec(synth.SOIL) * float(land.texture[y, x])
    np.testing.assert_allclose(bands[:, y, x], by_hand, rtol=0, atol=0.0042)


def test_trees_and_riparian_woodland_are_not_encroachment(
    scenes: xr.Dataset, cover: np.ndarray, land: synth.Landscape
) -> None:
    woody = woody_cover_truth(GRID).values
    for cls in (synth.TREES, synth.RIPARIAN):
        sel = cover == cls
        assert sel.sum() > 30
        # Dominated by tree canopy, which woody_cover_truth does not count: only the
        # shrubs between (or under) the trees are encroachment.
        tree_canopy = (land.trees + land.riparian)[sel]
        assert (woody[sel] <= 1.0 - tree_canopy + 1e-6).all()
        assert float(woody[sel].max()) < 0.5
        assert float(encroached_truth(GRID).values[sel].mean()) < 0.2
    # Yet riparian woodland is greener in the dry season than encroached bush: a confounder.
    nd = ndvi(scenes).values[0]
    clear = _clear(scenes, 0)
    rip = float(np.median(nd[(cover == synth.RIPARIAN) & clear]))
    bush = float(np.median(nd[land.encroached & clear]))
    assert rip > bush


def test_burn_scars_lower_dry_season_ndvi_then_recover() -> None:
    grid = geobox_for((200000.0, 7820000.0, 210000.0, 7830000.0), 32734, 40.0)
    land = synth.landscape(*lonlat_grid(grid))
    days = synth.acquisition_dates(date(2023, 7, 1), date(2024, 6, 30))
    char = np.stack([synth.burn_scar(land, d) for d in days])
    burnt_ever = char.max(axis=0) > 0
    assert 0.02 < burnt_ever.mean() < 0.3  # patches, not the whole landscape
    # Pixels burnt between two acquisitions of the dry season.
    k = next(i for i in range(1, len(days)) if ((char[i] > 0.8) & (char[i - 1] == 0)).sum() > 30)
    assert days[k].month in (8, 9, 10, 11)
    new = (char[k] > 0.8) & (char[k - 1] == 0)

    def ground_ndvi(day: date) -> np.ndarray:
        refl = synth.ground_reflectance(land, day)
        nir, red = refl[synth.NIR], refl[synth.RED]
        return np.asarray((nir - red) / (nir + red))

    before, after = ground_ndvi(days[k - 1])[new], ground_ndvi(days[k])[new]
    assert float(np.mean(after - before)) < -0.03
    # Still visible for weeks, gone a season later.
    assert (char[k + 6][new] > 0.25).all()
    assert (char[-1][new] < 0.01).all()
    weeks_later = ground_ndvi(days[k + 4])[new]
    assert float(np.mean(weeks_later - before)) < -0.01


def test_woody_species_have_their_own_leaf_cycles() -> None:
    season = 2024
    early, late, evergreen = synth.SHRUB_SPECIES
    # Mid-October, before the rains: black thorn has flushed, grass and sickle bush have not.
    assert early.greenness(110, season) > late.greenness(110, season) + 0.2
    assert early.greenness(110, season) > synth.grass_greenness(110, season) + 0.2
    # Late dry season (May): the late species holds its leaves longest among the deciduous.
    assert late.greenness(320, season) > early.greenness(320, season)
    # Evergreen shrubs and riparian woodland stay green in the dry season; trees in between.
    dry = 60
    assert synth.RIPARIAN_PHENOLOGY.greenness(dry, season) > evergreen.greenness(dry, season)
    assert evergreen.greenness(dry, season) > synth.TREE_PHENOLOGY.greenness(dry, season)
    assert synth.TREE_PHENOLOGY.greenness(dry, season) > early.greenness(dry, season)


def test_fields_vary_in_size_shape_and_orientation() -> None:
    aoi = read_aoi(DEFAULT_AOI)
    fields, _ = field_truth(aoi.geometry, seasons=[2024])
    local = fields.to_crs(32734)
    area = local.area.to_numpy()
    assert area.std() / area.mean() > 0.15 and area.max() > 2 * area.min()
    # Orientation of each field's longest edge, modulo 90°.
    angles = []
    for geom in local.geometry:
        rect = np.asarray(geom.minimum_rotated_rectangle.exterior.coords)
        dx, dy = np.diff(rect[:2], axis=0)[0]
        angles.append(np.degrees(np.arctan2(dy, dx)) % 90.0)
    assert np.std(angles) > 10.0
    assert len({len(g.exterior.coords) for g in fields.geometry}) > 3


def test_field_truth_polygons_are_the_rendered_crop_pixels() -> None:
    fields, _ = field_truth(to_lonlat(box(*GRID.boundingbox), 32734), seasons=[2024])
    local = fields.to_crs(32734)
    ids = rasterize(
        ((g, i + 1) for i, g in enumerate(local.geometry)),
        out_shape=GRID.shape,
        transform=GRID.affine,
        dtype="int32",
    )
    land = synth.landscape(*lonlat_grid(GRID))
    crop = land.cover == synth.CROP
    assert np.array_equal(ids > 0, crop)
    # Every pixel of one polygon renders as that one field.
    for i, fid in enumerate(fields["field_id"]):
        inside = ids == i + 1
        if inside.any():
            ci, cj = land.ci[inside], land.cj[inside]
            assert (ci == ci[0]).all() and (cj == cj[0]).all()
            assert fid == f"F{ci[0]:+06d}{cj[0]:+06d}"


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


def test_woody_truth_is_the_encroachment_mask() -> None:
    woody = woody_truth(GRID)
    assert woody.dtype == np.uint8 and woody.name == "woody"
    np.testing.assert_array_equal(woody.values, encroached_truth(GRID).values)
    assert woody.odc.geobox == GRID
    assert 0.05 < float(woody.mean()) < 0.6


def test_field_truth_matches_the_pixels_and_yields_follow_greenness(cover: np.ndarray) -> None:
    aoi = read_aoi(DEFAULT_AOI)
    fields, table = field_truth(aoi.geometry, seasons=range(2018, 2025))
    assert len(fields) > 50
    assert fields["field_id"].is_unique
    assert fields["area_ha"].between(3, 60).all()
    # Field polygons burnt onto the grid (pixel centre inside) are exactly the crop pixels.
    local = fields.to_crs(32734)
    burnt = rasterize(
        ((g, 1) for g in local.geometry), out_shape=GRID.shape, transform=GRID.affine, dtype="uint8"
    )
    crop = (cover == synth.CROP).astype(np.uint8)
    assert crop.sum() > 1000
    assert np.mean(burnt != crop) < 0.002
    # One row per field and season; yields grow with the season's peak greenness, which
    # explains a good part of them but far from all (sowing, dry spells, management).
    assert len(table) == 7 * len(fields)
    assert table["yield_t_ha"].between(0.2, 12).all()
    r = np.corrcoef(table["peak_greenness"], table["yield_t_ha"])[0, 1]
    assert 0.5 < r < 0.85
    by_fifth = table.groupby(pd.qcut(table["peak_greenness"], 5), observed=True)["yield_t_ha"]
    assert np.all(np.diff(by_fifth.mean().to_numpy()) > 0)
    # Seasons differ: the driest season yields less than the wettest on average.
    by_season = table.groupby("season")["yield_t_ha"].mean()
    rain = {season: synth.rainfall(season) for season in by_season.index}
    wet, dry = max(rain, key=rain.__getitem__), min(rain, key=rain.__getitem__)
    assert by_season[wet] - by_season[dry] > 0.7
    # Calendar: sowing mid-November to late December; half green-up 40 days later; half
    # senescence 125 days after sowing, or earlier after a dry spell; the peak in between,
    # about 80 days after sowing where no spell hit (whole days: the table's are dates).
    assert table["sowing"].map(lambda d: (d.month, d.day) >= (11, 13) or d.month == 12).all()
    start, peak, end = (
        (table[name] - table["sowing"]).map(lambda d: d.days).to_numpy()
        for name in ("start", "peak", "end")
    )
    assert (start == 40).all()
    assert (end <= 125).all() and (end >= 124 - 1.5 * synth.SENESCENCE_DAYS).all()
    assert (end < 120).mean() > 0.05
    assert ((peak > start + 15) & (peak < end - 15)).all()
    unhurt = end >= 124
    assert (np.abs(peak[unhurt] - 80.5) <= 1.5).mean() > 0.8


def test_field_yield_is_visible_in_the_rendered_ndvi() -> None:
    # Seasonal peak of each field's clear-sky NDVI, measured from pixels, tracks its true peak
    # greenness, and with it the yield, about as well as the true greenness does.
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
    measured, truth, green = [], [], []
    yields = table.set_index("field_id")["yield_t_ha"]
    peaks = table.set_index("field_id")["peak_greenness"]
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
            green.append(float(peaks[fid]))
    assert len(measured) >= 10
    assert np.corrcoef(measured, green)[0, 1] > 0.9
    seen, known = np.corrcoef(measured, truth)[0, 1], np.corrcoef(green, truth)[0, 1]
    assert seen > 0.3 and seen > known - 0.15


def test_a_chunks_series_is_one_task_with_the_pixels_of_one_task_per_date() -> None:
    from functools import partial

    from agrimon.sources import demo
    from agrimon.sources.lazy import lazy_stack

    times = [_at(WET), _at(DRY), _at(PRE)]
    days = [t.date() for t in times]
    fetch = partial(demo._render_block, days=days, southern=True, bands=("red", "scl"))

    def stack(fetch_px: int | None) -> xr.Dataset:
        return lazy_stack(
            GRID,
            times,
            ("red", "scl"),
            fetch=fetch,
            name="t",
            chunk_px=128,
            fetch_px=fetch_px,
            prepare=demo._block_landscape,
        )

    with dask.config.set(num_workers=2):
        series, per_date = stack(None), stack(128)
    with dask.config.set(num_workers=8):  # more threads than chunks: spans of dates
        spans = stack(None)
    # 2 × 2 chunks: a landscape and a series task each, and one pick per band.
    assert series["red"].data.chunks == ((3,), (128, 128), (128, 128))
    assert len(dict(series.__dask_graph__())) == 4 * (2 + 2)
    assert spans["red"].data.chunks == ((2, 1), (128, 128), (128, 128))
    assert per_date["red"].data.chunks == ((1, 1, 1), (128, 128), (128, 128))
    assert len(dict(per_date.__dask_graph__())) == 4 * (1 + 3 + 3 * 2)
    a, b, c = series.compute(), per_date.compute(), spans.compute()
    for band in ("red", "scl"):
        assert a[band].dtype == b[band].dtype == c[band].dtype
        np.testing.assert_array_equal(a[band].values, b[band].values)
        np.testing.assert_array_equal(a[band].values, c[band].values)
    assert a["scl"].dtype == np.uint8 and float(np.nanmax(a["red"].values)) > 0
