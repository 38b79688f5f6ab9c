"""The index stage's fast paths give the values of the plain NumPy formulas, bit for bit.

Sorting networks, strip-wise index kernels, the SCL bit test, strip-wise DN conversion and
series written in place are each checked against the straightforward whole-array
computation they replace (written out here), with NaN, infinities and signed zeros in.
"""

from __future__ import annotations

import itertools
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from numpy.typing import NDArray

from agrimon.grid import Tile
from agrimon.indices import composites, spectral
from agrimon.indices.masks import clear_mask, scl_in
from agrimon.sources.bands import dn_to_reflectance
from agrimon.sources.local import LocalSource, _fetch, scene_parts
from agrimon.sources.settings import SourceSettings

Array = NDArray[Any]


def _bits(a: Array) -> Array:
    return np.ascontiguousarray(a).view(np.uint8)


# --- sorting networks and percentiles -----------------------------------------------------


@pytest.mark.parametrize("n", range(1, 15))
def test_the_network_sorts_every_sequence_of_zeros_and_ones(n: int) -> None:
    # Knuth's 0-1 principle: a comparator network that sorts every 0-1 input sorts all.
    rows = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int8).T
    ordered, count = composites._sorted_series(rows)
    np.testing.assert_array_equal(ordered, np.sort(rows, axis=0))
    assert (count == n).all()


def test_the_network_sorts_long_series_with_nan_last() -> None:
    rng = np.random.default_rng(7)
    for n in (16, 17, 31, 33, 73, composites.NETWORK_MAX):
        values = rng.normal(size=(n, 500)).astype(np.float32)
        values[rng.random(values.shape) < 0.3] = np.nan
        ordered, count = composites._sorted_series(values)
        expected = np.sort(values, axis=0)
        valid = ~np.isnan(expected)
        np.testing.assert_array_equal(ordered[valid], expected[valid])
        assert np.isposinf(ordered[~valid]).all()
        np.testing.assert_array_equal(count, valid.sum(axis=0))


def _percentile_by_sort(values: Array, q: Any) -> Array:
    """The plain algorithm: one np.sort per pixel, then the two order statistics."""
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    qs = np.asarray(q, dtype=np.float64)
    ordered = np.sort(values, axis=-1)
    n = np.count_nonzero(~np.isnan(values), axis=-1)[..., None]
    h = (n - 1) * (qs.ravel() / 100.0)
    lo = np.floor(np.maximum(h, 0.0)).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    t = h - lo
    a = np.take_along_axis(ordered, lo, axis=-1).astype(np.float64)
    b = np.take_along_axis(ordered, hi, axis=-1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = b - a
        out = np.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)
    out = np.where(n > 0, out, np.nan)
    return out.reshape(values.shape[:-1] + qs.shape).astype(dtype)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 12, 31, 73, composites.NETWORK_MAX + 1])
@pytest.mark.parametrize("q", [50.0, 0.0, 100.0, [5.0, 50.0, 90.0]])
def test_percentiles_equal_one_sort_per_pixel_bit_for_bit(length: int, q: Any) -> None:
    rng = np.random.default_rng(length)
    values = rng.uniform(-1, 1, size=(9, 7, length)).astype(np.float32)
    values[rng.random(values.shape) < 0.35] = np.nan
    values[0, 0] = np.nan  # a pixel without any value
    values[1, 0, :1] = -0.0
    values[1, 1, :1] = np.inf
    values[1, 2, :1] = -np.inf
    got = composites.nanpercentile_last(values, q)
    np.testing.assert_array_equal(_bits(got), _bits(_percentile_by_sort(values, q)))
    integers = rng.integers(-50, 50, size=(4, 3, length))
    np.testing.assert_array_equal(
        _bits(composites.nanpercentile_last(integers, q)), _bits(_percentile_by_sort(integers, q))
    )


