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

Normalized differences all go through :func:`normalized_difference`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import xarray as xr

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

#: Every index by name, in a stable order (the order of :func:`parse_indices` messages).
INDICES: dict[str, IndexFunction] = {}
#: Bands each index reads, in spectral order.
INDEX_BANDS: dict[str, tuple[str, ...]] = {}


def _register(*bands: str) -> Callable[[IndexFunction], IndexFunction]:
    """Record an index function and the bands it reads under the function's name."""

    def record(func: IndexFunction) -> IndexFunction:
        INDICES[func.__name__] = func
        INDEX_BANDS[func.__name__] = tuple(b for b in BANDS if b in bands)
        return func

    return record


def _finite(values: xr.DataArray) -> xr.DataArray:
    return values.where(np.isfinite(values))


def plausible(band: xr.DataArray) -> xr.DataArray:
    """``band`` with reflectances outside ``[VALID_MIN, VALID_MAX]`` set to NaN."""
    return band.where((band >= VALID_MIN) & (band <= VALID_MAX))


def _bands(stack: xr.Dataset, *names: str) -> tuple[xr.DataArray, ...]:
    return tuple(plausible(stack[name]) for name in names)


def _ratio(num: xr.DataArray, den: xr.DataArray) -> xr.DataArray:
    """``num / den``, NaN where ``den`` is zero (no division-by-zero warning, no inf)."""
    return _finite(num / den.where(den != 0))


def _named(values: xr.DataArray, name: str) -> xr.DataArray:
    return _finite(values).astype(np.float32).rename(name)


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """``(a - b) / (a + b)``, NaN where the sum is zero, an input is missing or it overflows.

    Args:
        a: First array (the band whose excess makes the index positive).
        b: Second array, broadcastable against ``a``.

    Returns:
        float32 DataArray, lazy when an input is dask-backed.
    """
    return _ratio(a - b, a + b).astype("float32")


