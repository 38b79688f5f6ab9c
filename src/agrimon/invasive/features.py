"""Named, versioned per-pixel feature sets: what the encroachment model sees.

A feature set fixes the channels of a feature image, in order, so that inference computes
exactly what training used (the model card names the set and lists its channels; a
mismatch is refused). Two kinds exist:

* **computed** sets, built lazily from a scene stack by the index stage: the median of
  every band and index in each of six two-month periods of one growing season (the
  ``steps`` a temporal encoder runs over), then the season metrics of NDVI;
* **raster** sets, read from an analyst's own multi-band GeoTIFF (``--features``): the
  bands are the steps, one feature each, and are named after the file's band descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from agrimon.config import SHIPPED_INVASIVE_MODEL, RunSpec
from agrimon.errors import ConfigError, ModelError
from agrimon.indices import composites, masks, phenology, spectral
from agrimon.sources.base import BANDS

#: Metrics of :func:`agrimon.indices.phenology.phenology` used as static features.
SEASON_METRICS = phenology.LAYER_METRICS


@dataclass(frozen=True)
class FeatureSet:
    """The channels of a feature image.

    Attributes:
        name: Identifier, e.g. ``s2-season-v1`` or ``raster``.
        version: Bumped whenever the channels or how they are computed change.
        steps: Names of the temporal steps (periods or raster bands).
        per_step: Names of the features of each step.
        static: Names of the features without a time axis (after the temporal ones).
        months_per_step: Length of a computed set's periods in months (0 for rasters).
    """

    name: str
    version: int
    steps: tuple[str, ...]
    per_step: tuple[str, ...]
    static: tuple[str, ...] = ()
    months_per_step: int = 0

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names, step-major: ``<step>:<feature>`` then the static ones."""
        temporal = tuple(f"{s}:{f}" for s in self.steps for f in self.per_step)
        return temporal + self.static

    @property
    def key(self) -> str:
        """``name/version``, as the model card records it."""
        return f"{self.name}/v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Plain types for the model card and checkpoint."""
        return {
            "name": self.name,
            "version": self.version,
            "steps": list(self.steps),
            "per_step": list(self.per_step),
            "static": list(self.static),
            "months_per_step": self.months_per_step,
            "channels": list(self.channels),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            steps=tuple(data["steps"]),
            per_step=tuple(data["per_step"]),
            static=tuple(data["static"]),
            months_per_step=int(data.get("months_per_step", 0)),
        )


#: Indices composited beside the bands in :data:`SEASON_V1`.
SEASON_INDICES: tuple[str, ...] = ("ndvi", "ndmi")

#: The computed feature set of the shipped model: six two-month medians of the 10 bands,
#: NDVI and NDMI from the season's first month, then NDVI's season metrics.
SEASON_V1 = FeatureSet(
    name="s2-season",
    version=1,
    steps=("m01-02", "m03-04", "m05-06", "m07-08", "m09-10", "m11-12"),
    per_step=(*BANDS, *SEASON_INDICES),
    static=tuple(f"ndvi_{m}" for m in SEASON_METRICS),
    months_per_step=2,
)

FEATURE_SETS: dict[str, FeatureSet] = {SEASON_V1.key: SEASON_V1}


def raster_feature_set(band_names: tuple[str, ...]) -> FeatureSet:
    """The feature set of a user's raster: one step per band, one feature per step."""
    return FeatureSet(name="raster", version=1, steps=band_names, per_step=("value",))


