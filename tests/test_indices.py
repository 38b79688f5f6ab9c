"""Masks, NDVI and composites against hand computations."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agrimon.errors import ConfigError
from agrimon.indices.composites import median, nanmedian_last
from agrimon.indices.masks import clear_count, clear_mask
from agrimon.indices.spectral import ndvi, normalized_difference


def _stack(red: np.ndarray, nir: np.ndarray, scl: np.ndarray) -> xr.Dataset:
    dims = ("time", "y", "x")
    return xr.Dataset({"red": (dims, red), "nir": (dims, nir), "scl": (dims, scl)})


def test_ndvi_is_nan_not_inf_where_undefined() -> None:
    red = np.array([[[0.1, 0.0, np.nan, 0.2]]], dtype=np.float32)
    nir = np.array([[[0.3, 0.0, 0.5, 0.2]]], dtype=np.float32)
    out = ndvi(_stack(red, nir, np.zeros_like(red, dtype=np.uint8))).values
    assert out[0, 0, 0] == pytest.approx(0.5)
    assert np.isnan(out[0, 0, 1]) and np.isnan(out[0, 0, 2])
    assert out[0, 0, 3] == 0.0
    assert not np.isinf(out).any()
    assert out.dtype == np.float32


def test_normalized_difference_keeps_dask_lazy() -> None:
    a = xr.DataArray(da.from_array(np.array([0.4, 0.0]), chunks=1))
    b = xr.DataArray(da.from_array(np.array([0.2, 0.0]), chunks=1))
    out = normalized_difference(a, b)
    assert isinstance(out.data, da.Array)
    np.testing.assert_allclose(out.values, [1 / 3, np.nan], rtol=1e-6)


def test_clear_mask_drops_cloud_shadow_cirrus_and_nodata() -> None:
    scl = np.array([[[0, 1, 3, 4, 5, 6, 8, 9, 10, 11]]], dtype=np.uint8)
    red = np.full(scl.shape, 0.1, dtype=np.float32)
    red[0, 0, 4] = np.nan  # a nodata pixel with a clear SCL class
    stack = _stack(red, red, scl)
    clear = clear_mask(stack).values[0, 0]
    assert clear.tolist() == [False, False, False, True, False, True, False, False, False, True]
    with_snow = clear_mask(stack, invalid=(0, 1, 3, 8, 9, 10, 11)).values[0, 0]
    assert not with_snow[-1]
    with pytest.raises(ConfigError, match="Sen2Cor"):
        clear_mask(stack, invalid=(12,))


def test_clear_count_counts_clear_dates() -> None:
    scl = np.array([[[4, 9]], [[4, 4]], [[3, 4]]], dtype=np.uint8)
    red = np.full(scl.shape, 0.1, dtype=np.float32)
    count = clear_count(clear_mask(_stack(red, red, scl)))
    assert count.dtype == np.uint16
    assert count.values.tolist() == [[2, 2]]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=13),
        elements=st.one_of(st.floats(-1, 1, width=32), st.just(np.nan)),
    )
)
def test_nanmedian_equals_numpy(values: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        expected = np.nanmedian(values, axis=-1)
    got = nanmedian_last(values)
    assert got.dtype == values.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_median_composite_is_lazy_and_chunk_independent() -> None:
    rng = np.random.default_rng(7)
    values = rng.random((9, 40, 30)).astype(np.float32)
    values[rng.random(values.shape) < 0.4] = np.nan
    arr = xr.DataArray(
        da.from_array(values, chunks=(1, 16, 16)), dims=("time", "y", "x"), name="ndvi"
    )
    out = median(arr)
    assert isinstance(out.data, da.Array)
    assert out.name == "ndvi_median"
    assert out.data.chunks[0] == (16, 16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(
            out.values, np.nanmedian(values, axis=0), equal_nan=True, rtol=1e-6
        )