def test_a_dask_median_gets_its_blocks_uncopied_and_equals_numpy() -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(-0.2, 0.9, size=(12, 64, 48)).astype(np.float32)
    values[rng.random(values.shape) < 0.4] = np.nan
    lazy = xr.DataArray(da.from_array(values, chunks=(12, 32, 16)), dims=("time", "y", "x"))
    got = composites.median(lazy)
    assert got.chunks == ((32, 32), (16, 16, 16))
    names = [str(key) for key in dict(got.data.dask)]
    assert not any("concatenate" in name for name in names)
    want = composites.nanmedian_last(np.moveaxis(values, 0, -1))
    np.testing.assert_array_equal(_bits(got.values), _bits(want))


# --- spectral kernels ---------------------------------------------------------------------


def _plain(band: Array) -> Array:
    return np.where((band >= spectral.VALID_MIN) & (band <= spectral.VALID_MAX), band, np.nan)


def _finite32(values: Array) -> Array:
    out = values.astype(np.float32)
    return np.where(np.isfinite(out), out, np.float32(np.nan))


def _reference(name: str, bands: dict[str, Array]) -> Array:
    """Whole-array NumPy formulas with the NaN rule spelled out, as the stage used to."""
    red, nir, blue = (_plain(bands[b]) for b in ("red", "nir", "blue"))
    with np.errstate(all="ignore"):
        if name == "ndvi":
            den = nir + red
            return _finite32((nir - red) / np.where(den != 0, den, np.nan))
        if name == "evi":
            den = nir + 6.0 * red - 7.5 * blue + 1.0
            return _finite32(2.5 * ((nir - red) / np.where(den != 0, den, np.nan)))
        disc = (2.0 * nir + 1.0) ** 2 - 8.0 * (nir - red)
        return _finite32((2.0 * nir + 1.0 - np.sqrt(np.where(disc >= 0, disc, np.nan))) / 2.0)


def _bands(shape: tuple[int, ...], dtype: Any) -> dict[str, Array]:
    rng = np.random.default_rng(11)
    out = {}
    for name in ("blue", "red", "nir"):
        values = rng.uniform(-0.4, 1.7, size=shape).astype(dtype)
        values[rng.random(shape) < 0.05] = np.nan
        values[rng.random(shape) < 0.02] = 0.0
        out[name] = values
    out["nir"][0, :3] = out["red"][0, :3]  # zero numerators
    out["nir"][0, 3:6] = -out["red"][0, 3:6]  # zero denominators
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["ndvi", "evi", "msavi2"])
def test_index_kernels_in_strips_equal_the_whole_array_formula(name: str, dtype: Any) -> None:
    shape = (3, 211, 157)  # several strips, the last one short
    assert np.prod(shape) > 1.5 * spectral.STRIP_VALUES
    bands = _bands(shape, dtype)
    stack = xr.Dataset({k: (("time", "y", "x"), v) for k, v in bands.items()})
    got = spectral.INDICES[name](stack)
    assert got.dtype == np.float32 and got.name == name
    np.testing.assert_array_equal(_bits(got.values), _bits(_reference(name, bands)))
    lazy = spectral.INDICES[name](stack.chunk({"y": 50, "x": 100}))
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(_bits(lazy.values), _bits(got.values))


def test_indices_masked_in_the_same_pass_equal_where_clear() -> None:
    bands = _bands((4, 60, 70), np.float32)
    rng = np.random.default_rng(5)
    scl = rng.integers(0, 12, size=(4, 60, 70)).astype(np.uint8)
    stack = xr.Dataset(
        {k: (("time", "y", "x"), v) for k, v in bands.items()} | {"scl": (("time", "y", "x"), scl)}
    ).chunk({"y": 32})
    clear = clear_mask(stack)
    got = spectral.compute_indices(stack, ["ndvi", "evi"], clear=clear).compute()
    want = spectral.compute_indices(stack, ["ndvi", "evi"]).where(clear).compute()
    for name in ("ndvi", "evi"):
        np.testing.assert_array_equal(_bits(got[name].values), _bits(want[name].values))
        assert np.isnan(got[name].values[~clear.values]).all()
        assert np.isfinite(got[name].values).any()


