"""Clear-sky masks from the Sen2Cor scene classification (SCL)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

from agrimon.errors import ConfigError
from agrimon.sources.base import BANDS, SCL

#: SCL classes dropped by default: no data, saturated, cloud shadow, cloud (medium, high)
#: and thin cirrus. Snow (11) is kept unless asked for.
DEFAULT_INVALID_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10)


def clear_mask(stack: xr.Dataset, *, invalid: Iterable[int] = DEFAULT_INVALID_SCL) -> xr.DataArray:
    """Per-pixel, per-date clear-sky mask.

    A pixel is clear when its SCL class is not in ``invalid`` and its reflectance is not
    nodata. Stacks without SCL are judged on nodata alone (a reflectance cloud test comes
    with the index stage).

    Args:
        stack: Scene stack (see DESIGN.md), lazy or not.
        invalid: SCL codes to drop.

    Returns:
        Boolean DataArray ``(time, y, x)``, True where the observation is usable.
    """
    codes = sorted({int(c) for c in invalid})
    if any(c < 0 or c > 11 for c in codes):
        raise ConfigError(
            f"SCL classes {codes} are not all Sen2Cor codes 0..11: fix the cloud-mask classes"
        )
    bands = [b for b in BANDS if b in stack]
    valid = (
        xr.concat([stack[b].notnull() for b in bands], dim="band").all("band") if bands else None
    )
    if SCL in stack:
        clear = ~stack[SCL].isin(np.asarray(codes, dtype=np.uint8))
        clear = clear if valid is None else clear & valid
    elif valid is not None:
        clear = valid
    else:
        raise ConfigError("scene stack has neither reflectance bands nor SCL: nothing to mask")
    return clear.rename("clear")


def clear_count(clear: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Number of clear observations per pixel (uint16)."""
    return clear.sum(dim).astype(np.uint16).rename("clear_count")
