"""Yield-forecast products: one table and two vector files of the forecasts per unit and lead.

For the units (fields or districts) that have a forecast, :func:`write_forecasts` writes

* ``<stem>.csv``: one row per unit, harvest year and lead, with the forecast and its 80 %
  interval (t/ha), the model that made it and the date of the data it uses (and any other
  column of the forecasts, such as ``history``); with polygon
  units also ``area_ha`` (computed in a metric CRS) and ``production_t``, the expected
  production (forecast × area);
* ``<stem>.geojson``: the same rows as features, RFC 7946 (EPSG:4326, 7 decimals), written
  by the polygons' own GeoJSON writer (:func:`agrimon.products.vectors.write_geojson`);
* ``<stem>.gpkg``: the same rows in layer :data:`LAYER`, in the metric CRS of the areas.

Each file is written under a temporary name and renamed into place once complete; the run's
staged product folder (:mod:`agrimon.products.folder`) makes the set appear whole or not at
all.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from agrimon.grid import utm_epsg
from agrimon.products.vectors import add_layer, replacing, write_geojson, write_geopackage
from agrimon.yieldcast.data import listing
from agrimon.yieldcast.features import LEADS

#: GeoPackage layer of the forecasts.
LAYER = "yield_forecast"
#: Columns the forecasts table must have.
FORECAST_COLUMNS: tuple[str, ...] = (
    "unit",
    "year",
    "lead",
    "forecast",
    "p10",
    "p90",
    "model",
    "model_version",
    "issued",
)
_M2_PER_HA = 10_000.0
_POLYGONAL = ("Polygon", "MultiPolygon")


def write_forecasts(
    folder: Path,
    forecasts: pd.DataFrame,
    units: gpd.GeoDataFrame,
    *,
    unit_column: str = "unit",
    stem: str = "yield_forecast",
    gpkg: Path | None = None,
) -> list[Path]:
    """Write the yield forecasts of the units as CSV, GeoJSON and GeoPackage.

    Only units with a forecast are written; units of ``units`` without one are left out.

    Args:
        folder: Folder of the products (the run's staged folder; created if needed).
        forecasts: One row per unit, harvest year and lead: ``unit``, ``year`` (harvest
            year), ``lead`` (``"60d"``, ``"90d"`` or ``"eos"``), ``forecast``, ``p10``,
            ``p90`` (t/ha; the bounds may be missing), ``model`` (the chosen model's name),
            ``model_version`` (text) and ``issued`` (the date of the latest data the forecast
            uses: a date, a timestamp or ``YYYY-MM-DD`` text). Other columns are ignored.
        units: The units' geometries (any CRS) and their ids in ``unit_column``; other
            columns are ignored.
        unit_column: Column of ``units`` holding the unit ids.
        stem: Name of the files, without extension.
        gpkg: A GeoPackage to add the layer :data:`LAYER` to (a run's GeoPackage of every
            vector layer) instead of writing ``<stem>.gpkg``.

    Returns:
        The files written: ``<stem>.csv``, ``<stem>.geojson``, and ``<stem>.gpkg`` or
        ``gpkg``.

    Raises:
        ValueError: A column is missing, a value is invalid (unknown lead, missing or
            non-finite forecast, p10 above p90, no issue date), a unit and lead appear twice
            for one year, a forecast's unit has no geometry in ``units``, a unit id appears
            twice in ``units``, ``units`` has no CRS, or there is no forecast at all.
        ProductError: A file cannot be written.
    """
    table = _forecast_table(forecasts)
    shapes = _unit_shapes(units, unit_column)
    missing = sorted(set(table["unit"]) - set(shapes.index))
    if missing:
        raise ValueError(
            f"forecast unit(s) {listing(missing)} have no geometry in the units "
            f"(column {unit_column!r}): add their polygons or leave out their forecasts"
        )
    metric = metric_crs(shapes)
    geometry = gpd.GeoSeries(shapes.loc[table["unit"]].to_numpy(), crs=shapes.crs).to_crs(metric)
    if all(t in _POLYGONAL for t in geometry.geom_type):
        table["area_ha"] = geometry.area.to_numpy() / _M2_PER_HA
        table["production_t"] = table["forecast"] * table["area_ha"]
    frame = gpd.GeoDataFrame(table, geometry=geometry.to_numpy(), crs=metric)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{stem}.csv"
    _write_csv(table, csv_path)
    geojson_path = write_geojson(frame, folder / f"{stem}.geojson")
    if gpkg is None:
        gpkg_path = write_geopackage(frame, folder / f"{stem}.gpkg", layer=LAYER)
    else:
        gpkg_path = add_layer(frame, gpkg, layer=LAYER)
    return [csv_path, geojson_path, gpkg_path]


def metric_crs(units: gpd.GeoSeries | gpd.GeoDataFrame) -> CRS:
    """The CRS areas are computed in: the units' own when projected in metres, else UTM.

    The UTM zone is that of the centre of the units' lon/lat bounds, as the run's grid
    chooses it (:func:`agrimon.grid.utm_epsg`).

    Raises:
        ValueError: The units have no CRS.
    """
    crs = units.crs
    if crs is None:
        raise ValueError("the units have no CRS: set one (e.g. units.set_crs(4326))")
    if crs.is_projected and all(a.unit_name in ("metre", "meter") for a in crs.axis_info[:2]):
        return CRS.from_user_input(crs)
    west, south, east, north = units.to_crs(4326).total_bounds
    return CRS.from_epsg(utm_epsg((west + east) / 2.0, (south + north) / 2.0))


def _forecast_table(forecasts: pd.DataFrame) -> pd.DataFrame:
    """The forecast columns, checked and typed, sorted by unit, year and lead."""
    lacking = [c for c in FORECAST_COLUMNS if c not in forecasts.columns]
    if lacking:
        raise ValueError(
            f"forecasts lack column(s) {', '.join(lacking)}; they need "
            f"{', '.join(FORECAST_COLUMNS)}"
        )
    if forecasts.empty:
        raise ValueError("there are no forecasts to write")
    raw = forecasts.reset_index(drop=True)
    table = pd.DataFrame(
        {
            "unit": raw["unit"].astype(str).str.strip(),
            "year": _whole(raw["year"], "year"),
            "lead": raw["lead"].astype(str),
            "forecast": _floats(raw["forecast"], "forecast"),
            "p10": _floats(raw["p10"], "p10"),
            "p90": _floats(raw["p90"], "p90"),
            "model": raw["model"].astype(str),
            "model_version": raw["model_version"].astype(str),
            "issued": _dates(raw["issued"]),
        }
    )
    # Optional extras (e.g. a unit's years of history in the model) are kept as given.
    for extra in (c for c in raw.columns if c not in FORECAST_COLUMNS):
        table[str(extra)] = raw[extra].to_numpy()
    unknown = sorted(set(table["lead"]) - set(LEADS))
    if unknown:
        raise ValueError(f"unknown lead(s) {listing(unknown)}: use {', '.join(LEADS)}")
    if not np.isfinite(table["forecast"]).all():
        bad = table.loc[~np.isfinite(table["forecast"]), ["unit", "lead"]]
        raise ValueError(
            f"forecast missing or not finite for {listing(_pairs(bad))}: leave out the rows "
            "of units without a forecast"
        )
    for bound in ("p10", "p90"):
        if np.isinf(table[bound]).any():
            raise ValueError(f"{bound} must be finite or missing")
    inverted = table["p10"] > table["p90"]
    if inverted.any():
        raise ValueError(
            f"p10 is above p90 for {listing(_pairs(table.loc[inverted, ['unit', 'lead']]))}"
        )
    twice = table.duplicated(["unit", "year", "lead"], keep=False)
    if twice.any():
        keys = table.loc[twice, ["unit", "year", "lead"]].drop_duplicates()
        raise ValueError(
            "more than one forecast for "
            + listing(f"{u} {y} {lead}" for u, y, lead in keys.itertuples(index=False))
            + ": keep one row per unit, year and lead"
        )
    order = table["lead"].map({lead: k for k, lead in enumerate(LEADS)})
    return (
        table.assign(_order=order)
        .sort_values(["unit", "year", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _unit_shapes(units: gpd.GeoDataFrame, unit_column: str) -> gpd.GeoSeries:
    """The units' non-empty geometries indexed by unit id (text)."""
    if unit_column not in units.columns:
        raise ValueError(
            f"units lack the unit id column {unit_column!r}; they have "
            f"{', '.join(map(str, units.columns))}: pass unit_column"
        )
    if units.crs is None:
        raise ValueError("the units have no CRS: set one (e.g. units.set_crs(4326))")
    ids = units[unit_column].astype(str).str.strip()
    twice = ids[ids.duplicated(keep=False)]
    if not twice.empty:
        raise ValueError(
            f"unit id(s) {listing(sorted(set(twice)))} appear more than once in the units: "
            "dissolve them into one geometry each"
        )
    geometry = gpd.GeoSeries(units.geometry.to_numpy(), index=pd.Index(ids), crs=units.crs)
    shapes = geometry.to_numpy()
    return geometry[~shapely.is_missing(shapes) & ~shapely.is_empty(shapes)]


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` as CSV under a temporary name beside ``path``; rename it into place."""
    with replacing(path) as temporary:
        table.to_csv(temporary, index=False)


def _floats(column: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    if (values.isna() & column.notna()).any():
        raise ValueError(f"{name} must hold numbers (t/ha)")
    return values


def _whole(column: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    if not (np.isfinite(values) & (values == np.round(values))).all():
        raise ValueError(f"{name} must hold whole harvest years such as 2024")
    return values.astype("int64")


def _dates(column: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` text of dates, timestamps or date text."""
    try:
        dates = pd.to_datetime(pd.Series(column, dtype=object), format="mixed")
    except (TypeError, ValueError) as err:
        raise ValueError(f"issued must hold dates ({err})") from err
    if dates.isna().any():
        raise ValueError("issued is missing: give the date of the data each forecast uses")
    return dates.dt.strftime("%Y-%m-%d").astype(object)


def _pairs(keys: pd.DataFrame) -> list[str]:
    return [f"{u} {lead}" for u, lead in keys.drop_duplicates().itertuples(index=False)]


__all__ = ["FORECAST_COLUMNS", "LAYER", "metric_crs", "write_forecasts"]