def _add_months(day: date, months: int) -> date:
    total = day.year * 12 + (day.month - 1) + months
    return date(total // 12, total % 12 + 1, 1)


def season_window(start: date, end: date, params: phenology.PhenologyParams) -> tuple[date, date]:
    """The first whole growing season inside ``start..end``.

    Raises:
        ConfigError: The period holds no whole season.
    """
    month, day = params.season_start
    first = date(start.year, month, day)
    if first < start:
        first = date(start.year + 1, month, day)
    last = date.fromordinal(_add_months(first, 12).toordinal() - 1)
    if last > end:
        raise ConfigError(
            f"the period {start}..{end} holds no whole growing season (from "
            f"{month:02d}-{day:02d}): the encroachment features need one, e.g. --start "
            f"{first.replace(year=first.year - 1)} --end {last.replace(year=last.year - 1)}"
        )
    return first, last


def feature_periods(
    feature_set: FeatureSet, season: tuple[date, date]
) -> tuple[composites.Period, ...]:
    """The composite period of each step of a computed feature set."""
    first, _ = season
    out = []
    for k, name in enumerate(feature_set.steps):
        lo = _add_months(first, k * feature_set.months_per_step)
        hi = _add_months(first, (k + 1) * feature_set.months_per_step)
        out.append(composites.Period(name, lo, date.fromordinal(hi.toordinal() - 1)))
    return tuple(out)


def feature_stack(
    stack: xr.Dataset,
    feature_set: FeatureSet,
    *,
    season: tuple[date, date],
    params: phenology.PhenologyParams,
    invalid_scl: tuple[int, ...] = masks.DEFAULT_INVALID_SCL,
) -> xr.DataArray:
    """Lazy feature image ``(band, y, x)`` float32 of a scene stack, NaN where unknown.

    Args:
        stack: Scene stack with every band of ``feature_set`` and ``scl``.
        feature_set: A computed set (e.g. :data:`SEASON_V1`).
        season: The season the steps divide (see :func:`season_window`).
        params: Season calendar of the stack's hemisphere (for the season metrics).
        invalid_scl: SCL classes masked as not clear.
    """
    if feature_set.months_per_step <= 0:
        raise ModelError(
            f"feature set {feature_set.key} is read from a raster, not computed: pass --features"
        )
    clear = masks.clear_mask(stack, invalid=invalid_scl)
    indices = [f for f in feature_set.per_step if f not in BANDS]
    series = spectral.compute_indices(stack, indices, clear=clear) if indices else xr.Dataset()
    variables = [
        stack[f].where(clear).astype(np.float32) if f in BANDS else series[f]
        for f in feature_set.per_step
    ]
    per_var = xr.concat(variables, dim="feature", coords="minimal", compat="override")
    per_var = per_var.assign_coords(feature=list(feature_set.per_step))
    start, end = season
    in_season = stack.time.dt.floor("D")
    per_var = per_var.isel(
        time=((in_season >= np.datetime64(start)) & (in_season <= np.datetime64(end))).values
    )
    steps = composites.composite(per_var, feature_periods(feature_set, season), "median")
    temporal = steps.transpose("period", "feature", "y", "x").stack(band=("period", "feature"))
    temporal = temporal.transpose("band", "y", "x").drop_vars(["band", "period", "feature"])
    parts = [temporal.drop_vars([c for c in temporal.coords if str(c).startswith("period")])]
    if feature_set.static:
        ndvi = spectral.compute_indices(stack, ["ndvi"], clear=clear)["ndvi"]
        metrics = phenology.phenology(ndvi, params)
        static = xr.concat(
            [metrics[name.removeprefix("ndvi_")] for name in feature_set.static],
            dim="band",
            coords="minimal",
            compat="override",
        )
        parts.append(static.drop_vars([c for c in static.coords if c not in ("y", "x")]))
    out = xr.concat(parts, dim="band", coords="minimal", compat="override").astype(np.float32)
    return out.assign_coords(band=list(feature_set.channels)).rename("features")


# --- which runs need features (light: the monitor imports this without torch) ---------


def _phenology_params(southern: bool) -> phenology.PhenologyParams:
    from agrimon.tilework import phenology_params  # it imports this module

    return phenology_params(southern=southern)


@lru_cache(maxsize=16)
def _aoi_is_southern(path: Path, mtime_ns: int, max_area_km2: float) -> bool:
    from agrimon.aoi import read_aoi

    return bool(read_aoi(path, max_area_km2=max_area_km2).geometry.centroid.y < 0)


def check_season(spec: RunSpec) -> tuple[date, date]:
    """The whole season in the run's period, in the AOI's hemisphere (before any work).

    Raises:
        ConfigError: The period holds no whole season.
    """
    mtime = spec.aoi.stat().st_mtime_ns if spec.aoi.is_file() else 0  # else read_aoi says
    southern = _aoi_is_southern(spec.aoi, mtime, spec.max_area_km2)
    return season_window(spec.start, spec.end, _phenology_params(southern))


def monitor_model(spec: RunSpec) -> Path | None:
    """The checkpoint a monitor run maps with, or None.

    ``auto`` is the shipped demo checkpoint for demo runs whose period holds a whole
    season (the features need one); ``none`` maps nothing.
    """
    choice = spec.invasive_model.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "auto":
        if spec.source != "demo" or not SHIPPED_INVASIVE_MODEL.is_file():
            return None
        try:
            check_season(spec)
        except ConfigError:
            return None
        return SHIPPED_INVASIVE_MODEL
    return Path(choice)
