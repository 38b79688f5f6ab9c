"""STAC catalog of a run's products (self-contained, relative links)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

import pystac
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from agrimon.products.cog import Layer


@dataclass(frozen=True, eq=False)
class ZoneProducts:
    """The product files of one UTM zone of a run."""

    epsg: int
    footprint: BaseGeometry  # lon/lat
    shape: tuple[int, int]
    transform: Sequence[float]
    files: Mapping[str, Path]  # layer name -> file inside the run folder


def write_catalog(
    folder: Path,
    *,
    run_id: str,
    title: str,
    start: date,
    end: date,
    zones: Sequence[ZoneProducts],
    layers: Mapping[str, Layer],
    tables: Mapping[str, Path] | None = None,
    aoi: BaseGeometry | None = None,
) -> Path:
    """Write ``catalog.json`` with one item per zone and one asset per product file.

    Args:
        folder: The run folder (products already in it).
        run_id: Catalog id.
        title: Catalog title.
        start: First day of the period.
        end: Last day of the period.
        zones: Products per UTM zone.
        layers: Description of each product by name.
        tables: Per-zone tables by format (``parquet``, ``csv``, ``gpkg``), listed in one
            more item covering ``aoi``.
        aoi: The AOI in lon/lat (footprint of the tables' item).

    Returns:
        Path of ``catalog.json``.
    """
    catalog = pystac.Catalog(id=run_id, description=title, title=title)
    for zone in zones:
        geom = mapping(zone.footprint)
        item = pystac.Item(
            id=f"{run_id}-{zone.epsg}",
            geometry=geom,
            bbox=list(zone.footprint.bounds),
            datetime=None,
            start_datetime=datetime.combine(start, time.min, tzinfo=UTC),
            end_datetime=datetime.combine(end, time.max, tzinfo=UTC),
            properties={"agrimon:period": f"{start.isoformat()}/{end.isoformat()}"},
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.epsg = zone.epsg
        proj.shape = list(zone.shape)
        proj.transform = list(zone.transform)
        for name, path in zone.files.items():
            layer = layers[name]
            item.add_asset(
                name,
                pystac.Asset(
                    href=str(path.resolve()),
                    media_type=pystac.MediaType.COG,
                    title=layer.title,
                    roles=["data"],
                    extra_fields={"agrimon:units": layer.units},
                ),
            )
        catalog.add_item(item)
    if tables and aoi is not None:
        catalog.add_item(_tables_item(run_id, start, end, tables, aoi))
    catalog.normalize_hrefs(str(folder.resolve() / "catalog.json"))
    # Relative asset links keep the folder valid after it is renamed into place or copied.
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


#: Asset key, media type and title of each table the tables item lists, by its key.
_TABLE_TYPES = {
    "parquet": (
        "zonal_stats_parquet",
        "application/vnd.apache.parquet",
        "Per-zone index time series (Parquet)",
    ),
    "csv": ("zonal_stats_csv", "text/csv", "Per-zone index time series (CSV)"),
    "gpkg": (
        "zonal_stats_gpkg",
        "application/geopackage+sqlite3",
        "Per-zone index time series with zone polygons",
    ),
    "invasive_accuracy": (
        "invasive_accuracy",
        "application/json",
        "Encroachment map scored against the demo truth (demo runs)",
    ),
    "invasive_polygons_geojson": (
        "invasive_polygons_geojson",
        "application/geo+json",
        "Encroachment polygons (minimum mapping unit, lon/lat)",
    ),
    "invasive_polygons_gpkg": (
        "invasive_polygons_gpkg",
        "application/geopackage+sqlite3",
        "Encroachment polygons (minimum mapping unit, map CRS)",
    ),
    "invasive_map_areas": (
        "invasive_map_areas",
        "text/csv",
        "Map (pixel-count) area per zone and class: biased by the map's errors",
    ),
    "assessment_json": (
        "assessment",
        "application/json",
        "Area-adjusted estimates and accuracy with 95 % confidence intervals",
    ),
    "assessment_csv": (
        "assessment_csv",
        "text/csv",
        "Area-adjusted estimates and accuracy per zone and class (CSV)",
    ),
    "yield_forecast_csv": (
        "yield_forecast_csv",
        "text/csv",
        "Yield forecast per field or region with its 80 % interval (CSV)",
    ),
    "yield_forecast_geojson": (
        "yield_forecast_geojson",
        "application/geo+json",
        "Yield forecast per field or region with its 80 % interval (lon/lat)",
    ),
    "yield_forecast_gpkg": (
        "yield_forecast_gpkg",
        "application/geopackage+sqlite3",
        "Yield forecast per field or region with its 80 % interval (map CRS)",
    ),
}


def _tables_item(
    run_id: str, start: date, end: date, tables: Mapping[str, Path], aoi: BaseGeometry
) -> pystac.Item:
    """An item for the per-zone tables, with one asset per format."""
    item = pystac.Item(
        id=f"{run_id}-zones",
        geometry=mapping(aoi),
        bbox=list(aoi.bounds),
        datetime=None,
        start_datetime=datetime.combine(start, time.min, tzinfo=UTC),
        end_datetime=datetime.combine(end, time.max, tzinfo=UTC),
        properties={"agrimon:period": f"{start.isoformat()}/{end.isoformat()}"},
    )
    for fmt, path in tables.items():
        # "kind@suffix": one file per UTM zone of a kind, e.g. polygons "@_33S".
        kind, _, suffix = fmt.partition("@")
        key, media_type, title = _TABLE_TYPES[kind]
        item.add_asset(
            key + suffix,
            pystac.Asset(
                href=str(path.resolve()), media_type=media_type, title=title, roles=["data"]
            ),
        )
    return item
