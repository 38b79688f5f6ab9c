"""The spectral index library and the clear-sky masks, by hand and on the real scenes."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import date
from typing import Any

import dask.array as da
import numpy as np
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from odc.geo.geobox import GeoBox

from agrimon.errors import ConfigError
from agrimon.grid import plan_tiles
from agrimon.indices.masks import (
    CLOUD_HIGH,
    CLOUD_SHADOW,
    DEFAULT_INVALID_SCL,
    NO_DATA,
    SATURATED,
    SNOW,
    VEGETATION,
    clear_count,
    clear_mask,
    cloud_test,
    dilate,
    hot,
    structuring_element,
)
from agrimon.indices.spectral import (
    INDEX_BANDS,
    INDICES,
    VALID_MAX,
    VALID_MIN,
    compute_indices,
    evi,
    ndmi,
    ndvi,
    parse_indices,
    required_bands,
)
from agrimon.sources.base import BANDS
from agrimon.sources.local import LocalSource
from agrimon.sources.settings import SourceSettings

from .conftest import (
    SLOVENIA,
    SLOVENIA_DATES,
    assert_ndvi_matches_reference,
    pick_nearest,
    real_path,
    reference_ndvi,
    slovenia_aoi,
)

Array = np.ndarray[Any, Any]
DIMS = ("time", "y", "x")
REQUIRED = {
    "ndvi",
    "evi",
    "evi2",
    "savi",
    "msavi2",
    "ndwi",
    "mndwi",
    "ndmi",
    "nbr",
    "ndre",
    "gndvi",
    "bsi",
}


def _stack(**bands: Array) -> xr.Dataset:
    return xr.Dataset({name: (DIMS, np.asarray(v)) for name, v in bands.items()})


def _flat(value: float, shape: tuple[int, ...] = (1, 1, 1)) -> Array:
    return np.full(shape, value, dtype=np.float32)


# --- real scenes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slovenia_stacks() -> list[xr.Dataset]:
    """Every band of the five real L1C scenes on the 128 px tiles of their footprint."""
    real_path("slovenia-s2", "scenes")
    source = LocalSource(SourceSettings(local_path=SLOVENIA / "scenes"))
    stacks = []
    for tile in plan_tiles(slovenia_aoi(), tile_px=128):
        scenes = source.find_scenes(tile, date(2015, 7, 1), date(2015, 9, 30))
        assert [s.time.date().isoformat() for s in scenes] == list(SLOVENIA_DATES)
        stacks.append(source.load(tile, scenes, chunk_px=64).compute())
    return stacks


def _reference(name: str, geobox: GeoBox) -> Array:
    """The first five bands (the scene dates) of a reference raster, nearest neighbour."""
    with rasterio.open(real_path("slovenia-s2", name)) as src:
        return np.stack(
            [
                pick_nearest(src.read(t + 1), src.transform, src.crs, geobox, src_nodata=None)
                for t in range(len(SLOVENIA_DATES))
            ]
        )


def _f64(stack: xr.Dataset, band: str) -> Array:
    return np.asarray(stack[band].values, dtype=np.float64)


def test_ndvi_of_real_scenes_equals_reference_series(slovenia_stacks: list[xr.Dataset]) -> None:
    for stack in slovenia_stacks:
        assert_ndvi_matches_reference(stack)
        got = ndvi(stack).values
        for t in range(len(SLOVENIA_DATES)):
            ref = reference_ndvi(stack.odc.geobox, t)
            np.testing.assert_allclose(got[t], ref, rtol=0, atol=1e-6, equal_nan=True)


def test_evi_and_ndmi_of_real_scenes_equal_hand_computation(
    slovenia_stacks: list[xr.Dataset],
) -> None:
    g, c1, c2, big_l = 2.5, 6.0, 7.5, 1.0  # Huete et al. (2002)
    for stack in slovenia_stacks:
        blue, red, nir, swir16 = (_f64(stack, b) for b in ("blue", "red", "nir", "swir16"))
        want_evi = g * (nir - red) / (nir + c1 * red - c2 * blue + big_l)
        want_ndmi = (nir - swir16) / (nir + swir16)
        assert np.isfinite(want_evi).mean() > 0.5
        np.testing.assert_allclose(evi(stack).values, want_evi, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ndmi(stack).values, want_ndmi, rtol=1e-5, atol=1e-6)


#: Published formulas in plain numpy, independent of the library.
HAND: dict[str, Callable[[dict[str, Array]], Array]] = {
    "ndvi": lambda b: (b["nir"] - b["red"]) / (b["nir"] + b["red"]),
    "evi": lambda b: 2.5 * (b["nir"] - b["red"]) / (b["nir"] + 6 * b["red"] - 7.5 * b["blue"] + 1),
    "evi2": lambda b: 2.5 * (b["nir"] - b["red"]) / (b["nir"] + 2.4 * b["red"] + 1),
    "savi": lambda b: 1.5 * (b["nir"] - b["red"]) / (b["nir"] + b["red"] + 0.5),
    "msavi2": lambda b: (
        (2 * b["nir"] + 1 - np.sqrt((2 * b["nir"] + 1) ** 2 - 8 * (b["nir"] - b["red"]))) / 2
    ),
    "ndwi": lambda b: (b["green"] - b["nir"]) / (b["green"] + b["nir"]),
    "mndwi": lambda b: (b["green"] - b["swir16"]) / (b["green"] + b["swir16"]),
    "ndsi": lambda b: (b["green"] - b["swir16"]) / (b["green"] + b["swir16"]),
    "ndmi": lambda b: (b["nir"] - b["swir16"]) / (b["nir"] + b["swir16"]),
    "nbr": lambda b: (b["nir"] - b["swir22"]) / (b["nir"] + b["swir22"]),
    "ndre": lambda b: (b["nir"] - b["rededge1"]) / (b["nir"] + b["rededge1"]),
    "gndvi": lambda b: (b["nir"] - b["green"]) / (b["nir"] + b["green"]),
    "bsi": lambda b: (
        (b["swir16"] + b["red"] - b["nir"] - b["blue"])
        / (b["swir16"] + b["red"] + b["nir"] + b["blue"])
    ),
}


def test_every_index_equals_its_published_formula_on_real_scenes(
    slovenia_stacks: list[xr.Dataset],
) -> None:
    assert set(HAND) == set(INDICES)
    for stack in slovenia_stacks:
        bands = {b: _f64(stack, b) for b in BANDS}
        out = compute_indices(stack, list(INDICES))
        for name, formula in HAND.items():
            assert out[name].dtype == np.float32, name
            np.testing.assert_allclose(out[name].values, formula(bands), rtol=1e-5, atol=1e-6)


def _agreement(stacks: list[xr.Dataset], reference: str) -> tuple[Array, Array, Array]:
    """Per-date agreement with a reference raster, fraction flagged, and pixels compared."""
    agree, flagged, total = np.zeros(5), np.zeros(5), np.zeros(5)
    for stack in stacks:
        clear = clear_mask(stack).values  # no SCL in L1C: the reflectance test
        ref = _reference(reference, stack.odc.geobox)
        ref_clear = ref == 1 if reference.startswith("valid") else ref < 0.4
        inside = np.isfinite(ref) & stack["blue"].notnull().values
        for t in range(len(SLOVENIA_DATES)):
            m = inside[t]
            agree[t] += (clear[t][m] == ref_clear[t][m]).sum()
            flagged[t] += (~clear[t][m]).sum()
            total[t] += m.sum()
    return agree / total, flagged / total, total


def test_reflectance_cloud_test_agrees_with_real_validity_masks(
    slovenia_stacks: list[xr.Dataset],
) -> None:
    agree, flagged, total = _agreement(slovenia_stacks, "valid_timeseries.tif")
    assert (total > 5000).all()
    by_date = dict(zip(SLOVENIA_DATES, flagged, strict=True))
    # Measured: 0.04 %, 85.8 %, 99.9 %, 0 %, 0 % flagged; 97.1 % agreement overall.
    assert by_date["2015-08-20"] > 0.98  # cloudy
    assert by_date["2015-07-31"] > 0.80  # haze
    for day in ("2015-07-11", "2015-08-30", "2015-09-09"):
        assert by_date[day] < 0.01, day
    assert (agree > 0.80).all()
    assert agree.mean() >= 0.95
    # The same against s2cloudless (probability >= 0.4 is cloud): measured 97.3 %.
    agree_prob, _, _ = _agreement(slovenia_stacks, "cloud_probability_timeseries.tif")
    assert agree_prob.mean() >= 0.95


# --- adversarial inputs -------------------------------------------------------------------

_ELEMENTS = st.one_of(
    st.floats(-0.5, 2.0, width=32),
    st.sampled_from([0.0, -0.2, 1.5, np.nan, np.inf, -np.inf, -1.0, 5.0, 1e30, -1e30]),
)


@st.composite
def _adversarial_stacks(draw: st.DrawFn) -> xr.Dataset:
    shape = draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=4))
    if draw(st.booleans()):  # every band equal: every normalized difference is 0 or NaN
        same = draw(hnp.arrays(np.float32, shape, elements=_ELEMENTS))
        return _stack(**{b: same for b in BANDS})
    return _stack(**{b: draw(hnp.arrays(np.float32, shape, elements=_ELEMENTS)) for b in BANDS})


@settings(max_examples=150, deadline=None)
@given(_adversarial_stacks())
def test_every_index_is_nan_never_inf_on_adversarial_inputs(stack: xr.Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-sqrt warnings either
        out = compute_indices(stack, list(INDICES))
    for name in INDICES:
        values = out[name].values
        assert out[name].dtype == np.float32 and out[name].name == name
        assert not np.isinf(values).any(), name
        bad = np.zeros(values.shape, dtype=bool)
        for band in INDEX_BANDS[name]:
            b = stack[band].values
            bad |= ~((b >= VALID_MIN) & (b <= VALID_MAX))
        assert np.isnan(values[bad]).all(), name


def test_zero_denominators_and_equal_bands_give_nan_or_zero() -> None:
    zeros = {b: _flat(0.0) for b in BANDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_indices(_stack(**zeros), list(INDICES))
        # EVI: nir + 6 red - 7.5 blue + 1 = 0.125 + 0.75 - 1.875 + 1 = 0 exactly.
        evi_zero = evi(_stack(blue=_flat(0.25), red=_flat(0.125), nir=_flat(0.125)))
        # MSAVI2: (2 nir - 1)^2 + 8 red < 0 under the root.
        msavi_neg = INDICES["msavi2"](_stack(red=_flat(-0.1), nir=_flat(0.5)))
        equal = compute_indices(_stack(**{b: _flat(0.3) for b in BANDS}), list(INDICES))
    for name in ("ndvi", "ndwi", "mndwi", "ndmi", "nbr", "ndre", "gndvi", "bsi"):
        assert np.isnan(out[name].values).all(), name
        assert equal[name].values.item() == 0.0, name
    for name in ("evi", "evi2", "savi", "msavi2"):
        assert out[name].values.item() == 0.0, name  # zero reflectance: a defined 0
    assert np.isnan(evi_zero.values).all()
    assert np.isnan(msavi_neg.values).all()
    outside = compute_indices(_stack(**{b: _flat(2.0) for b in BANDS}), list(INDICES))
    for name in INDICES:
        assert np.isnan(outside[name].values).all(), name


# --- laziness -----------------------------------------------------------------------------


def _boom(block: Array) -> Array:
    raise AssertionError("computed: the stage must stay lazy")


def _exploding(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> Any:
    return da.zeros(shape, chunks=chunks, dtype=np.float32).map_blocks(_boom, dtype=np.float32)


def _lazy_stack(*, scl: bool) -> xr.Dataset:
    shape, chunks = (3, 20, 20), (1, 8, 8)
    data: dict[str, Any] = {b: (DIMS, _exploding(shape, chunks)) for b in BANDS}
    if scl:
        data["scl"] = (DIMS, _exploding(shape, chunks).astype(np.uint8))
    return xr.Dataset(data)


def test_indices_and_masks_stay_lazy() -> None:
    stack = _lazy_stack(scl=True)
    out = compute_indices(stack, list(INDICES))
    for name in INDICES:
        assert isinstance(out[name].data, da.Array), name
        assert out[name].dtype == np.float32
    for method in ("auto", "reflectance", "nodata"):
        clear = clear_mask(stack, method=method, buffer_px=2, footprint="disk")
        assert isinstance(clear.data, da.Array), method
        assert isinstance(clear_count(clear).data, da.Array)
    no_scl = _lazy_stack(scl=False).assign(valid=(DIMS, _exploding((3, 20, 20), (1, 8, 8))))
    assert isinstance(clear_mask(no_scl, buffer_px=1).data, da.Array)


def test_dask_results_equal_numpy_results() -> None:
    rng = np.random.default_rng(3)
    bands = {b: rng.uniform(-0.3, 1.0, (2, 9, 7)).astype(np.float32) for b in BANDS}
    eager = compute_indices(_stack(**bands), list(INDICES))
    lazy = compute_indices(_stack(**bands).chunk({"time": 1, "y": 4, "x": 3}), list(INDICES))
    for name in INDICES:
        np.testing.assert_array_equal(lazy[name].values, eager[name].values)


# --- registry, band selection and parsing -------------------------------------------------


def test_registry_has_the_documented_indices_with_references() -> None:
    assert set(INDICES) >= REQUIRED
    for name, func in INDICES.items():
        assert func.__name__ == name
        assert func.__doc__ and "Reference" in func.__doc__, name


def test_required_bands() -> None:
    assert required_bands(["ndvi"]) == ("red", "nir")
    assert required_bands(["ndmi", "EVI", "ndvi"]) == ("blue", "red", "nir", "swir16")
    assert required_bands(["ndre"]) == ("rededge1", "nir")
    assert required_bands([]) == ()
    everything = required_bands(list(INDICES))
    assert list(everything) == [b for b in BANDS if b in everything]
    with pytest.raises(ConfigError, match="unknown spectral index 'ndxx'"):
        required_bands(["ndvi", "ndxx"])


def test_each_index_needs_exactly_its_required_bands() -> None:
    full = _stack(**{b: _flat(0.2 + 0.05 * i) for i, b in enumerate(BANDS)})
    for name, func in INDICES.items():
        only = full[list(required_bands([name]))]
        assert np.isfinite(func(only).values).all(), name
        for band in required_bands([name]):
            with pytest.raises(KeyError):
                func(only.drop_vars(band))


def test_compute_indices_names_and_errors() -> None:
    stack = _stack(**{b: _flat(0.2 + 0.05 * i, (2, 3, 4)) for i, b in enumerate(BANDS)})
    out = compute_indices(stack, ["NDVI", "evi", "ndvi"])
    assert list(out.data_vars) == ["ndvi", "evi"]
    assert out["ndvi"].dims == DIMS
    with pytest.raises(ConfigError, match="need bands swir16"):
        compute_indices(stack.drop_vars("swir16"), ["ndmi"])
    with pytest.raises(ConfigError, match="unknown spectral index"):
        compute_indices(stack, ["ndvi", "nope"])


def test_parse_indices() -> None:
    assert parse_indices(" NDVI, evi,ndvi ,Ndmi,") == ("ndvi", "evi", "ndmi")
    assert parse_indices("bsi") == ("bsi",)
    for text in ("ndvi,foo", "", " , "):
        with pytest.raises(ConfigError) as info:
            parse_indices(text)
        message = str(info.value)
        assert "\n" not in message
        assert "ndvi, evi" in message  # lists the valid names
    with pytest.raises(ConfigError, match="'foo'"):
        parse_indices("ndvi,foo")


# --- masks --------------------------------------------------------------------------------


def test_scl_classes_with_and_without_snow() -> None:
    scl = np.arange(12, dtype=np.uint8).reshape(1, 1, 12)
    red = np.full(scl.shape, 0.1, dtype=np.float32)
    stack = _stack(red=red, nir=red, scl=scl)
    expect = [c not in DEFAULT_INVALID_SCL for c in range(12)]
    assert clear_mask(stack).values[0, 0].tolist() == expect
    assert expect[SNOW]  # snow kept by default
    no_snow = clear_mask(stack, drop_snow=True).values[0, 0].tolist()
    assert no_snow == [*expect[:SNOW], False]
    assert clear_mask(stack, invalid=(*DEFAULT_INVALID_SCL, SNOW)).values[0, 0].tolist() == no_snow
    only_shadow = clear_mask(stack, invalid=(CLOUD_SHADOW,)).values[0, 0]
    assert only_shadow.sum() == 11 and not only_shadow[CLOUD_SHADOW]


def test_structuring_elements() -> None:
    assert structuring_element(0).tolist() == [[True]]
    assert structuring_element(1, "disk").astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert structuring_element(2, "disk").astype(int).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert structuring_element(2, "square").all()
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="mask buffer"):
            structuring_element(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="footprint 'round'"):
        structuring_element(1, "round")  # type: ignore[arg-type]


def _seeds() -> Array:
    """Two dates of 6 x 7: a pixel in the middle and one in a corner; the second date clear."""
    seeds = np.zeros((2, 6, 7), dtype=bool)
    seeds[0, 2, 3] = True
    seeds[0, 5, 0] = True
    return seeds


SQUARE_1 = [
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 1, 1, 1, 0, 0],
    [0, 0, 1, 1, 1, 0, 0],
    [0, 0, 1, 1, 1, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
]
DISK_2 = [
    [0, 0, 0, 1, 0, 0, 0],
    [0, 0, 1, 1, 1, 0, 0],
    [0, 1, 1, 1, 1, 1, 0],
    [1, 0, 1, 1, 1, 0, 0],
    [1, 1, 0, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0],
]


@pytest.mark.parametrize(
    ("buffer_px", "footprint", "expected"), [(1, "square", SQUARE_1), (2, "disk", DISK_2)]
)
@pytest.mark.parametrize("chunks", [None, (1, 6, 7), (1, 2, 3), (2, 1, 1)])
def test_dilation_is_exact_per_date_and_chunk_independent(
    buffer_px: int, footprint: str, expected: list[list[int]], chunks: tuple[int, ...] | None
) -> None:
    mask = xr.DataArray(_seeds(), dims=DIMS, name="cloud")
    if chunks is not None:
        mask = mask.chunk(dict(zip(DIMS, chunks, strict=True)))
    grown = dilate(mask, buffer_px, footprint=footprint)  # type: ignore[arg-type]
    assert isinstance(grown.data, da.Array) == (chunks is not None)
    assert grown.name == "cloud" and grown.dims == DIMS
    values = grown.values
    assert values[0].astype(int).tolist() == expected
    assert not values[1].any()  # no spreading between dates
    assert dilate(mask, 0) is mask


def test_dilation_follows_y_and_x_whatever_the_dim_order() -> None:
    mask = xr.DataArray(_seeds(), dims=DIMS).transpose("y", "x", "time").chunk({"x": 2})
    grown = dilate(mask, 1).transpose(*DIMS).values
    assert grown[0].astype(int).tolist() == SQUARE_1


def test_scl_buffer_grows_clouds_and_shadows_not_nodata_or_snow() -> None:
    scl = np.full((1, 5, 9), VEGETATION, dtype=np.uint8)
    scl[0, 2, 1] = CLOUD_HIGH
    scl[0, 2, 4] = NO_DATA
    scl[0, 2, 7] = SNOW
    scl[0, 0, 7] = SATURATED
    red = np.full(scl.shape, 0.1, dtype=np.float32)
    red[0, 4, 4] = np.nan  # nodata reflectance: dropped, never grown
    stack = _stack(red=red, nir=red, scl=scl)
    expected = np.ones(scl.shape[1:], dtype=bool)
    expected[1:4, 0:3] = False  # the cloud and its 1-pixel square buffer
    expected[2, 4] = expected[4, 4] = expected[2, 7] = expected[0, 7] = False
    for chunks in (None, {"y": 2, "x": 2}):
        s = stack if chunks is None else stack.chunk(chunks)
        got = clear_mask(s, drop_snow=True, buffer_px=1).values[0]
        np.testing.assert_array_equal(got, expected)
    kept = clear_mask(stack, buffer_px=1).values[0]
    assert kept[2, 7]  # snow kept by default


def test_mask_band_fallback() -> None:
    red = np.full((2, 1, 5), 0.1, dtype=np.float32)
    red[1, 0, 4] = np.nan
    valid = np.array([[[1, 0, 1, 1, 1]], [[1, 1, np.nan, 2, 1]]], dtype=np.float32)
    stack = _stack(red=red, nir=red, valid=valid)
    got = clear_mask(stack).values
    assert got.tolist() == [
        [[True, False, True, True, True]],
        [[True, True, False, True, False]],  # NaN mask and nodata reflectance: not clear
    ]
    grown = clear_mask(stack, buffer_px=1).values
    assert grown[0].tolist() == [[False, False, False, True, True]]
    assert grown[1].tolist() == got[1].tolist()  # nodata reflectance is not grown
    for name in ("clear", "mask"):
        renamed = stack.rename({"valid": name})
        assert clear_mask(renamed).values.tolist() == got.tolist(), name
    # SCL wins over a mask band; a method the stack cannot serve is a one-line error.
    with_scl = stack.assign(scl=(DIMS, np.full(red.shape, VEGETATION, dtype=np.uint8)))
    assert clear_mask(with_scl).values[0, 0].tolist() == [True] * 5
    assert clear_mask(with_scl, method="mask").values.tolist() == got.tolist()
    with pytest.raises(ConfigError, match="non-zero = clear"):
        clear_mask(_stack(red=red, nir=red), method="mask")
    with pytest.raises(ConfigError, match="needs the scl band"):
        clear_mask(stack, method="scl")
    with pytest.raises(ConfigError, match="needs bands blue, red"):
        clear_mask(stack, method="reflectance")
    with pytest.raises(ConfigError, match="method 'fmask'"):
        clear_mask(stack, method="fmask")  # type: ignore[arg-type]


def _pixels(**bands: list[float]) -> xr.Dataset:
    return _stack(**{b: np.asarray([[v]], dtype=np.float32) for b, v in bands.items()})


def test_reflectance_cloud_test_by_hand() -> None:
    # Pixels: vegetation, haze, thick cloud, bright soil, snow.
    stack = _pixels(
        blue=[0.07, 0.15, 0.50, 0.15, 0.90],
        green=[0.06, 0.14, 0.50, 0.20, 0.90],
        red=[0.05, 0.08, 0.48, 0.25, 0.85],
        nir=[0.35, 0.25, 0.50, 0.35, 0.80],
        swir16=[0.15, 0.20, 0.40, 0.40, 0.10],
    )
    expected_hot = np.array([0.07, 0.15, 0.50, 0.15, 0.90]) - 0.5 * np.array(
        [0.05, 0.08, 0.48, 0.25, 0.85]
    )
    np.testing.assert_allclose(hot(stack).values[0, 0], expected_hot - 0.08, atol=1e-6)
    assert cloud_test(stack).values[0, 0].tolist() == [False, True, True, False, False]
    assert cloud_test(stack, keep_snow=False).values[0, 0].tolist()[-1]
    assert clear_mask(stack).values[0, 0].tolist() == [True, False, False, True, True]
    assert clear_mask(stack, drop_snow=True).values[0, 0].tolist()[-1] is False
    # Without the snow bands the test cannot tell snow from cloud.
    blue_red = stack[["blue", "red"]]
    assert clear_mask(blue_red).values[0, 0].tolist() == [True, False, False, True, False]
    assert clear_mask(blue_red, hot_threshold=0.5).values[0, 0].tolist()[1]


def test_without_scl_mask_band_or_blue_only_nodata_is_masked() -> None:
    # The monitor stage loads red and nir alone: every observation with data counts.
    red = np.array([[[0.5, np.nan]]], dtype=np.float32)
    stack = _stack(red=red, nir=red)
    assert clear_mask(stack).values.tolist() == [[[True, False]]]
    assert clear_mask(stack, buffer_px=3).values.tolist() == [[[True, False]]]


def test_clear_count_with_buffer_is_chunk_independent() -> None:
    rng = np.random.default_rng(11)
    scl = rng.choice([VEGETATION, VEGETATION, VEGETATION, CLOUD_HIGH], size=(6, 23, 17))
    red = np.full(scl.shape, 0.1, dtype=np.float32)
    stack = _stack(red=red, nir=red, scl=scl.astype(np.uint8))
    counts = [
        clear_count(clear_mask(s, buffer_px=2, footprint="disk")).values
        for s in (stack, stack.chunk({"time": 1, "y": 5, "x": 4}), stack.chunk({"y": 23}))
    ]
    assert counts[0].dtype == np.uint16
    assert 0 < counts[0].mean() < 6
    for other in counts[1:]:
        np.testing.assert_array_equal(other, counts[0])
