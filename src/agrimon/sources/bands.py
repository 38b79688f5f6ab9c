"""Sentinel-2 band names and digital-number conversion: pure functions shared by sources."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from agrimon.sources.base import SCL

#: Sentinel-2 band id of each STAC common name used in scene stacks (and a few extras).
BAND_IDS: dict[str, str] = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    SCL: "SCL",
}
_BY_ID = {v.upper(): k for k, v in BAND_IDS.items()}
#: Reflectance = DN × scale + offset for Sentinel-2 L1C/L2A products.
DN_SCALE = 1e-4
#: Values converted at once: a strip's float64 values stay in the CPU's cache.
STRIP_VALUES = 1 << 16
#: Processing baseline 04.00 (25 January 2022) added 1000 to every DN: −0.1 in reflectance.
BASELINE_04_OFFSET = -0.1


def common_name(label: str) -> str | None:
    """Common name for a band id or name (``B04``, ``B4``, ``b8a``, ``red``), else None."""
    text = label.strip()
    if text.lower() in BAND_IDS:
        return text.lower()
    upper = text.upper()
    if upper.startswith("B") and upper[1:].isdigit() and len(upper) == 2:
        upper = f"B0{upper[1:]}"
    return _BY_ID.get(upper)


def needs_baseline_offset(baseline: str | None, offset_applied: bool | None) -> bool:
    """Whether the processing-baseline-04.00 offset must still be subtracted.

    Args:
        baseline: ``s2:processing_baseline`` (e.g. ``"04.00"``); None when unknown.
        offset_applied: ``earthsearch:boa_offset_applied`` when the catalog says.

    Returns:
        True for baseline ≥ 04.00 products whose offset was not applied already.
    """
    if offset_applied:
        return False
    if baseline is None:
        return False
    try:
        return float(baseline) >= 4.0
    except ValueError:
        return False


def dn_to_reflectance(
    dn: NDArray[Any],
    *,
    scale: float = DN_SCALE,
    offset: float = 0.0,
    nodata: float | None = 0,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Reflectance from digital numbers: ``dn × scale + offset``, NaN where ``dn == nodata``.

    The conversion runs in float64 and is rounded to float32 once, in strips of
    :data:`STRIP_VALUES` values: no float64 copy of the whole block.

    Args:
        dn: Digital numbers (any integer or float dtype).
        scale: Multiplier (``raster:bands`` scale, 1e-4 for Sentinel-2).
        offset: Additive offset in reflectance units (−0.1 for baseline ≥ 04.00).
        nodata: Nodata value of the DNs, or None.
        out: float32 array of ``dn``'s shape to write into (e.g. a date of a series).

    Returns:
        float32 reflectance (``out`` when given).
    """
    dn = np.asarray(dn)
    if out is None:
        out = np.empty(dn.shape, dtype=np.float32)
    elif not out.flags.c_contiguous:  # strips are views of a contiguous array only
        out[...] = dn_to_reflectance(dn, scale=scale, offset=offset, nodata=nodata)
        return out
    if dn.size == 0:
        return out
    src, dst = np.atleast_2d(dn), np.atleast_2d(out)
    src, dst = src.reshape(-1, src.shape[-1]), dst.reshape(-1, dst.shape[-1])
    rows = max(STRIP_VALUES // src.shape[1], 1)
    strip = np.empty((min(rows, src.shape[0]), src.shape[1]), dtype=np.float64)
    for start in range(0, src.shape[0], rows):
        part = src[start : start + rows]
        values = strip[: part.shape[0]]
        np.multiply(part, scale, out=values, dtype=np.float64)  # exact for integer DNs
        values += offset
        if nodata is not None:
            missing = part == nodata
            if missing.any():  # most strips have none: no masked copy for them
                np.copyto(values, np.nan, where=missing)
        dst[start : start + rows] = values  # float64 → float32: the one rounding
    return out


def reflectance_offset(
    declared: float | None, baseline: str | None, offset_applied: bool | None
) -> float:
    """Offset to add to ``DN × scale`` so that the baseline-04.00 shift is removed exactly once.

    Args:
        declared: ``raster:bands`` offset of the asset, if the catalog gives one.
        baseline: ``s2:processing_baseline`` of the item.
        offset_applied: ``earthsearch:boa_offset_applied``: the DNs were already shifted back,
            so the declared offset must not be applied again.

    Returns:
        The offset in reflectance units (0 or −0.1 for Sentinel-2).
    """
    if offset_applied:
        return 0.0
    if declared:
        return float(declared)
    return BASELINE_04_OFFSET if needs_baseline_offset(baseline, offset_applied) else 0.0