def test_the_scl_bit_test_equals_isin_for_every_class() -> None:
    classes = xr.DataArray(np.arange(256, dtype=np.uint8).reshape(16, 16), dims=("y", "x"))
    for codes in ([0, 1, 3, 8, 9, 10], [], [15], [11, 2, 2]):
        want = np.isin(classes.values, codes)
        np.testing.assert_array_equal(scl_in(classes, codes).values, want)
        np.testing.assert_array_equal(scl_in(classes, codes, inside=False).values, ~want)
    # Outside the 16-bit word (or not uint8): isin itself.
    np.testing.assert_array_equal(scl_in(classes, [200]).values, classes.values == 200)
    floats = classes.astype(np.float32)
    np.testing.assert_array_equal(scl_in(floats, [3]).values, classes.values == 3)


# --- reading ------------------------------------------------------------------------------


def _whole_conversion(dn: Array, scale: float, offset: float, nodata: float | None) -> Array:
    values = dn.astype(np.float64) * scale + offset
    if nodata is not None:
        values[dn == nodata] = np.nan
    return values.astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
def test_dn_conversion_in_strips_equals_the_whole_array(dtype: Any) -> None:
    rng = np.random.default_rng(2)
    for shape in ((300, 250), (7,), (2, 3, 40_000), (0, 4)):
        dn = (rng.random(shape) * 2**14).astype(dtype)
        for scale, offset, nodata in ((1e-4, 0.0, 0), (1e-4, -0.1, 0), (2.75e-5, -0.2, None)):
            want = _whole_conversion(dn, scale, offset, nodata)
            got = dn_to_reflectance(dn, scale=scale, offset=offset, nodata=nodata)
            np.testing.assert_array_equal(_bits(got), _bits(want))
            into = np.full(shape, 7.0, dtype=np.float32)
            assert (
                dn_to_reflectance(dn, scale=scale, offset=offset, nodata=nodata, out=into) is into
            )
            np.testing.assert_array_equal(_bits(into), _bits(want))


def test_series_written_in_place_equal_the_copying_path(tmp_path: Path) -> None:
    """A local stack (read straight into each chunk's series) equals one fetch per date."""
    tile = Tile(32734, 4, 191, 96)
    geobox = tile.geobox
    rng = np.random.default_rng(9)
    # Files on the tile's grid covering its rows 10.. and every column: blocks at the top
    # reach beyond them (NaN, SCL 0 there).
    rows = geobox.shape[0] - 10
    transform = geobox.affine * rasterio.Affine.translation(0, 10)
    for day in ("20240105", "20240110"):
        for band, dtype in (("B04", np.uint16), ("B08", np.uint16), ("SCL", np.uint8)):
            top = 12 if band == "SCL" else 10_000
            data = rng.integers(0, top, size=(1, rows, geobox.shape[1])).astype(dtype)
            with rasterio.open(
                tmp_path / f"S2_{day}_{band}.tif",
                "w",
                driver="GTiff",
                width=geobox.shape[1],
                height=rows,
                count=1,
                dtype=data.dtype,
                crs=f"EPSG:{tile.epsg}",
                transform=transform,
                nodata=0,
            ) as dst:
                dst.write(data)
    source = LocalSource(SourceSettings(local_path=tmp_path))
    scenes = source.find_scenes(tile, date(2024, 1, 1), date(2024, 1, 31))
    assert len(scenes) == 2
    bands = ("red", "nir", "scl")
    stack = source.load(tile, scenes, bands=bands, chunk_px=32).compute()
    parts = [scene_parts(s) for s in scenes]
    for t in range(len(scenes)):
        want = _fetch(t, geobox, None, scenes=parts, bands=bands)
        for band in bands:
            got = stack[band].values[t]
            assert got.dtype == want[band].dtype
            np.testing.assert_array_equal(_bits(got), _bits(want[band]))
    assert np.isnan(stack["red"].values[:, :10]).all()
    assert (stack["scl"].values[:, :10] == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(stack["red"].values[:, 10:]).mean() > 0.99
