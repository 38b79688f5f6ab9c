"""Phenology: gap filling, smoothing and season metrics, on hand-made curves and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from rasterio.features import rasterize
from scipy.signal import savgol_filter
from shapely.geometry import box

from agrimon.errors import ConfigError
from agrimon.grid import geobox_for, to_lonlat
from agrimon.indices import phenology as phenology_module
from agrimon.indices.masks import clear_mask
from agrimon.indices.phenology import (
    METRICS,
    PhenologyParams,
    fill_gaps,
    phenology,
    regular_grid,
    savgol_nan,
    smooth_series,
)
from agrimon.indices.spectral import ndvi
from agrimon.sources import synth
from agrimon.sources.demo import cover_truth, field_truth, render_stack

SEASON_START = date(2023, 7, 1)


def _logistic(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _curve(days: np.ndarray, start: float, end: float, base: float, top: float) -> np.ndarray:
    """Double logistic whose half-rise / half-fall points are ``start`` / ``end``."""
    rise, fall = _logistic((days - start) / 7.0), _logistic((days - end) / 8.0)
    return np.asarray(base + (top - base) * (rise - fall), dtype=np.float64)


def _times(days: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([datetime(2023, 7, 1) + timedelta(days=float(d)) for d in days])


# --- building blocks --------------------------------------------------------------------


def test_fill_gaps_interpolates_short_gaps_only() -> None:
    t = np.arange(0.0, 100.0, 5.0)
    values = np.sin(t / 20.0)
    values[[3, 4]] = np.nan  # a 15-day gap (10 → 25)
    values[[10, 11, 12, 13, 14, 15]] = np.nan  # a 35-day gap (45 → 80)
    values[0] = np.nan  # before the first valid observation: no extrapolation
    grid = np.arange(0.0, 96.0, 2.5)
    got = fill_gaps(t, values[None], grid, max_gap_days=20.0)[0]
    ok = ~np.isnan(values)
    expected = np.interp(grid, t[ok], values[ok])
    short = (grid >= 5) & ~((grid > 45) & (grid < 80))
    np.testing.assert_allclose(got[short], expected[short])
    assert np.isnan(got[grid < 5]).all()
    assert np.isnan(got[(grid > 45) & (grid < 80)]).all()
    assert np.isnan(fill_gaps(t, np.full((2, len(t)), np.nan), grid, 20.0)).all()


def test_savgol_nan_equals_the_classical_filter_and_bridges_nan() -> None:
    rng = np.random.default_rng(1)
    y = np.sin(np.linspace(0, 6, 60)) + 0.05 * rng.standard_normal(60)
    got = savgol_nan(y[None], half_window=3, polyorder=2)[0]
    expected = savgol_filter(y, 7, 2)
    np.testing.assert_allclose(got[3:-3], expected[3:-3], rtol=1e-9, atol=1e-12)
    # A quadratic is reproduced exactly, also next to missing values and at the ends.
    x = np.arange(40.0)
    quad = 0.01 * (x - 17) ** 2 + 0.3
    holed = quad.copy()
    holed[[10, 11, 25]] = np.nan
    out = savgol_nan(holed[None], 3, 2)[0]
    keep = ~np.isnan(holed)
    np.testing.assert_allclose(out[keep], quad[keep], atol=1e-9)
    assert np.isnan(out[~keep]).all()
    # Fewer than polyorder + 1 valid values in a window: NaN, not an error.
    sparse = np.full(20, np.nan)
    sparse[10] = 1.0
    assert np.isnan(savgol_nan(sparse[None], 3, 2)).all()


def test_tabulated_and_solved_smoothers_agree() -> None:
    rng = np.random.default_rng(4)
    y = rng.random((50, 40))
    y[rng.random(y.shape) < 0.35] = np.nan
    for half, order in ((3, 2), (2, 1), (4, 3)):
        np.testing.assert_allclose(
            phenology_module._savgol_table_filter(y, half, order),
            phenology_module._savgol_solve(y, half, order),
            rtol=1e-8,
            atol=1e-10,
            equal_nan=True,
        )


def test_regular_grid_spans_the_observations() -> None:
    np.testing.assert_allclose(
        regular_grid(np.array([2.4, 9.0, 17.4]), 5.0), [2.4, 7.4, 12.4, 17.4]
    )


def test_params_are_validated() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        PhenologyParams(threshold=1.5)
    with pytest.raises(ConfigError, match="season_start"):
        PhenologyParams(season_start=(2, 30))
    with pytest.raises(ConfigError, match="dry_months"):
        PhenologyParams(dry_months=(13,))
    with pytest.raises(ConfigError, match="polyorder"):
        PhenologyParams(smooth_days=4.0, polyorder=2)
    assert PhenologyParams().window_points == 7


# --- metrics on known curves ------------------------------------------------------------


def _known_series(with_clouds: bool = True) -> tuple[xr.DataArray, dict[str, float]]:
    """Three pixels with a known season, observed every 5 days from 2023-07-03."""
    days = np.arange(2.0, 365.0, 5.0)
    truth = {"start": 180.0, "end": 290.0, "base": 0.2, "top": 0.8}
    clean = _curve(days, truth["start"], truth["end"], truth["base"], truth["top"])
    rng = np.random.default_rng(5)
    pix = np.stack([clean, clean + 0.01 * rng.standard_normal(len(days)), clean], axis=-1)
    if with_clouds:
        pix[1::4, 0] = np.nan  # every fourth date cloudy
        pix[rng.random(len(days)) < 0.2, 1] = np.nan  # a fifth of the dates, at random ...
        pix[(days > 200) & (days < 230), 1] = np.nan  # ... and a 30-day cloudy spell
    pix[:, 2] = np.nan  # never clear
    pix[::9, 2] = 0.5
    arr = xr.DataArray(
        pix.T[:, None, :].transpose(2, 1, 0).astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": _times(days)},
        name="ndvi",
    )
    return arr, truth


def test_metrics_of_a_known_double_logistic() -> None:
    series, truth = _known_series()
    out = phenology(series)
    assert list(out.data_vars) == list(METRICS)
    assert all(v.dtype == np.float32 for v in out.data_vars.values())
    assert out.attrs["season_start"] == "2023-07-01"
    for x in (0, 1):
        got = {k: float(out[k].values[0, x]) for k in METRICS}
        assert got["start"] == pytest.approx(truth["start"], abs=1.5)
        assert got["end"] == pytest.approx(truth["end"], abs=1.5)
        # The maximum of rise − fall (scales 7 and 8 days) lies at (7e + 8s + 56 ln(8/7)) / 15
        # = 231.8, where the slopes of the two logistics balance, not at (s + e) / 2.
        # On a noisy plateau (pixel 1: ±0.01 noise, flat within 0.01 for ~40 days) the date
        # of the maximum is ill-defined: only ask that it lies inside the plateau.
        assert got["peak"] == pytest.approx(231.8, abs=2.0 if x == 0 else 25.0)
        assert got["peak_value"] == pytest.approx(0.8, abs=0.02)
        assert got["amplitude"] == pytest.approx(0.6, abs=0.03)
        assert got["season_length"] == pytest.approx(110.0, abs=2.5)
        # Integral above the base between the half points, index · days.
        fine = np.linspace(truth["start"], truth["end"], 20001)
        area = np.trapezoid(_curve(fine, 180.0, 290.0, 0.2, 0.8) - 0.2, fine)
        # Pixel 1's cloudy spell (187–232) spans the top of the green-up: the straight line
        # bridging it cuts the corner of the curve and loses ~5 % of the area.
        assert got["integral"] == pytest.approx(area, rel=0.02 if x == 0 else 0.08)
        assert got["dry_min"] == pytest.approx(0.2, abs=0.02)
        # Day of year across the new year: day 180 of a season from 1 July is 28 December.
        assert got["start_doy"] == pytest.approx(got["start"] - 180.0 + 362.0, abs=1e-3)
        # Day 183 of that season is 31 December 2023; 2024 is a leap year.
        assert got["end_doy"] == pytest.approx(got["end"] - 183.0, abs=1e-3)
    # Too few clear observations: every metric NaN but the count.
    few = {k: float(out[k].values[0, 2]) for k in METRICS}
    assert few["n_obs"] == 9
    assert all(np.isnan(v) for k, v in few.items() if k != "n_obs")


def test_threshold_moves_start_and_end_symmetrically() -> None:
    series, _ = _known_series(with_clouds=False)
    early = phenology(series, PhenologyParams(threshold=0.2))
    late = phenology(series, PhenologyParams(threshold=0.8))
    half = phenology(series)
    for k in (0, 1):
        assert float(early.start[0, k]) < float(half.start[0, k]) < float(late.start[0, k])
        assert float(early.end[0, k]) > float(half.end[0, k]) > float(late.end[0, k])


def test_flat_curves_have_levels_but_no_season() -> None:
    days = np.arange(2.0, 365.0, 5.0)
    flat = np.full((len(days), 1, 1), 0.15, dtype=np.float32)
    flat += np.float32(0.005) * np.sin(days)[:, None, None].astype(np.float32)
    out = phenology(xr.DataArray(flat, dims=("time", "y", "x"), coords={"time": _times(days)}))
    assert np.isnan(out.start.values).all() and np.isnan(out.integral.values).all()
    assert float(out.peak_value[0, 0]) == pytest.approx(0.155, abs=0.01)
    assert float(out.dry_wet_ratio[0, 0]) == pytest.approx(1.0, abs=0.1)


def test_season_cut_by_a_long_gap_is_nan() -> None:
    series, _ = _known_series(with_clouds=False)
    days = (series.time - np.datetime64("2023-07-01")) / np.timedelta64(1, "D")
    holed = series.where(~((days > 150) & (days < 200)))
    out = phenology(holed, PhenologyParams(max_gap_days=30.0))
    assert np.isnan(out.start.values[0, :2]).all()  # the green-up fell into a 50-day gap
    assert np.isfinite(out.end.values[0, :2]).all()
    bridged = phenology(holed, PhenologyParams(max_gap_days=60.0))
    assert np.isfinite(bridged.start.values[0, :2]).all()


def test_smooth_series_is_on_the_regular_grid() -> None:
    series, _ = _known_series()
    out = smooth_series(series.chunk({"x": 1}))
    assert isinstance(out.data, da.Array)
    assert out.dims == ("y", "x", "time")
    assert out.sizes["time"] == 73
    assert out.time.values[0] == np.datetime64("2023-07-03")
    assert np.isfinite(out.values[0, 0]).mean() > 0.9


# --- the demo source --------------------------------------------------------------------

# A 1.5 km square of the default AOI near Grootfontein: 11 crop fields (14 169 px), woody
# shrubs (5 877 px) and grassland (2 454 px).
BOUNDS = (205300.0, 7826980.0, 206800.0, 7828480.0)
GRID = geobox_for(BOUNDS, 32734, 10.0)
SEASON = 2024
TOLERANCE_DAYS = synth.REVISIT_DAYS


@dataclass(frozen=True)
class Demo:
    ndvi: np.ndarray
    times: pd.DatetimeIndex
    cover: np.ndarray
    metrics: xr.Dataset


def _as_series(values: np.ndarray, times: pd.DatetimeIndex, chunk: int) -> xr.DataArray:
    data = da.from_array(values, chunks=(-1, chunk, chunk))
    return xr.DataArray(data, dims=("time", "y", "x"), coords={"time": times}, name="ndvi")


@pytest.fixture(scope="module")
def demo() -> Demo:
    """One season of demo NDVI (SCL cloud mask) and its phenology, computed once."""
    days = synth.acquisition_dates(date(2023, 7, 1), date(2024, 6, 30))
    times = [synth.acquisition_time(d, 21.0) for d in days]
    stack = render_stack(GRID, times, bands=("red", "nir", "scl"), chunk_px=75)
    masked = ndvi(stack).where(clear_mask(stack, invalid=(0, 1, 3, 8, 9, 10)))
    values = np.asarray(masked.values)
    index = pd.DatetimeIndex(masked.time.values)
    metrics = phenology(_as_series(values, index, 75)).compute()
    return Demo(values, index, cover_truth(GRID).values, metrics)


def test_demo_phenology_is_lazy_and_chunk_independent(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = demo.ndvi[:, :60, :60]
    lazy = phenology(_as_series(sub, demo.times, 16))
    assert all(isinstance(v.data, da.Array) for v in lazy.data_vars.values())
    assert lazy["start"].data.chunks == ((16, 16, 16, 12), (16, 16, 16, 12))
    expected = demo.metrics.isel(y=slice(0, 60), x=slice(0, 60))
    xr.testing.assert_identical(lazy.compute(), expected)
    # Pixels are processed in batches inside a chunk; the batch size changes nothing either.
    monkeypatch.setattr(phenology_module, "BATCH_PIXELS", 97)
    xr.testing.assert_identical(phenology(_as_series(sub, demo.times, 60)).compute(), expected)


def test_demo_crop_calendar_within_one_revisit(demo: Demo) -> None:
    fields, table = field_truth(to_lonlat(box(*BOUNDS), 32734), [SEASON])
    fields = fields.to_crs(32734)
    labels = rasterize(
        [(geom, k + 1) for k, geom in enumerate(fields.geometry)],
        out_shape=GRID.shape,
        transform=GRID.affine,
        fill=0,
    )
    truth = {row["field_id"]: row for row in table.to_dict("records")}
    errors: dict[str, list[float]] = {"start": [], "peak": [], "end": []}
    for k, field_id in enumerate(fields.field_id):
        pixels = (labels == k + 1) & (demo.cover == synth.CROP)
        if pixels.sum() < 25:  # a sliver of a field at the grid's edge
            continue
        for name, errs in errors.items():
            estimate = float(np.nanmedian(demo.metrics[name].values[pixels]))
            expected = (truth[field_id][name] - SEASON_START).days
            errs.append(estimate - expected)
    n_fields = len(errors["start"])
    assert n_fields >= 8
    for name, errs in errors.items():
        err = np.abs(np.asarray(errs))
        within = float(np.mean(err <= TOLERANCE_DAYS))
        print(
            f"{name}: {within:.0%} of {n_fields} fields within {TOLERANCE_DAYS} d, "
            f"max |error| {err.max():.1f} d, mean error {np.mean(errs):+.1f} d"
        )
        assert within >= 0.9, f"{name}: {errs}"


def test_demo_woody_shrubs_stay_greener_into_the_dry_season(demo: Demo) -> None:
    ratio = demo.metrics["dry_wet_ratio"].values
    shrub = float(np.nanmedian(ratio[demo.cover == synth.SHRUB]))
    grass = float(np.nanmedian(ratio[demo.cover == synth.GRASS]))
    print(f"dry/wet NDVI ratio: shrubs {shrub:.3f}, grass {grass:.3f}")
    assert shrub > grass
    # Crop fields are bare soil in the dry season: the lowest dry-season minimum.
    dry_min = demo.metrics["dry_min"].values
    assert np.nanmedian(dry_min[demo.cover == synth.CROP]) < np.nanmedian(
        dry_min[demo.cover == synth.GRASS]
    )
    # Shrubs and grass green up before the crops. (Which of shrubs and grass comes first
    # depends on the shrub species: this square's green up with the rains, like the grass.)
    start = demo.metrics["start"].values
    shrub_start, grass_start, crop_start = (
        float(np.nanmedian(start[demo.cover == c])) for c in (synth.SHRUB, synth.GRASS, synth.CROP)
    )
    assert max(shrub_start, grass_start) < crop_start
