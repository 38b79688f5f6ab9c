"""Spectral indices: pure functions on scene stacks, NaN (never inf) where undefined."""

from __future__ import annotations

import xarray as xr


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """``(a - b) / (a + b)``, NaN where the sum is zero or either input is missing."""
    total = a + b
    return ((a - b) / total.where(total != 0)).astype("float32")


def ndvi(stack: xr.Dataset) -> xr.DataArray:
    """Normalized Difference Vegetation Index, ``(nir - red) / (nir + red)``.

    Reference: Rouse et al. (1974), Monitoring vegetation systems in the Great Plains with
    ERTS, NASA SP-351.
    """
    return normalized_difference(stack["nir"], stack["red"]).rename("ndvi")
