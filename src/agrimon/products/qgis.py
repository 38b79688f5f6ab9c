"""A run's QGIS products: a style for every product and one project that opens them all.

:func:`write_qgis_products` is the one call a run makes once its rasters and vectors are
written: a ``.qml`` beside every raster (and beside a GeoJSON twin of a vector layer), each
GeoPackage layer's style stored as its default in the GeoPackage, and ``<stem>.qgz`` with
every product grouped, styled and in the run's CRS.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pyogrio
import rasterio

from agrimon.indices import phenology
from agrimon.products.cog import Layer
from agrimon.products.project import GROUPS, ProjectLayer, write_project
from agrimon.products.styles import raster_qml, store_gpkg_styles, vector_qml, write_qml
from agrimon.products.symbology import (
    VECTOR_SYMBOLOGY,
    Categorized,
    Graduated,
    Outline,
    StyleContext,
    VectorSymbology,
    raster_symbology,
    vector_symbology,
)

_log = logging.getLogger(__name__)

#: Season metrics of the phenology (``<index>_<metric>`` rasters).
SEASON_METRICS = phenology.LAYER_METRICS
#: Vector layers' groups, by the name their style goes by.
VECTOR_GROUPS = {
    "aoi": "Zones and AOI",
    "zones": "Zones and AOI",
    "zones_outline": "Zones and AOI",
    "invasive_polygons": "Bush encroachment",
    "invasive_change_polygons": "Change",
    "yield_forecast": "Yield",
}


def raster_group(name: str) -> str:
    """The layer-tree group of the raster product ``name`` (a zone suffix allowed).

    ``clear_count`` goes with the vegetation indices: it says how many observations each
    median rests on.
    """
    if name.startswith("invasive_change") or "_anomaly" in name:
        return "Change"
    if name.startswith("invasive_"):
        return "Bush encroachment"
    if name.startswith("yield"):
        return "Yield"
    _, _, metric = name.partition("_")
    if any(metric == m or metric.startswith(m + "_") for m in SEASON_METRICS):
        return "Season metrics"
    return "Vegetation indices"


def vector_group(name: str) -> str:
    """The layer-tree group of the vector layer whose style goes by ``name``."""
    for key in sorted(VECTOR_GROUPS, key=len, reverse=True):
        if name == key or name.startswith(key + "_"):
            return VECTOR_GROUPS[key]
    return "Zones and AOI"


def write_qgis_products(
    folder: Path,
    *,
    stem: str,
    epsg: int,
    extent: tuple[float, float, float, float],
    rasters: Mapping[str, tuple[Path, Layer]],
    vectors: Mapping[str, tuple[Path, str]],
    context: StyleContext,
    titles: Mapping[str, str] | None = None,
) -> Path:
    """Style every product of a run folder and write the run's QGIS project.

    Args:
        folder: The run's product folder (the project and every product live in it).
        stem: File stem of the project: ``<stem>.qgz``.
        epsg: The run's UTM CRS (the project CRS).
        extent: Initial map view ``(xmin, ymin, xmax, ymax)`` in that CRS (the AOI's bounds).
        rasters: Product name → (its COG in ``folder``, its :class:`Layer`).
        vectors: Name the layer's style goes by (``aoi``, ``zones`` or ``zones_outline``,
            ``invasive_polygons``, …; the layer name will do) → (GeoPackage, layer name
            inside it). Zones without the encroached share are drawn as outlines. A layer
            without geometry (``zonal_stats``) or without a style is left out of the map.
        context: The run's season, dates and classes.
        titles: Layer names shown in QGIS by product or style name; the legend titles of
            the symbology by default.

    Returns:
        The project, ``folder / f"{stem}.qgz"``.
    """
    titles = titles or {}
    layers: list[ProjectLayer] = []
    by_file: dict[Path, dict[str, str]] = defaultdict(dict)
    raster_stems = {path.stem for path, _ in rasters.values()}
    for name, (gpkg, table) in vectors.items():
        info = pyogrio.read_info(gpkg, layer=table, force_total_bounds=True)
        if not info.get("geometry_type"):
            continue  # an attribute table (zonal_stats): nothing to draw
        sym = _vector_style(name, list(info["fields"]))
        if sym is None:
            _log.warning("no map style for vector layer %s: left out of the QGIS project", name)
            continue
        qml = vector_qml(sym)
        by_file[gpkg][table] = qml
        twin = folder / f"{table}.geojson"
        # A raster of the same stem owns <stem>.qml: QGIS could not tell the two apart.
        if twin.exists() and table not in raster_stems:
            write_qml(twin, qml)
        layers.append(
            ProjectLayer(
                name=titles.get(name, sym.title),
                path=os.path.relpath(gpkg, folder),
                kind="vector",
                layer=table,
                group=vector_group(name),
                qml=qml,
                epsg=_epsg(info["crs"], gpkg),
                extent=_bounds(info["total_bounds"]),
                visible=isinstance(sym, Outline),
            )
        )
    for gpkg, styles in by_file.items():
        store_gpkg_styles(gpkg, styles)
    for name, (path, layer) in rasters.items():
        drawn = raster_symbology(layer, context)
        qml = raster_qml(drawn)
        write_qml(path, qml)
        with rasterio.open(path) as src:
            raster_epsg = src.crs.to_epsg() if src.crs is not None else None
            bounds = _bounds(src.bounds)
        title = titles.get(name, drawn.title)
        if name not in titles and name.startswith(layer.name + "_"):
            title = f"{title} ({name.removeprefix(layer.name + '_')})"  # the UTM zone
        layers.append(
            ProjectLayer(
                name=title,
                path=os.path.relpath(path, folder),
                kind="raster",
                layer=None,
                group=raster_group(name),
                qml=qml,
                epsg=raster_epsg or epsg,
                extent=bounds,
                visible=False,
            )
        )
    out = folder / f"{stem}.qgz"
    return write_project(out, title=stem, epsg=epsg, extent=extent, layers=on_open(layers))


def _vector_style(name: str, fields: list[str]) -> VectorSymbology | None:
    """The style of vector layer ``name``; its outline style if the layer lacks the field.

    ``zones`` of a run without an encroachment map have no ``encroached_percent``: they
    are drawn as ``zones_outline``.
    """
    try:
        sym = vector_symbology(name)
    except KeyError:
        return None
    if isinstance(sym, Graduated | Categorized) and sym.field not in fields:
        return VECTOR_SYMBOLOGY.get(f"{name}_outline")
    return sym


def on_open(layers: list[ProjectLayer]) -> list[ProjectLayer]:
    """The layers in project order, with what is switched on when the project opens.

    A filled layer hides every layer below it, so besides the outlines (the AOI first, and
    zones without a map) one headline layer is on: the first of the topmost group below the
    zones (the encroachment polygons of a run that maps them, else the first index median).
    The rest is one tick away in the layers panel.
    """
    # The AOI outline on top, then the zones; otherwise the order given.
    rank = {"aoi": 0, "zones": 1}
    ordered = sorted(
        layers,
        key=lambda lr: (
            GROUPS.index(lr.group) if lr.group in GROUPS else len(GROUPS),
            rank.get(lr.layer or "", 2),
        ),
    )
    headline = next((lr for lr in ordered if lr.group != GROUPS[0]), None)
    return [replace(lr, visible=lr.visible or lr is headline) for lr in ordered]


def _bounds(values: Sequence[float]) -> tuple[float, float, float, float]:
    xmin, ymin, xmax, ymax = (float(v) for v in values)
    return xmin, ymin, xmax, ymax


def _epsg(crs: str | None, path: Path) -> int:
    """EPSG code of a layer's CRS text (``"EPSG:32734"``)."""
    if crs and crs.upper().startswith("EPSG:"):
        return int(crs.split(":", 1)[1])
    raise ValueError(f"{path}: a layer's CRS {crs!r} is not an EPSG code")
