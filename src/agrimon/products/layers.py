"""The run's GeoPackage: every vector layer of a run in one file, opened styled in QGIS.

Layers: ``aoi`` (the outline), ``zones`` (one polygon per zone with its area and, when the
run maps encroachment, the encroached share by pixel count), ``zonal_stats`` (the per-zone
index time series, an attribute table), and the layers other stages add: encroachment
polygons, yield forecasts, change polygons. All in the run's UTM CRS.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry.base import BaseGeometry

from agrimon.products.vectors import add_layer

_M2_PER_HA = 10_000.0
#: The target class whose share of each zone the ``zones`` layer carries.
ENCROACHED = "encroached"


def run_stem(aoi_name: str, period: str) -> str:
    """File stem of a run's project and GeoPackage: ``<aoi>_<start>_<end>``."""
    return f"{aoi_name}_{period}"


def zone_frame(
    zones: gpd.GeoDataFrame, epsg: int, map_areas: pd.DataFrame | None = None
) -> gpd.GeoDataFrame:
    """The ``zones`` layer: name, area and, from the map areas, the encroached share.

    Args:
        zones: The AOI's zones (``name``, any CRS).
        epsg: The run's UTM CRS.
        map_areas: ``invasive_map_areas.csv`` as a frame (``zone``, ``class``,
            ``map_area_ha_biased``, ``map_area_percent``), or None.
    """
    frame = gpd.GeoDataFrame(
        {"name": zones["name"].astype(str).to_numpy()},
        geometry=zones.geometry.to_crs(epsg).to_numpy(),
        crs=epsg,
    )
    frame["area_ha"] = frame.geometry.area / _M2_PER_HA
    if map_areas is not None:
        target = map_areas[map_areas["class"] == ENCROACHED].set_index("zone")
        frame["encroached_ha"] = frame["name"].map(target["map_area_ha_biased"]).astype(float)
        frame["encroached_percent"] = frame["name"].map(target["map_area_percent"]).astype(float)
    return frame


def write_base_layers(
    gpkg: Path,
    *,
    aoi_name: str,
    aoi: BaseGeometry,
    zones: gpd.GeoDataFrame,
    epsg: int,
    zonal_table: pd.DataFrame,
    map_areas: Path | None = None,
) -> dict[str, str]:
    """Add the ``aoi``, ``zones`` and ``zonal_stats`` layers to the run's GeoPackage.

    Args:
        gpkg: The run's GeoPackage (created if missing).
        aoi_name: The AOI's name.
        aoi: The AOI outline in lon/lat.
        zones: The AOI's zones.
        epsg: The run's UTM CRS (the first zone's, for an AOI across a zone border).
        zonal_table: The per-zone index time series.
        map_areas: ``invasive_map_areas.csv``, when the run maps encroachment.

    Returns:
        The layers with a map style, by the name their style goes by (``zones`` graduated
        by the encroached share, or ``zones_outline`` without a map): the layer's name.
    """
    outline = gpd.GeoDataFrame({"name": [aoi_name]}, geometry=[aoi], crs=4326).to_crs(epsg)
    outline["area_ha"] = outline.geometry.area / _M2_PER_HA
    add_layer(outline, gpkg, layer="aoi")
    areas = pd.read_csv(map_areas) if map_areas is not None else None
    add_layer(zone_frame(zones, epsg, areas), gpkg, layer="zones")
    table = zonal_table.copy()
    if "time" in table and pd.api.types.is_datetime64_any_dtype(table["time"]):
        table["time"] = table["time"].dt.strftime("%Y-%m-%d")
    add_layer(pd.DataFrame(table), gpkg, layer="zonal_stats")
    return {"aoi": "aoi", ("zones" if areas is not None else "zones_outline"): "zones"}
