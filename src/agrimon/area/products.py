"""The monitor's area products of its encroachment map: polygons, map areas, assessment.

Called once the class, probability and uncertainty COGs of every UTM zone are written:

* ``invasive_polygons<zone>.geojson`` (RFC 7946) and the layer ``invasive_polygons<zone>``
  of the run's GeoPackage (in the map's CRS): one polygon per patch, sieved to the minimum
  mapping unit, merged across tile seams;
* ``invasive_map_areas.csv``: per AOI zone and class, the map's pixel-count area — biased by
  the map's errors, and labelled so;
* with a reference sample (``--reference``), ``assessment.json`` / ``assessment.csv``: the
  area-adjusted estimates with their 95 % confidence intervals, in total and per zone.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np

from agrimon.area import classmap as cm
from agrimon.area.fieldcheck import assess, write_assessment
from agrimon.area.polygons import vectorise, write_polygons
from agrimon.errors import ConfigError
from agrimon.products.folder import writing
from agrimon.products.vectors import add_layer

MAP_AREAS_CSV = "invasive_map_areas.csv"
POLYGONS_STEM = "invasive_polygons"


def area_products(
    folder: Path,
    maps: Mapping[str, Mapping[str, Path]],
    *,
    zones: gpd.GeoDataFrame,
    mmu_ha: float,
    reference: Path | None,
    gpkg: Path,
) -> dict[str, Path]:
    """Write the area products of the maps into the run's (staged) folder.

    Args:
        folder: The run's folder.
        maps: Per UTM-zone suffix (``""`` for a single zone), the files of the class,
            probability and uncertainty layers by layer name.
        zones: The AOI's zones (``name`` column).
        mmu_ha: Minimum mapping unit of the polygons.
        reference: A filled-in field-check sample, or None.
        gpkg: The run's GeoPackage, which gets the polygons as layers.

    Returns:
        The files by table key (``<kind>@<suffix>`` for per-UTM-zone files).
    """
    from agrimon.invasive.products import (
        INVASIVE_CLASS,
        INVASIVE_PROBABILITY,
        INVASIVE_UNCERTAINTY,
    )

    out: dict[str, Path] = {}
    counts: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    for suffix, files in maps.items():
        class_path = files[INVASIVE_CLASS.name]
        frame = vectorise(
            class_path,
            probability_path=files.get(INVASIVE_PROBABILITY.name),
            uncertainty_path=files.get(INVASIVE_UNCERTAINTY.name),
            mmu_ha=mmu_ha,
        )
        geojson = folder / f"{POLYGONS_STEM}{suffix}.geojson"
        write_polygons(frame, geojson)
        add_layer(frame, gpkg, layer=f"{POLYGONS_STEM}{suffix}")
        out[f"invasive_polygons_geojson@{suffix}"] = geojson
        cmap = cm.open_class_map(class_path)
        classes = cmap.classes
        # Zone areas add up over the UTM zones: each pixel lies in one raster only.
        part = cm.zone_class_counts(cmap, zones) * cmap.pixel_area_ha
        counts = part if counts is None else counts + part
    if counts is not None:
        out["invasive_map_areas"] = write_map_areas(
            folder / MAP_AREAS_CSV, zones["name"].astype(str).tolist(), classes, counts
        )
    if reference is not None:
        if len(maps) != 1:
            raise ConfigError(
                f"--reference {reference}: the AOI spans {len(maps)} UTM zones; assess each "
                "zone's map with 'agrimon assess' instead"
            )
        (files,) = maps.values()
        result = assess(files[INVASIVE_CLASS.name], reference, zones=zones)
        paths = write_assessment(result, folder)
        out["assessment_json"], out["assessment_csv"] = paths["json"], paths["csv"]
    return out


def write_map_areas(
    path: Path, zones: list[str], classes: tuple[str, ...], hectares: np.ndarray
) -> Path:
    """Per zone and class, the map's pixel-count area (biased by its errors)."""
    with writing(path), path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["zone", "class", "map_area_ha_biased", "map_area_percent"])
        for z, zone in enumerate(zones):
            total = float(hectares[z].sum())
            for k, name in enumerate(classes):
                share = 100.0 * hectares[z, k] / total if total > 0 else float("nan")
                writer.writerow([zone, name, f"{hectares[z, k]:.4f}", f"{share:.4f}"])
    return path
