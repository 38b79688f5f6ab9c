"""Spectral indices: pure functions on scene stacks, NaN (never inf) where undefined.

Every index takes a scene stack (see DESIGN.md: reflectance 0–1, float32 bands named by
their STAC common names) and returns a float32 ``xarray.DataArray`` named after the index,
lazy when the stack is dask-backed.

**The NaN rule**, applied to every index in :data:`INDICES`:

* an input reflectance outside ``[VALID_MIN, VALID_MAX]`` (−0.2 … 1.5) is not a plausible
  surface or top-of-atmosphere reflectance (fill values, unscaled DNs, sensor artefacts), so
  that pixel's index is NaN;
* a missing input (NaN) gives NaN;
* a zero denominator gives NaN, and so does any other non-finite result (overflow, the
  square root of a negative number): an index is never ``inf``.

Each index is a formula on NumPy arrays (a *kernel*, :data:`KERNELS`) that
:func:`evaluate` runs with the NaN rule over strips of :data:`STRIP_VALUES` values, so a
formula's temporaries stay in the CPU's cache; on dask, that is one task per block. The
values are those of the formula applied to whole arrays, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from agrimon.errors import ConfigError
from agrimon.sources.base import BANDS

#: Lowest plausible reflectance; below it an input is treated as missing.
VALID_MIN = -0.2
#: Highest plausible reflectance (bright cloud tops reach about 1.2 at top of atmosphere).
VALID_MAX = 1.5

#: EVI coefficients (Huete et al. 2002): gain, red and blue aerosol terms, canopy background.
EVI_G, EVI_C1, EVI_C2, EVI_L = 2.5, 6.0, 7.5, 1.0
#: SAVI soil brightness factor for intermediate vegetation cover (Huete 1988).
SAVI_L = 0.5

IndexFunction = Callable[[xr.Dataset], xr.DataArray]
#: An index's formula on NumPy arrays of its bands (any float dtype), without NaN rules.
Kernel = Callable[..., NDArray[Any]]
Band = NDArray[Any]

#: Every index by name, in a stable order (the order of :func:`parse_indices` messages).
INDICES: dict[str, IndexFunction] = {}
#: Bands each index reads, in spectral order.
INDEX_BANDS: dict[str, tuple[str, ...]] = {}
#: Each index's formula on NumPy arrays, its bands in the order of :data:`KERNEL_BANDS`.
KERNELS: dict[str, Kernel] = {}
#: The bands each kernel takes, in its argument order.
KERNEL_BANDS: dict[str, tuple[str, ...]] = {}

#: Values per strip that a kernel and the NaN rule run on at once: every temporary of a
#: formula then stays in a core's cache instead of being a fresh array of a whole chunk
#: (about 3x faster on a 12-date, 1024 x 1024 px chunk).
STRIP_VALUES = 1 << 16


def _index(*bands: str) -> Callable[[Kernel], IndexFunction]:
    """Make an index of a stack from a kernel over ``bands`` and register it by its name."""

    def record(kernel: Kernel) -> IndexFunction:
        name = kernel.__name__

        def index(stack: xr.Dataset) -> xr.DataArray:
            return apply_index(name, stack)

        # The formula's name and documentation, the stack's signature.
        index.__name__ = index.__qualname__ = name
        index.__doc__, index.__module__ = kernel.__doc__, kernel.__module__
        INDICES[name] = index
        INDEX_BANDS[name] = tuple(b for b in BANDS if b in bands)
        KERNELS[name] = kernel
        KERNEL_BANDS[name] = bands
        return index

    return record


def evaluate(
    *arrays: NDArray[Any], kernel: Kernel, screen: bool = True, masked: bool = False
) -> NDArray[np.float32]:
    """``kernel(*arrays)`` as float32 under the NaN rule, in cache-sized strips.

    Args:
        arrays: The kernel's inputs, broadcastable; with ``masked``, a boolean clear mask
            after them.
        kernel: Formula on NumPy arrays.
        screen: Whether an input outside ``[VALID_MIN, VALID_MAX]`` makes the result NaN.
        masked: Whether the last array is a clear mask (False → NaN).

    Returns:
        float32 array: the formula, NaN where an input is missing or implausible, the
        result is not finite or (``masked``) the observation is not clear.
    """
    full = [np.ravel(a) for a in np.broadcast_arrays(*arrays)]  # views of contiguous blocks
    out = np.empty(np.broadcast_shapes(*(np.shape(a) for a in arrays)), dtype=np.float32)
    result = out.reshape(-1)
    mask = full.pop().astype(bool, copy=False) if masked else None
    bands = [f if np.issubdtype(f.dtype, np.floating) else f.astype(np.float64) for f in full]
    with np.errstate(all="ignore"):
        for start in range(0, result.size, STRIP_VALUES):
            part = slice(start, start + STRIP_VALUES)
            values = [b[part] for b in bands]
            value = np.asarray(kernel(*values)).astype(np.float32, copy=False)
            ok = np.isfinite(value)
            if screen:
                for v in values:
                    ok &= v >= VALID_MIN
                    ok &= v <= VALID_MAX
            if mask is not None:
                ok &= mask[part]
            dst = result[part]
            np.copyto(dst, value)
            np.copyto(dst, np.float32(np.nan), where=~ok)
    return out


def _apply(
    kernel: Kernel,
    arrays: Sequence[xr.DataArray],
    *,
    screen: bool,
    clear: xr.DataArray | None = None,
) -> xr.DataArray:
    """:func:`evaluate` over DataArrays, one task per dask block."""
    args = [*arrays, clear] if clear is not None else list(arrays)
    out: xr.DataArray = xr.apply_ufunc(
        evaluate,
        *args,
        kwargs={"kernel": kernel, "screen": screen, "masked": clear is not None},
        dask="parallelized",
        output_dtypes=[np.float32],
        join="inner",
    )
    return out


def apply_index(name: str, stack: xr.Dataset, clear: xr.DataArray | None = None) -> xr.DataArray:
    """Index ``name`` of a stack (lazy when the stack is), NaN where ``clear`` is False.

    Raises:
        ConfigError: For an unknown name.
    """
    (name,) = _known([name])
    bands = [stack[b] for b in KERNEL_BANDS[name]]
    return _apply(KERNELS[name], bands, screen=True, clear=clear).rename(name)


def _nd(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    return np.asarray((a - b) / (a + b))


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """``(a - b) / (a + b)``, NaN where the sum is zero, an input is missing or it overflows.

    Args:
        a: First array (the band whose excess makes the index positive).
        b: Second array, broadcastable against ``a``.

    Returns:
        float32 DataArray, lazy when an input is dask-backed.
    """
    return _apply(_nd, [a, b], screen=False)


@_index("red", "nir")
def ndvi(red: Band, nir: Band) -> Band:
    """Normalized Difference Vegetation Index, ``(nir - red) / (nir + red)``.

    Reference: Rouse et al. (1974), Monitoring vegetation systems in the Great Plains with
    ERTS, NASA SP-351.
    """
    return _nd(nir, red)


@_index("blue", "red", "nir")
def evi(blue: Band, red: Band, nir: Band) -> Band:
    """Enhanced Vegetation Index.

    ``EVI = G * (nir - red) / (nir + C1 * red - C2 * blue + L)`` with G = 2.5, C1 = 6,
    C2 = 7.5, L = 1 (:data:`EVI_G`, :data:`EVI_C1`, :data:`EVI_C2`, :data:`EVI_L`).

    Reference: Huete et al. (2002), Overview of the radiometric and biophysical
    performance of the MODIS vegetation indices, Remote Sensing of Environment 83, 195–213.
    """
    den = nir + EVI_C1 * red - EVI_C2 * blue + EVI_L
    return EVI_G * ((nir - red) / den)


@_index("red", "nir")
def evi2(red: Band, nir: Band) -> Band:
    """Two-band Enhanced Vegetation Index, ``2.5 * (nir - red) / (nir + 2.4 * red + 1)``.

    Reference: Jiang et al. (2008), Development of a two-band enhanced vegetation index
    without a blue band, Remote Sensing of Environment 112, 3833–3845.
    """
    return 2.5 * ((nir - red) / (nir + 2.4 * red + 1.0))


@_index("red", "nir")
def savi(red: Band, nir: Band) -> Band:
    """Soil-Adjusted Vegetation Index, ``(1 + L) * (nir - red) / (nir + red + L)``, L = 0.5.

    Reference: Huete (1988), A soil-adjusted vegetation index (SAVI), Remote Sensing of
    Environment 25, 295–309.
    """
    return (1.0 + SAVI_L) * ((nir - red) / (nir + red + SAVI_L))


@_index("red", "nir")
def msavi2(red: Band, nir: Band) -> Band:
    """Modified Soil-Adjusted Vegetation Index (the self-adjusting MSAVI2).

    ``MSAVI2 = (2 * nir + 1 - sqrt((2 * nir + 1)^2 - 8 * (nir - red))) / 2``; NaN where the
    term under the root is negative (possible only for negative red).

    Reference: Qi et al. (1994), A modified soil adjusted vegetation index, Remote Sensing
    of Environment 48, 119–126.
    """
    disc = (2.0 * nir + 1.0) ** 2 - 8.0 * (nir - red)
    # The root of a negative is NaN, which the NaN rule keeps (its warning is silenced).
    return (2.0 * nir + 1.0 - np.sqrt(disc)) / 2.0


@_index("green", "nir")
def ndwi(green: Band, nir: Band) -> Band:
    """Normalized Difference Water Index (McFeeters), ``(green - nir) / (green + nir)``.

    Open water is positive. Reference: McFeeters (1996), The use of the Normalized
    Difference Water Index (NDWI) in the delineation of open water features, International
    Journal of Remote Sensing 17, 1425–1432.
    """
    return _nd(green, nir)


@_index("green", "swir16")
def mndwi(green: Band, swir16: Band) -> Band:
    """Modified Normalized Difference Water Index, ``(green - swir16) / (green + swir16)``.

    Reference: Xu (2006), Modification of normalised difference water index (NDWI) to
    enhance open water features in remotely sensed imagery, International Journal of
    Remote Sensing 27, 3025–3033.
    """
    return _nd(green, swir16)


@_index("green", "swir16")
def ndsi(green: Band, swir16: Band) -> Band:
    """Normalized Difference Snow Index, ``(green - swir16) / (green + swir16)``.

    The same ratio as MNDWI; snow is above about 0.4. Reference: Hall et al. (1995),
    Development of methods for mapping global snow cover using MODIS data, Remote Sensing
    of Environment 54, 127–140.
    """
    return _nd(green, swir16)


@_index("nir", "swir16")
def ndmi(nir: Band, swir16: Band) -> Band:
    """Normalized Difference Moisture Index, ``(nir - swir16) / (nir + swir16)``.

    Vegetation water content (Gao's NDWI). References: Gao (1996), NDWI — a normalized
    difference water index for remote sensing of vegetation liquid water from space,
    Remote Sensing of Environment 58, 257–266; Wilson & Sader (2002), Remote Sensing of
    Environment 80, 385–396 (the NDMI name).
    """
    return _nd(nir, swir16)


@_index("nir", "swir22")
def nbr(nir: Band, swir22: Band) -> Band:
    """Normalized Burn Ratio, ``(nir - swir22) / (nir + swir22)``.

    Reference: Key & Benson (2006), Landscape assessment: ground measure of severity, the
    Composite Burn Index; and remote sensing of severity, the Normalized Burn Ratio, USDA
    Forest Service RMRS-GTR-164-CD.
    """
    return _nd(nir, swir22)


@_index("rededge1", "nir")
def ndre(rededge1: Band, nir: Band) -> Band:
    """Normalized Difference Red-Edge index, ``(nir - rededge1) / (nir + rededge1)``.

    ``rededge1`` is Sentinel-2 B05 (705 nm), the red-edge band closest to the 700–710 nm
    band of the original index; ``nir`` is B08 (842 nm). Reference: Gitelson & Merzlyak
    (1994), Spectral reflectance changes associated with autumn senescence of Aesculus
    hippocastanum L. and Acer platanoides L. leaves, Journal of Plant Physiology 143,
    286–292.
    """
    return _nd(nir, rededge1)


@_index("green", "nir")
def gndvi(green: Band, nir: Band) -> Band:
    """Green Normalized Difference Vegetation Index, ``(nir - green) / (nir + green)``.

    Reference: Gitelson, Kaufman & Merzlyak (1996), Use of a green channel in remote
    sensing of global vegetation from EOS-MODIS, Remote Sensing of Environment 58, 289–298.
    """
    return _nd(nir, green)


@_index("blue", "red", "nir", "swir16")
def bsi(blue: Band, red: Band, nir: Band, swir16: Band) -> Band:
    """Bare Soil Index, ``((swir16 + red) - (nir + blue)) / ((swir16 + red) + (nir + blue))``.

    Reference: Rikimaru, Roy & Miyatake (2002), Tropical forest cover density mapping,
    Tropical Ecology 43, 39–47.
    """
    return _nd(swir16 + red, nir + blue)


def _known(names: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, stripped, de-duplicated names; ConfigError for an unknown one."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name not in INDICES:
            raise ConfigError(
                f"unknown spectral index '{raw.strip()}': choose from {', '.join(INDICES)}"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def parse_indices(text: str) -> tuple[str, ...]:
    """Index names from a comma-separated list such as ``"ndvi, EVI,ndmi"``.

    Names are stripped and lower-cased, empty items skipped, duplicates dropped (first kept).

    Raises:
        ConfigError: For an unknown name or an empty list (one line, listing valid names).
    """
    names = _known(part for part in text.split(",") if part.strip())
    if not names:
        raise ConfigError(f"no spectral index given: choose from {', '.join(INDICES)}")
    return names


def required_bands(names: Iterable[str]) -> tuple[str, ...]:
    """Bands a selection of indices reads, in spectral order: what a source must load.

    Raises:
        ConfigError: For an unknown index name.
    """
    needed = {band for name in _known(names) for band in INDEX_BANDS[name]}
    return tuple(b for b in BANDS if b in needed)


def compute_indices(
    stack: xr.Dataset, names: Sequence[str], clear: xr.DataArray | None = None
) -> xr.Dataset:
    """Several indices of one scene stack, as one Dataset (lazy when the stack is).

    Args:
        stack: Scene stack holding at least ``required_bands(names)``.
        names: Index names (see :data:`INDICES`), case-insensitive.
        clear: Optional clear-sky mask (see :func:`agrimon.indices.masks.clear_mask`):
            NaN where it is False, in the same pass as the index (the same values as
            ``compute_indices(stack, names).where(clear)``).

    Returns:
        Dataset with one float32 variable per index, named after it, on the stack's coords.

    Raises:
        ConfigError: For an unknown name, or a band the stack lacks.
    """
    chosen = _known(names)
    missing = [b for b in required_bands(chosen) if b not in stack]
    if missing:
        raise ConfigError(
            f"indices {', '.join(chosen)} need bands {', '.join(missing)} that the scene "
            "stack lacks: load required_bands(names) from the source"
        )
    return xr.Dataset(
        {name: apply_index(name, stack, clear) for name in chosen}, attrs=dict(stack.attrs)
    )
