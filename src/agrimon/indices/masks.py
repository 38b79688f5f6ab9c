"""Clear-sky masks: Sen2Cor scene classes, a source's mask band, or a reflectance cloud test.

:func:`clear_mask` picks the best evidence a scene stack carries, in this order:

1. ``scl`` (Sen2Cor scene classification, L2A): the classes in ``invalid`` are dropped;
2. a **mask band** the source provides, a variable named one of :data:`MASK_VARIABLES`
   (``clear``, ``valid``, ``mask``). Convention: **non-zero = clear**, 0 or NaN = not
   usable. A cloud mask coded the other way round (1 = cloud, as s2cloudless' ``CLM``)
   must be inverted before it is put in the stack under one of these names;
3. the **reflectance cloud test** :func:`cloud_test` (haze-optimised transform), for
   stacks without SCL (L1C, local GeoTIFFs) when ``blue`` and ``red`` are loaded;
4. nodata alone (every observation with reflectance counts).

Clouds and shadows can be grown by a buffer of ``buffer_px`` pixels (:func:`dilate`),
date by date, lazily and with the same result whatever the dask chunking. Nodata,
saturation and snow are never grown.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from typing import Any, Literal, get_args

import dask.array as da
import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import ndimage

from agrimon.errors import ConfigError
from agrimon.indices.spectral import STRIP_VALUES, ndsi
from agrimon.sources.base import BANDS, SCL

# Sen2Cor scene classification codes.
NO_DATA = 0
SATURATED = 1
DARK_AREA = 2
CLOUD_SHADOW = 3
VEGETATION = 4
NOT_VEGETATED = 5
WATER = 6
UNCLASSIFIED = 7
CLOUD_MEDIUM = 8
CLOUD_HIGH = 9
CIRRUS = 10
#: Snow or ice: kept by default (snow cover is an observation, not a cloud); drop it with
#: ``clear_mask(..., drop_snow=True)`` or by putting it in ``invalid``.
SNOW = 11

#: SCL classes dropped by default: no data, saturated, cloud shadow, cloud (medium, high)
#: and thin cirrus. Snow (11) is kept unless asked for.
DEFAULT_INVALID_SCL: tuple[int, ...] = (
    NO_DATA,
    SATURATED,
    CLOUD_SHADOW,
    CLOUD_MEDIUM,
    CLOUD_HIGH,
    CIRRUS,
)
#: SCL classes grown by ``buffer_px``: clouds and their shadows, whose edges Sen2Cor misses.
CLOUDY_SCL: tuple[int, ...] = (CLOUD_SHADOW, CLOUD_MEDIUM, CLOUD_HIGH, CIRRUS)
#: Names of a source-provided mask band (non-zero = clear), most specific first.
MASK_VARIABLES: tuple[str, ...] = ("clear", "valid", "mask")

#: Haze-optimised transform coefficients (Zhang et al. 2002; Zhu & Woodcock 2012):
#: ``HOT = blue - HOT_RED_SLOPE * red - HOT_OFFSET``.
HOT_RED_SLOPE = 0.5
HOT_OFFSET = 0.08
#: Pixels with HOT above this are cloud or haze (Fmask's threshold, on TOA reflectance).
HOT_THRESHOLD = 0.0
#: Snow test (Hall et al. 1995; Zhu & Woodcock 2012): NDSI above this and nir above SNOW_NIR.
SNOW_NDSI = 0.4
SNOW_NIR = 0.11
#: Bands the reflectance cloud test needs; the snow test adds green, nir and swir16.
CLOUD_TEST_BANDS: tuple[str, ...] = ("blue", "red")
SNOW_TEST_BANDS: tuple[str, ...] = ("green", "nir", "swir16")

Method = Literal["auto", "scl", "mask", "reflectance", "nodata"]
Footprint = Literal["square", "disk"]


def hot(stack: xr.Dataset) -> xr.DataArray:
    """Haze-optimised transform, ``HOT = blue - 0.5 * red - 0.08`` (float32).

    Clear land lies on a "clear-sky line" where blue and red rise together; haze and cloud
    brighten blue far more than red and lift pixels above it. The line's slope and offset
    are Fmask's fixed form of Zhang's fitted line.

    References: Zhang, Guindon & Cihlar (2002), An image transform to characterize and
    compensate for spatial variations in thin cloud contamination of Landsat images,
    Remote Sensing of Environment 82, 173–187; Zhu & Woodcock (2012), Object-based cloud
    and cloud shadow detection in Landsat imagery, Remote Sensing of Environment 118, 83–94.
    """
    value = stack["blue"] - HOT_RED_SLOPE * stack["red"] - HOT_OFFSET
    return value.astype(np.float32).rename("hot")


def snow_test(stack: xr.Dataset) -> xr.DataArray:
    """Snow or ice: ``NDSI > 0.4`` and ``nir > 0.11`` (boolean; False where undefined).

    References: Hall, Riggs & Salomonson (1995), Remote Sensing of Environment 54, 127–140
    (the NDSI threshold); Zhu & Woodcock (2012) (the nir floor that excludes water).
    """
    return ((ndsi(stack) > SNOW_NDSI) & (stack["nir"] > SNOW_NIR)).rename("snow")


def cloud_test(
    stack: xr.Dataset, *, hot_threshold: float = HOT_THRESHOLD, keep_snow: bool = True
) -> xr.DataArray:
    """Cloud and haze from reflectance alone, for stacks without SCL.

    A pixel is cloudy when ``HOT = blue - 0.5 * red - 0.08 > hot_threshold`` (see
    :func:`hot`). The test flags thick cloud and haze; it does not find cloud shadows
    (grow the mask with ``buffer_px`` to catch their near edges). Snow is as bright in blue
    as cloud: with ``keep_snow`` and the green, nir and swir16 bands loaded, pixels passing
    :func:`snow_test` are not called cloud (without those bands snow counts as cloud).

    Measured on the five real L1C scenes of ``data/real/slovenia-s2`` against their
    reference validity masks (``valid_timeseries.tif``): 99.9 % of the cloudy date and
    85.8 % of the hazy date are flagged, at most 0.04 % of the three clear dates; 97.1 %
    pixel agreement overall (97.3 % with s2cloudless probability < 0.4 as clear).

    Args:
        stack: Scene stack with ``blue`` and ``red`` (TOA or surface reflectance; on
            surface reflectance clear land sits further below the threshold).
        hot_threshold: HOT above which a pixel is cloud; 0 is Fmask's value.
        keep_snow: Whether snow is exempt from the test (when its bands are loaded).

    Returns:
        Boolean DataArray ``(time, y, x)`` named ``cloud``, False where inputs are missing.
    """
    cloudy = hot(stack) > hot_threshold
    if keep_snow and all(b in stack for b in SNOW_TEST_BANDS):
        cloudy = cloudy & ~snow_test(stack)
    return cloudy.rename("cloud")


def structuring_element(buffer_px: int, footprint: Footprint = "square") -> NDArray[np.bool_]:
    """Square ``(2n+1)²`` or disk (``dy² + dx² <= n²``) element of radius ``buffer_px``."""
    n = _check_buffer(buffer_px)
    if footprint not in get_args(Footprint):
        raise ConfigError(
            f"mask buffer footprint '{footprint}' is unknown: use one of "
            f"{', '.join(get_args(Footprint))}"
        )
    dy, dx = np.mgrid[-n : n + 1, -n : n + 1]
    if footprint == "square":
        return np.ones(dy.shape, dtype=bool)
    return np.asarray(dy**2 + dx**2 <= n**2, dtype=bool)


def _check_buffer(buffer_px: int) -> int:
    if isinstance(buffer_px, bool) or not isinstance(buffer_px, int | np.integer) or buffer_px < 0:
        raise ConfigError(
            f"mask buffer {buffer_px!r} is not a whole number of pixels >= 0: pass e.g. buffer_px=2"
        )
    return int(buffer_px)


def _dilate_block(block: NDArray[np.bool_], structure: NDArray[np.bool_]) -> NDArray[np.bool_]:
    # Outside the block counts as not cloudy; map_overlap supplies the neighbours' pixels.
    return np.asarray(ndimage.binary_dilation(block, structure=structure, border_value=0))


def dilate(mask: xr.DataArray, buffer_px: int, *, footprint: Footprint = "square") -> xr.DataArray:
    """Grow the True pixels of a mask by ``buffer_px`` pixels in ``y`` and ``x``, date by date.

    Lazy on dask: each block is dilated with ``buffer_px`` pixels of its neighbours
    (``dask.array.map_overlap``, no padding at the array's edge), so the result does not
    depend on the chunking.

    Args:
        mask: Boolean DataArray with ``y`` and ``x`` dims (any others are left apart).
        buffer_px: Radius in pixels; 0 returns the mask unchanged.
        footprint: ``square`` (Chebyshev distance) or ``disk`` (Euclidean distance).

    Returns:
        The grown mask, same dims, coords and name.

    Raises:
        ConfigError: For a negative buffer or an unknown footprint.
    """
    structure = structuring_element(buffer_px, footprint)
    if buffer_px == 0:
        return mask
    ay, ax = mask.get_axis_num(("y", "x"))
    # Size 1 along every other dim (time): no spreading between dates.
    shape = [1] * mask.ndim
    shape[ay], shape[ax] = structure.shape
    element = structure.reshape(shape)  # symmetric: the order of y and x does not matter
    data: Any = mask.astype(bool).data
    if isinstance(data, da.Array):
        depth = {i: (buffer_px if i in (ay, ax) else 0) for i in range(mask.ndim)}
        grown: Any = da.map_overlap(  # type: ignore[no-untyped-call]
            _dilate_block,
            data,
            depth=depth,
            boundary="none",
            dtype=bool,
            structure=element,
        )
    else:
        grown = _dilate_block(np.asarray(data), element)
    return mask.copy(data=grown)


def mask_variable(stack: xr.Dataset) -> str | None:
    """Name of the source-provided mask band in ``stack`` (see :data:`MASK_VARIABLES`)."""
    return next((name for name in MASK_VARIABLES if name in stack), None)


def _resolve(stack: xr.Dataset, method: Method) -> Method:
    if method not in get_args(Method):
        raise ConfigError(
            f"cloud-mask method '{method}' is unknown: use one of {', '.join(get_args(Method))}"
        )
    has_cloud_bands = all(b in stack for b in CLOUD_TEST_BANDS)
    if method == "auto":
        if SCL in stack:
            return "scl"
        if mask_variable(stack) is not None:
            return "mask"
        return "reflectance" if has_cloud_bands else "nodata"
    if method == "scl" and SCL not in stack:
        raise ConfigError("cloud-mask method 'scl' needs the scl band: load it or use 'auto'")
    if method == "mask" and mask_variable(stack) is None:
        raise ConfigError(
            f"cloud-mask method 'mask' needs a mask band named one of "
            f"{', '.join(MASK_VARIABLES)} (non-zero = clear): add it or use 'auto'"
        )
    if method == "reflectance" and not has_cloud_bands:
        raise ConfigError(
            f"cloud-mask method 'reflectance' needs bands {', '.join(CLOUD_TEST_BANDS)}: "
            "load them or use 'auto'"
        )
    return method


def _classes_in(scl: NDArray[np.uint8], bits: int, inside: bool) -> NDArray[np.bool_]:
    """Whether bit ``scl`` of ``bits`` is set (``inside``) or clear, in cache-sized strips.

    A class above 15 shifts every bit out: it is in no set of codes 0..15.
    """
    out = np.empty(scl.shape, dtype=bool)
    flat, result = scl.reshape(-1), out.reshape(-1)
    word = np.uint16(bits)
    shifted = np.empty(min(STRIP_VALUES, flat.size), dtype=np.uint16)
    compare = np.not_equal if inside else np.equal
    for start in range(0, flat.size, STRIP_VALUES):
        part = flat[start : start + STRIP_VALUES]
        tmp = shifted[: part.size]
        np.right_shift(word, part, out=tmp)
        np.bitwise_and(tmp, 1, out=tmp)
        compare(tmp, 0, out=result[start : start + STRIP_VALUES])
    return out


def scl_in(scl: xr.DataArray, codes: Iterable[int], *, inside: bool = True) -> xr.DataArray:
    """Whether each SCL class is one of ``codes`` (``scl.isin(codes)``), lazy on dask.

    With ``inside=False``, whether it is none of them. For a uint8 band and codes below
    16, each pixel's class shifts a 16-bit word of the codes' bits: a few SIMD passes,
    where ``isin`` compares every pixel with every code (about 15x slower).
    """
    wanted = sorted({int(c) for c in codes})
    if scl.dtype != np.uint8 or any(c < 0 or c > 15 for c in wanted):
        found = scl.isin(np.asarray(wanted))
        return found if inside else ~found
    out: xr.DataArray = xr.apply_ufunc(
        _classes_in,
        scl,
        kwargs={"bits": sum(1 << c for c in wanted), "inside": inside},
        dask="parallelized",
        output_dtypes=[bool],
    )
    return out


def clear_mask(
    stack: xr.Dataset,
    *,
    invalid: Iterable[int] = DEFAULT_INVALID_SCL,
    drop_snow: bool = False,
    buffer_px: int = 0,
    footprint: Footprint = "square",
    method: Method = "auto",
    hot_threshold: float = HOT_THRESHOLD,
) -> xr.DataArray:
    """Per-pixel, per-date clear-sky mask.

    A pixel is clear when every reflectance band has data and the chosen evidence calls it
    clear (see the module docstring for the order ``auto`` follows): its SCL class is not
    in ``invalid``; or the mask band is non-zero; or :func:`cloud_test` does not flag it. With
    ``buffer_px``, clouds and shadows (SCL :data:`CLOUDY_SCL`, a mask band's zeros, the
    reflectance test's clouds) are grown before they are removed.

    Args:
        stack: Scene stack (see DESIGN.md), lazy or not.
        invalid: SCL codes to drop.
        drop_snow: Also drop snow (SCL :data:`SNOW`, or :func:`snow_test` in the
            reflectance fallback); the same as putting 11 in ``invalid``.
        buffer_px: Pixels by which clouds and shadows grow (0: none).
        footprint: Shape of the buffer: ``square`` or ``disk``.
        method: ``auto``, or force ``scl``, ``mask``, ``reflectance`` or ``nodata``.
        hot_threshold: Threshold of the reflectance cloud test.

    Returns:
        Boolean DataArray ``(time, y, x)`` named ``clear``, True where the observation is
        usable; lazy when the stack is.

    Raises:
        ConfigError: For codes outside 0..11, a bad buffer, or a method the stack lacks
            the bands for.
    """
    codes = sorted({int(c) for c in invalid} | ({SNOW} if drop_snow else set()))
    if any(c < 0 or c > SNOW for c in codes):
        raise ConfigError(
            f"SCL classes {codes} are not all Sen2Cor codes 0..11: fix the cloud-mask classes"
        )
    _check_buffer(buffer_px)
    drop_snow = SNOW in codes
    bands = [b for b in BANDS if b in stack]
    # A chain of ands, not a concatenation along a new axis: no copy of every band's mask.
    valid = functools.reduce(operator.and_, [stack[b].notnull() for b in bands]) if bands else None
    chosen = _resolve(stack, method)
    cloudy: xr.DataArray | None = None
    if chosen == "scl":
        scl = stack[SCL]
        clear = scl_in(scl, codes, inside=False)
        grown = [c for c in codes if c in CLOUDY_SCL]
        if buffer_px and grown:
            cloudy = scl_in(scl, grown)
    elif chosen == "mask":
        band = stack[mask_variable(stack) or MASK_VARIABLES[0]]
        clear = band.notnull() & (band != 0)
        cloudy = band == 0  # NaN is missing, not cloud: it is dropped but not grown
    elif chosen == "reflectance":
        cloudy = cloud_test(stack, hot_threshold=hot_threshold, keep_snow=True)
        clear = ~cloudy
        if drop_snow and all(b in stack for b in SNOW_TEST_BANDS):
            clear = clear & ~snow_test(stack)
    elif valid is not None:
        clear = valid
    else:
        raise ConfigError("scene stack has neither reflectance bands nor SCL: nothing to mask")
    if valid is not None:
        clear = clear & valid
    if buffer_px and cloudy is not None:
        # Nodata is not grown: only pixels with data can be cloud or shadow.
        seed = cloudy if valid is None else cloudy & valid
        clear = clear & ~dilate(seed, buffer_px, footprint=footprint)
    return clear.rename("clear")


def clear_count(clear: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Number of clear observations per pixel (uint16)."""
    return clear.sum(dim).astype(np.uint16).rename("clear_count")
