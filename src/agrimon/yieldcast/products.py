"""Yield forecasts in a monitor run: which model, which units, which lead, the products.

A run forecasts when a yield model is configured (``RunSpec.yield_model``): ``auto`` is the
shipped demo model (``models/yield-demo``) for demo runs, whose units are the demo world's
crop fields inside the AOI; a checkpoint path forecasts the units of ``RunSpec.fields`` (a
vector file with a ``name`` per field or region; default the AOI's zones). Each unit's
NDVI series is the run's own zonal statistics over it (tile by tile, like the zones'),
read as :func:`agrimon.yieldcast.data.read_agrimon` reads a zonal table.

The harvest year and lead are the latest the run's period allows: the season whose start
(by the unit's calendar, or the model's regional calendar for a unit it never saw), and
the month before it, lie in the period, forecast at the latest lead (60 d, 90 d after the
start, end of season) on or before the period's last day. A period that misses the
season's start or ends before its 60-day lead forecasts nothing (said in the log).
Products: ``yield_forecast.geojson`` / ``.gpkg`` / ``.csv``
(:func:`agrimon.products.forecasts.write_forecasts`).
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from agrimon.config import SHIPPED_YIELD_MODEL, RunSpec
from agrimon.errors import ConfigError
from agrimon.yieldcast.data import (
    YieldData,
    calendar_table,
    season_bounds,
    series_table,
    zonal_series,
)
from agrimon.yieldcast.features import LEADS, SPINUP_DAYS, Lead, lead_date

_log = logging.getLogger(__name__)

#: Stem of the forecast products.
STEM = "yield_forecast"


def yield_model_path(spec: RunSpec) -> Path | None:
    """The yield checkpoint a run forecasts with, or None.

    ``auto`` is the shipped demo model for demo runs whose period allows a forecast of the
    demo calendar's season (see :func:`choose_lead`); ``none`` forecasts nothing.
    """
    choice = spec.yield_model.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "auto":
        if spec.source != "demo" or not SHIPPED_YIELD_MODEL.is_file():
            return None
        from agrimon.yieldcast.demo import demo_calendar

        # Only a period that can give a forecast loads the model (and torch with it).
        if choose_lead(demo_calendar(["demo"]), spec.start, spec.end) is None:
            return None
        return SHIPPED_YIELD_MODEL
    return Path(choice)


def forecast_units(
    spec: RunSpec, aoi_geometry: object, zones: gpd.GeoDataFrame
) -> gpd.GeoDataFrame:
    """The fields or regions to forecast, as zones (``zone_id``, ``name``, polygon).

    Raises:
        ConfigError: ``--fields`` cannot be read or names no polygon.
    """
    if spec.fields is not None:
        from agrimon.aoi import read_aoi

        try:
            units = read_aoi(spec.fields, max_area_km2=spec.max_area_km2).zones
        except Exception as err:
            raise ConfigError(f"--fields {spec.fields}: {err}") from err
        return units[["zone_id", "name", "geometry"]]
    if spec.source == "demo" and spec.yield_model.strip().lower() == "auto":
        from agrimon.yieldcast.demo import demo_fields

        fields = demo_fields(aoi_geometry)
        return gpd.GeoDataFrame(
            {"zone_id": np.arange(1, len(fields) + 1), "name": fields["field_id"].to_numpy()},
            geometry=fields.geometry.to_numpy(),
            crs=fields.crs,
        )
    return zones[["zone_id", "name", "geometry"]]


def check_yield(spec: RunSpec, aoi_geometry: object, zones: gpd.GeoDataFrame) -> None:
    """Pre-flight: the configured yield model loads and the units can be read.

    Raises:
        ModelError: The checkpoint is missing, damaged or of another kind.
        ConfigError: ``--fields`` cannot be read.
    """
    path = yield_model_path(spec)
    if path is None:
        return
    from agrimon.yieldcast.forecast import load_model

    load_model(path)
    forecast_units(spec, aoi_geometry, zones)


def choose_lead(calendar: pd.DataFrame, start: date, end: date) -> tuple[int, Lead] | None:
    """The harvest year and the latest lead a period allows, or None.

    The period must hold the whole window the features read up to the lead: from
    :data:`~agrimon.yieldcast.features.SPINUP_DAYS` before the start of season (by every
    unit's calendar) to the lead date.
    """
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    best: tuple[int, Lead] | None = None
    for year in (end.year, end.year + 1):
        bounds = season_bounds(calendar, [year])
        if (bounds["start"] - pd.Timedelta(days=SPINUP_DAYS) < first).any():
            continue
        for lead in LEADS:
            if (lead_date(bounds, lead) <= last).all():
                best = (year, lead)
    return best


def yield_products(
    folder: Path,
    spec: RunSpec,
    units: gpd.GeoDataFrame,
    table: pd.DataFrame,
    *,
    gpkg: Path | None = None,
) -> dict[str, Path]:
    """Forecast every unit from the run's zonal table of the units; write the products.

    Args:
        folder: The run's staging folder.
        spec: The run parameters.
        units: From :func:`forecast_units`.
        table: The zonal table of the units (``agrimon.indices.zonal.zonal_table``).
        gpkg: The run's GeoPackage, which gets the forecasts as a layer (else a file of
            their own).

    Returns:
        ``{"yield_forecast_csv": …, "yield_forecast_geojson": …}`` and, without ``gpkg``,
        ``"yield_forecast_gpkg"``; or ``{}`` when the period is too short for a forecast.
    """
    from agrimon.products.forecasts import write_forecasts
    from agrimon.yieldcast.forecast import forecast, load_model

    path = yield_model_path(spec)
    assert path is not None
    model = load_model(path)
    names = [str(n) for n in units["name"]]
    calendar = model_calendar(model.card, names)
    chosen = choose_lead(calendar, spec.start, spec.end)
    if chosen is None:
        _log.info(
            "the period does not hold a season's start (and the month before it) up to its "
            "60-day lead: no yield forecast"
        )
        return {}
    year, lead = chosen
    history = model.history[model.history["unit"].isin(names)].reset_index(drop=True)
    data = YieldData(
        yields=history,
        calendar=calendar,
        series=series_table([zonal_series(table)]),
        static=pd.DataFrame(index=pd.Index(names, dtype=str, name="unit")),
        crop=model.crop,
        country=model.country,
        source=f"monitor run {spec.aoi.name} {spec.period}",
    )
    out = forecast(model, data, year, lead)
    lead_day = pd.Timestamp(lead_date(season_bounds(calendar, [year]), lead).max()).date()
    out["issued"] = min(spec.end, lead_day)
    paths = write_forecasts(
        folder, out, units.rename(columns={"name": "unit"}), stem=STEM, gpkg=gpkg
    )
    return {f"{STEM}_{p.suffix.lstrip('.')}": p for p in paths if p != gpkg}


def model_calendar(card: dict[str, object], units: list[str]) -> pd.DataFrame:
    """Each unit's calendar from the model's card (its regional calendar for new units)."""
    raw = card.get("calendar", {})
    assert isinstance(raw, dict)
    known = raw.get("units", {})
    regional = raw.get("regional", {})
    assert isinstance(known, dict) and isinstance(regional, dict)
    rows = [{"unit": u, **(known.get(u) or regional)} for u in units]
    return calendar_table(pd.DataFrame(rows), "the yield model's card")