@_register("red", "nir")
def ndvi(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Difference Vegetation Index, ``(nir - red) / (nir + red)``.

    Reference: Rouse et al. (1974), Monitoring vegetation systems in the Great Plains with
    ERTS, NASA SP-351.
    """
    red, nir = _bands(stack, "red", "nir")
    return _named(normalized_difference(nir, red), "ndvi")


@_register("blue", "red", "nir")
def evi(stack: xr.Dataset) -> xr.DataArray:
    """Enhanced Vegetation Index.

    ``EVI = G * (nir - red) / (nir + C1 * red - C2 * blue + L)`` with G = 2.5, C1 = 6,
    C2 = 7.5, L = 1 (:data:`EVI_G`, :data:`EVI_C1`, :data:`EVI_C2`, :data:`EVI_L`).

    Reference: Huete et al. (2002), Overview of the radiometric and biophysical
    performance of the MODIS vegetation indices, Remote Sensing of Environment 83, 195–213.
    """
    blue, red, nir = _bands(stack, "blue", "red", "nir")
    den = nir + EVI_C1 * red - EVI_C2 * blue + EVI_L
    return _named(EVI_G * _ratio(nir - red, den), "evi")


@_register("red", "nir")
def evi2(stack: xr.Dataset) -> xr.DataArray:
    """Two-band Enhanced Vegetation Index, ``2.5 * (nir - red) / (nir + 2.4 * red + 1)``.

    Reference: Jiang et al. (2008), Development of a two-band enhanced vegetation index
    without a blue band, Remote Sensing of Environment 112, 3833–3845.
    """
    red, nir = _bands(stack, "red", "nir")
    return _named(2.5 * _ratio(nir - red, nir + 2.4 * red + 1.0), "evi2")


@_register("red", "nir")
def savi(stack: xr.Dataset) -> xr.DataArray:
    """Soil-Adjusted Vegetation Index, ``(1 + L) * (nir - red) / (nir + red + L)``, L = 0.5.

    Reference: Huete (1988), A soil-adjusted vegetation index (SAVI), Remote Sensing of
    Environment 25, 295–309.
    """
    red, nir = _bands(stack, "red", "nir")
    return _named((1.0 + SAVI_L) * _ratio(nir - red, nir + red + SAVI_L), "savi")


@_register("red", "nir")
def msavi2(stack: xr.Dataset) -> xr.DataArray:
    """Modified Soil-Adjusted Vegetation Index (the self-adjusting MSAVI2).

    ``MSAVI2 = (2 * nir + 1 - sqrt((2 * nir + 1)^2 - 8 * (nir - red))) / 2``; NaN where the
    term under the root is negative (possible only for negative red).

    Reference: Qi et al. (1994), A modified soil adjusted vegetation index, Remote Sensing
    of Environment 48, 119–126.
    """
    red, nir = _bands(stack, "red", "nir")
    disc = (2.0 * nir + 1.0) ** 2 - 8.0 * (nir - red)
    # Mask before the root: numpy warns on sqrt of a negative.
    root = np.sqrt(disc.where(disc >= 0))
    return _named((2.0 * nir + 1.0 - root) / 2.0, "msavi2")


@_register("green", "nir")
def ndwi(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Difference Water Index (McFeeters), ``(green - nir) / (green + nir)``.

    Open water is positive. Reference: McFeeters (1996), The use of the Normalized
    Difference Water Index (NDWI) in the delineation of open water features, International
    Journal of Remote Sensing 17, 1425–1432.
    """
    green, nir = _bands(stack, "green", "nir")
    return _named(normalized_difference(green, nir), "ndwi")


@_register("green", "swir16")
def mndwi(stack: xr.Dataset) -> xr.DataArray:
    """Modified Normalized Difference Water Index, ``(green - swir16) / (green + swir16)``.

    Reference: Xu (2006), Modification of normalised difference water index (NDWI) to
    enhance open water features in remotely sensed imagery, International Journal of
    Remote Sensing 27, 3025–3033.
    """
    green, swir16 = _bands(stack, "green", "swir16")
    return _named(normalized_difference(green, swir16), "mndwi")


@_register("green", "swir16")
def ndsi(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Difference Snow Index, ``(green - swir16) / (green + swir16)``.

    The same ratio as MNDWI; snow is above about 0.4. Reference: Hall et al. (1995),
    Development of methods for mapping global snow cover using MODIS data, Remote Sensing
    of Environment 54, 127–140.
    """
    green, swir16 = _bands(stack, "green", "swir16")
    return _named(normalized_difference(green, swir16), "ndsi")


@_register("nir", "swir16")
def ndmi(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Difference Moisture Index, ``(nir - swir16) / (nir + swir16)``.

    Vegetation water content (Gao's NDWI). References: Gao (1996), NDWI — a normalized
    difference water index for remote sensing of vegetation liquid water from space,
    Remote Sensing of Environment 58, 257–266; Wilson & Sader (2002), Remote Sensing of
    Environment 80, 385–396 (the NDMI name).
    """
    nir, swir16 = _bands(stack, "nir", "swir16")
    return _named(normalized_difference(nir, swir16), "ndmi")


@_register("nir", "swir22")
def nbr(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Burn Ratio, ``(nir - swir22) / (nir + swir22)``.

    Reference: Key & Benson (2006), Landscape assessment: ground measure of severity, the
    Composite Burn Index; and remote sensing of severity, the Normalized Burn Ratio, USDA
    Forest Service RMRS-GTR-164-CD.
    """
    nir, swir22 = _bands(stack, "nir", "swir22")
    return _named(normalized_difference(nir, swir22), "nbr")


@_register("rededge1", "nir")
def ndre(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Difference Red-Edge index, ``(nir - rededge1) / (nir + rededge1)``.

    ``rededge1`` is Sentinel-2 B05 (705 nm), the red-edge band closest to the 700–710 nm
    band of the original index; ``nir`` is B08 (842 nm). Reference: Gitelson & Merzlyak
    (1994), Spectral reflectance changes associated with autumn senescence of Aesculus
    hippocastanum L. and Acer platanoides L. leaves, Journal of Plant Physiology 143,
    286–292.
    """
    rededge1, nir = _bands(stack, "rededge1", "nir")
    return _named(normalized_difference(nir, rededge1), "ndre")


@_register("green", "nir")
def gndvi(stack: xr.Dataset) -> xr.DataArray:
    """Green Normalized Difference Vegetation Index, ``(nir - green) / (nir + green)``.

    Reference: Gitelson, Kaufman & Merzlyak (1996), Use of a green channel in remote
    sensing of global vegetation from EOS-MODIS, Remote Sensing of Environment 58, 289–298.
    """
    green, nir = _bands(stack, "green", "nir")
    return _named(normalized_difference(nir, green), "gndvi")


@_register("blue", "red", "nir", "swir16")
def bsi(stack: xr.Dataset) -> xr.DataArray:
    """Bare Soil Index, ``((swir16 + red) - (nir + blue)) / ((swir16 + red) + (nir + blue))``.

    Reference: Rikimaru, Roy & Miyatake (2002), Tropical forest cover density mapping,
    Tropical Ecology 43, 39–47.
    """
    blue, red, nir, swir16 = _bands(stack, "blue", "red", "nir", "swir16")
    return _named(normalized_difference(swir16 + red, nir + blue), "bsi")


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


def compute_indices(stack: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """Several indices of one scene stack, as one Dataset (lazy when the stack is).

    Args:
        stack: Scene stack holding at least ``required_bands(names)``.
        names: Index names (see :data:`INDICES`), case-insensitive.

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
    return xr.Dataset({name: INDICES[name](stack) for name in chosen}, attrs=dict(stack.attrs))
