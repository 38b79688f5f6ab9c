"""Composites over periods: reducers against NumPy, laziness, chunking, periods, greenest pixel."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agrimon.errors import ConfigError
from agrimon.indices.composites import (
    Period,
    Reducer,
    composite,
    greenest,
    greenest_composite,
    monthly_periods,
    nanmax_last,
    nanmean_last,
    nanmedian_last,
    nanmin_last,
    nanpercentile_last,
    rolling_periods,
    season_period,
    temporal_reduce,
)

VALUES = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=11),
    elements=st.one_of(st.floats(-1, 1, width=32), st.just(np.nan)),
)


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return fn(*args, **kwargs)


def _series(values: np.ndarray, times: pd.DatetimeIndex, chunks: int = 16) -> xr.DataArray:
    chunked = da.from_array(values, chunks=(1, chunks, chunks))
    return xr.DataArray(chunked, dims=("time", "y", "x"), coords={"time": times}, name="ndvi")


def _random_stack(seed: int = 3, shape: tuple[int, int, int] = (24, 37, 29)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.uniform(-0.2, 0.9, size=shape).astype(np.float32)
    values[rng.random(shape) < 0.4] = np.nan
    values[:, 0, :3] = np.nan  # some pixels never clear
    return values


# --- NumPy reducers -------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(VALUES, st.lists(st.floats(0, 100), min_size=1, max_size=4))
def test_percentile_equals_numpy_linear(values: np.ndarray, q: list[float]) -> None:
    expected = _quiet(np.nanpercentile, values, q, axis=-1, method="linear")
    got = nanpercentile_last(values, q)
    assert got.dtype == values.dtype
    assert got.shape == (*values.shape[:-1], len(q))
    np.testing.assert_allclose(
        got, np.moveaxis(expected, 0, -1), rtol=1e-6, atol=1e-7, equal_nan=True
    )


@settings(max_examples=60, deadline=None)
@given(VALUES)
def test_median_is_the_50th_percentile_and_numpy_median(values: np.ndarray) -> None:
    got = nanmedian_last(values)
    np.testing.assert_array_equal(got, nanpercentile_last(values, 50.0))
    expected = _quiet(np.nanmedian, values, axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(VALUES)
def test_mean_max_min_equal_numpy(values: np.ndarray) -> None:
    for ours, theirs in (
        (nanmean_last, np.nanmean),
        (nanmax_last, np.nanmax),
        (nanmin_last, np.nanmin),
    ):
        got = ours(values)
        assert got.dtype == values.dtype
        expected = _quiet(theirs, values, axis=-1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_all_nan_and_empty_series_give_nan() -> None:
    values = np.full((2, 3, 4), np.nan, dtype=np.float32)
    for fn in (nanmedian_last, nanmean_last, nanmax_last, nanmin_last):
        assert np.isnan(fn(values)).all()
    assert np.isnan(nanpercentile_last(values, [5, 95])).all()
    empty = np.zeros((2, 3, 0), dtype=np.float32)
    assert nanpercentile_last(empty, 50).shape == (2, 3)
    assert np.isnan(nanmax_last(empty)).all()
    with pytest.raises(ConfigError, match=r"0\.\.100"):
        nanpercentile_last(values, 101)


# --- lazy xarray reducers -------------------------------------------------------------


TIMES = pd.date_range("2024-01-03 09:06", periods=24, freq="5D")


@pytest.mark.parametrize(
    ("reducer", "reference"),
    [
        ("median", np.nanmedian),
        ("mean", np.nanmean),
        ("max", np.nanmax),
        ("min", np.nanmin),
    ],
)
def test_reducers_are_lazy_chunk_independent_and_match_numpy(
    reducer: Reducer, reference: Callable[..., Any]
) -> None:
    values = _random_stack()
    small = temporal_reduce(_series(values, TIMES, 8), reducer)
    large = temporal_reduce(_series(values, TIMES, 64), reducer)
    assert isinstance(small.data, da.Array)
    assert small.data.chunks[0] == (8, 8, 8, 8, 5)  # spatial chunks kept
    np.testing.assert_array_equal(small.values, large.values)
    expected = _quiet(reference, values, axis=0)
    np.testing.assert_allclose(small.values, expected, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert np.isnan(small.values[0, :3]).all()


def test_percentile_and_count_composites_per_month() -> None:
    values = _random_stack()
    arr = _series(values, TIMES)
    periods = monthly_periods(date(2024, 1, 1), date(2024, 4, 30))
    pct = composite(arr, periods, "percentile", q=[10, 90])
    count = composite(arr, periods, "count")
    assert isinstance(pct.data, da.Array) and isinstance(count.data, da.Array)
    assert pct.dims == ("period", "y", "x", "quantile")
    assert pct.name == "ndvi_p10_90"
    assert list(pct.period.values) == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert pct.period_start.values[1] == np.datetime64("2024-02-01")
    assert count.dtype == np.uint16
    days = TIMES.normalize()
    for k, period in enumerate(periods):
        sel = (days >= pd.Timestamp(period.start)) & (days <= pd.Timestamp(period.end))
        expected = _quiet(np.nanpercentile, values[sel], [10, 90], axis=0)
        np.testing.assert_allclose(
            pct.values[k], np.moveaxis(expected, 0, -1), rtol=1e-6, atol=1e-7, equal_nan=True
        )
        np.testing.assert_array_equal(count.values[k], np.sum(~np.isnan(values[sel]), axis=0))
    single = composite(arr, periods, "percentile", q=75)
    assert single.dims == ("period", "y", "x")


def test_count_of_a_boolean_clear_mask() -> None:
    clear = xr.DataArray(
        np.array([[[True, False]], [[True, True]], [[False, False]]]),
        dims=("time", "y", "x"),
        coords={"time": pd.date_range("2024-01-01", periods=3)},
    )
    out = composite(clear, [season_period(date(2024, 1, 1), date(2024, 1, 3))], "count")
    assert out.values.tolist() == [[[2, 1]]]


def test_month_boundaries_are_inclusive_and_empty_periods_are_nan() -> None:
    times = pd.DatetimeIndex(
        [
            datetime(2024, 1, 1, 0, 0),  # first instant of January
            datetime(2024, 1, 31, 23, 59),  # last minute of January
            datetime(2024, 2, 1, 0, 0),  # first instant of February
            datetime(2024, 4, 30, 12, 0),
        ]
    )
    values = np.array([1.0, 3.0, 10.0, 7.0], dtype=np.float32)[:, None, None] * np.ones(
        (1, 2, 2), dtype=np.float32
    )
    arr = _series(values, times, 1)
    periods = monthly_periods(date(2024, 1, 1), date(2024, 4, 30))
    med = composite(arr, periods, "median")
    count = composite(arr, periods, "count")
    green = greenest_composite(xr.Dataset({"red": arr}), arr, periods)
    assert isinstance(med.data, da.Array) and isinstance(green["red"].data, da.Array)
    assert med.values[:, 0, 0].tolist()[:2] == [2.0, 10.0]
    assert np.isnan(med.values[2]).all()  # March: no acquisition, no error
    assert med.values[3, 0, 0] == 7.0
    assert count.values[:, 0, 0].tolist() == [2, 1, 0, 1]
    assert np.isnan(green["red"].values[2]).all()
    assert np.isnat(green["greenest_time"].values[2]).all()
    assert green["red"].values[0, 0, 0] == 3.0


def test_greenest_pixel_takes_every_band_from_the_max_ndvi_date() -> None:
    times = pd.date_range("2024-01-05", periods=4, freq="5D")
    ndvi = np.array(
        [
            [[0.2, np.nan, 0.5]],
            [[0.7, np.nan, 0.5]],  # pixel 3: tie, earliest date wins
            [[np.nan, np.nan, 0.1]],  # NaN (cloud) is never picked even if bands are bright
            [[0.6, np.nan, 0.4]],
        ],
        dtype=np.float32,
    )
    red = np.arange(12, dtype=np.float32).reshape(4, 1, 3) / 100
    nir = red + 0.5
    nir[2] = 9.0  # the cloudy date has extreme values
    dims = ("time", "y", "x")
    stack = xr.Dataset(
        {
            "red": (dims, red),
            "nir": (dims, nir),
            "scl": (dims, np.full(red.shape, 4, dtype=np.uint8)),
        },
        coords={"time": times},
    )
    out = greenest(stack, xr.DataArray(ndvi, dims=dims, coords={"time": times}))
    assert set(out.data_vars) == {"red", "nir", "ndvi", "greenest_time"}  # scl is not float
    np.testing.assert_allclose(out["red"].values[0], [red[1, 0, 0], np.nan, red[0, 0, 2]])
    np.testing.assert_allclose(out["nir"].values[0], [nir[1, 0, 0], np.nan, nir[0, 0, 2]])
    np.testing.assert_allclose(out["ndvi"].values[0], [0.7, np.nan, 0.5])
    assert out["greenest_time"].values[0, 0] == times[1]
    assert np.isnat(out["greenest_time"].values[0, 1])
    with pytest.raises(ConfigError, match="no band"):
        greenest(stack, stack["red"], bands=("swir16",))


def test_greenest_composite_is_lazy_and_chunk_independent() -> None:
    values = _random_stack(seed=11)
    arr = _series(values, TIMES, 8)
    stack = xr.Dataset({"red": arr * 0.5, "nir": arr + 1.0})
    periods = rolling_periods(date(2024, 1, 1), date(2024, 4, 30), 30, 15)
    out = greenest_composite(stack, arr, periods)
    assert all(isinstance(v.data, da.Array) for v in out.data_vars.values())
    again = greenest_composite(
        stack.chunk({"y": 37, "x": 29}), arr.chunk({"y": 37, "x": 29}), periods
    )
    xr.testing.assert_identical(out.compute(), again.compute())
    expected = composite(arr, periods, "max")
    np.testing.assert_array_equal(out["ndvi"].values, expected.values)
    np.testing.assert_allclose(out["red"].values, 0.5 * expected.values, equal_nan=True)


# --- periods ------------------------------------------------------------------------


def test_period_builders() -> None:
    months = monthly_periods(date(2023, 11, 15), date(2024, 2, 10))
    assert [p.name for p in months] == ["2023-11", "2023-12", "2024-01", "2024-02"]
    assert months[0].start == date(2023, 11, 15) and months[0].end == date(2023, 11, 30)
    assert months[3] == Period("2024-02", date(2024, 2, 1), date(2024, 2, 10))
    assert monthly_periods(date(2024, 2, 1), date(2024, 2, 29))[0].days == 29  # leap year

    windows = rolling_periods(date(2024, 1, 1), date(2024, 3, 1), 30, 15)
    assert [(p.start, p.end) for p in windows] == [
        (date(2024, 1, 1), date(2024, 1, 30)),
        (date(2024, 1, 16), date(2024, 2, 14)),
        (date(2024, 1, 31), date(2024, 2, 29)),
    ]
    assert all(p.days == 30 for p in windows)
    assert windows[0].name == "2024-01-01/2024-01-30"

    season = season_period(date(2023, 7, 1), date(2024, 6, 30))
    assert season.name == "2023-07-01/2024-06-30" and season.days == 366
    assert season_period(date(2023, 7, 1), date(2024, 6, 30), "2024").name == "2024"


def test_period_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="before"):
        season_period(date(2024, 2, 1), date(2024, 1, 1))
    with pytest.raises(ConfigError, match="at least 1"):
        rolling_periods(date(2024, 1, 1), date(2024, 3, 1), 0, 15)
    with pytest.raises(ConfigError, match="less than one"):
        rolling_periods(date(2024, 1, 1), date(2024, 1, 10), 30, 15)
    arr = _series(_random_stack(), TIMES)
    with pytest.raises(ConfigError, match="unique"):
        composite(arr, [season_period(date(2024, 1, 1), date(2024, 1, 2), "a")] * 2)
    with pytest.raises(ConfigError, match="needs q"):
        temporal_reduce(arr, "percentile")
    with pytest.raises(ConfigError, match="unknown"):
        temporal_reduce(arr, "mode")  # type: ignore[arg-type]
