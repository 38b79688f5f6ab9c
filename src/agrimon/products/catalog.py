"""STAC catalog of a run's products (self-contained, relative links, every file an asset).

The catalog follows STAC 1.1 with the projection v2.0.0, raster v1.1.0, file v2.1.0, eo v1.1.0
and classification v1.1.0 extensions (the versions whose schemas validate it offline, see
``tests/stac_offline.py``):

* one item per UTM zone whose assets are the zone's COGs, each with ``raster:bands`` (data
  type, nodata, unit, resolution and the statistics stored in the COG), class rasters with
  ``classification:classes`` too, and ``eo:cloud_cover`` where the scenes' cloud cover is known;
* one ``-zones`` item for the tables passed in (their asset keys are stable: readers use them);
* one ``-run`` item for every other file found in the folder (styles, quicklooks, report, QGIS
  project, sidecars...), typed by its suffix, so that no product is left out of the catalog.

Every asset has ``file:size`` and ``file:checksum`` (a SHA-256 multihash).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pystac
import rasterio
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from agrimon.products.cog import Layer, read_statistics
from agrimon.products.manifest import MANIFEST_JSON, sha256_file

#: Extension schemas the catalog declares (those ``tests/stac_offline.py`` validates against).
PROJECTION_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
# pystac writes classification v2.0.0; v1.1.0 is the version whose schema is held offline.
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"

#: Multihash prefix of a SHA-256 digest: function code 0x12, length 0x20 (32 bytes).
SHA256_MULTIHASH = "1220"


@dataclass(frozen=True, eq=False)
class ZoneProducts:
    """The product files of one UTM zone of a run.

    Attributes:
        epsg: EPSG code of the zone's CRS.
        footprint: Footprint in lon/lat.
        shape: Rows and columns of the zone's rasters.
        transform: First six affine coefficients of the zone's rasters.
        files: Layer name -> COG inside the run folder.
        cloud_cover: Mean cloud cover (percent) of the source scenes the zone's composites
            were made from (:func:`mean_cloud_cover`); ``None`` when unknown.
    """

    epsg: int
    footprint: BaseGeometry  # lon/lat
    shape: tuple[int, int]
    transform: Sequence[float]
    files: Mapping[str, Path]
    cloud_cover: float | None = None


def mean_cloud_cover(values: Iterable[float | None]) -> float | None:
    """Mean of the known cloud covers (percent) of scenes, ``None`` when none is known."""
    known = [float(v) for v in values if v is not None and math.isfinite(v)]
    return round(sum(known) / len(known), 2) if known else None


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
    manifest: str | None = MANIFEST_JSON,
) -> Path:
    """Write ``catalog.json`` listing every file of ``folder`` as an asset of some item.

    Call it when every product is in the folder: files written later are not listed
    (except the manifest, which is linked from the catalog).

    Args:
        folder: The run folder (products already in it).
        run_id: Catalog id, and the prefix of the item ids.
        title: Catalog title.
        start: First day of the period.
        end: Last day of the period.
        zones: Products per UTM zone.
        layers: Description of each product by name.
        tables: Tables and vectors by kind (``parquet``, ``csv``, ``gpkg``,
            ``yield_forecast_gpkg``, ... and ``kind@suffix`` for one file per UTM zone),
            listed under stable asset keys in one more item covering ``aoi``.
        aoi: The AOI in lon/lat (footprint of the tables' and the run's items; the union of
            the zones' footprints without it).
        manifest: Name of the provenance manifest written after the catalog: it is left out
            of the assets (its checksum cannot be known yet) and linked from the catalog;
            ``None`` for a run without one.

    Returns:
        Path of ``catalog.json``.
    """
    root = folder.resolve()
    catalog = pystac.Catalog(id=run_id, description=title, title=title)
    span = _Span(start, end)
    footprint = aoi if aoi is not None else _union([z.footprint for z in zones])
    for zone in zones:
        catalog.add_item(_zone_item(run_id, span, zone, layers))
    if tables:
        catalog.add_item(_tables_item(run_id, span, tables, footprint))
    listed = {Path(a.href).resolve() for item in catalog.get_items() for a in item.assets.values()}
    skip = {"catalog.json", *([manifest] if manifest else [])}
    others = [
        p
        for p in _files(root, run_id)
        if p not in listed and p.relative_to(root).as_posix() not in skip
    ]
    if others:
        catalog.add_item(_run_item(run_id, span, root, others, layers, footprint))
    if manifest:
        catalog.add_link(
            pystac.Link(
                rel="describedby",
                target=f"./{manifest}",
                media_type=pystac.MediaType.JSON,
                title="Provenance manifest: inputs, scenes, parameters, code, checksums",
            )
        )
    catalog.normalize_hrefs(str(root / "catalog.json"))
    # Relative asset links keep the folder valid after it is renamed into place or copied.
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


@dataclass(frozen=True)
class _Span:
    start: date
    end: date

    def properties(self) -> dict[str, Any]:
        return {"agrimon:period": f"{self.start.isoformat()}/{self.end.isoformat()}"}

    def item(self, item_id: str, geometry: BaseGeometry | None) -> pystac.Item:
        """An item of the period with ``geometry`` (lon/lat)."""
        return pystac.Item(
            id=item_id,
            geometry=None if geometry is None else mapping(geometry),
            bbox=None if geometry is None else list(geometry.bounds),
            datetime=None,
            start_datetime=datetime.combine(self.start, time.min, tzinfo=UTC),
            end_datetime=datetime.combine(self.end, time.max, tzinfo=UTC),
            properties=self.properties(),
        )


def _union(footprints: Sequence[BaseGeometry]) -> BaseGeometry | None:
    return unary_union(footprints) if footprints else None


def _zone_item(
    run_id: str, span: _Span, zone: ZoneProducts, layers: Mapping[str, Layer]
) -> pystac.Item:
    """The item of one UTM zone: its COGs, described band by band."""
    item = span.item(f"{run_id}-{zone.epsg}", zone.footprint)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg = zone.epsg
    proj.shape = list(zone.shape)
    proj.transform = list(zone.transform)
    if zone.cloud_cover is not None:
        # Of the scenes behind the composites: the composites themselves are cloud-masked.
        item.properties["eo:cloud_cover"] = zone.cloud_cover
        _declare(item, EO_SCHEMA)
    for name, path in zone.files.items():
        layer = layers.get(name)
        asset = pystac.Asset(
            href=str(path.resolve()),
            media_type=pystac.MediaType.COG,
            title=layer.title if layer is not None else name,
            roles=["data"],
        )
        _describe_raster(item, asset, path, with_projection=False)
        item.add_asset(name, asset)
    _add_file_info(item)
    return item


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
    "run_gpkg": (
        "run_gpkg",
        "application/geopackage+sqlite3",
        "Every vector layer of the run in one GeoPackage (AOI, zones, tables, polygons...)",
    ),
}


def _tables_item(
    run_id: str, span: _Span, tables: Mapping[str, Path], footprint: BaseGeometry | None
) -> pystac.Item:
    """An item for the per-zone tables, with one asset per format."""
    item = span.item(f"{run_id}-zones", footprint)
    for fmt, path in tables.items():
        # "kind@suffix": one file per UTM zone of a kind, e.g. polygons "@_33S".
        kind, _, suffix = fmt.partition("@")
        if kind in _TABLE_TYPES:
            key, media_type, title = _TABLE_TYPES[kind]
        else:
            # A kind this table does not know yet is still listed, typed by its suffix.
            key, (media_type, _, title) = kind, _kind_of(path, {})
        item.add_asset(
            key + suffix,
            pystac.Asset(
                href=str(path.resolve()), media_type=media_type, title=title, roles=["data"]
            ),
        )
    _add_file_info(item)
    return item


def _files(folder: Path, run_id: str) -> list[Path]:
    """Every file under ``folder`` but the JSON files of this catalog's own items."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        own_item = (
            len(rel.parts) == 2
            and rel.parts[0].startswith(run_id)
            and rel.name == f"{rel.parts[0]}.json"
        )
        if path.is_file() and not own_item:
            found.append(path)
    return found


#: Media type, roles and title (``{stem}`` and ``{name}`` filled in) by file suffix; the
#: first matching suffix wins, so compound suffixes come first.
_SUFFIX_TYPES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (".aux.xml", "application/xml", ("metadata",), "GDAL metadata of {stem} (category names)"),
    (".tif", "image/tiff; application=geotiff", ("data",), "{title}"),
    (".tiff", "image/tiff; application=geotiff", ("data",), "{title}"),
    (".qml", "application/xml", ("style",), "QGIS style of {title}"),
    (".sld", "application/vnd.ogc.sld+xml", ("style",), "SLD style of {title}"),
    (".png", "image/png", ("overview",), "Quicklook of {title}"),
    (".jpg", "image/jpeg", ("overview",), "Quicklook of {title}"),
    (".jpeg", "image/jpeg", ("overview",), "Quicklook of {title}"),
    (".svg", "image/svg+xml", ("overview",), "Chart: {title}"),
    (".html", "text/html", ("report",), "Report: {title}"),
    (".pdf", "application/pdf", ("report",), "Report: {title}"),
    (".qgz", "application/zip", ("project",), "QGIS project with every product, styled"),
    (".qgs", "application/xml", ("project",), "QGIS project with every product, styled"),
    (".gpkg", "application/geopackage+sqlite3", ("data",), "GeoPackage: {title}"),
    (".geojson", "application/geo+json", ("data",), "GeoJSON: {title}"),
    (".parquet", "application/vnd.apache.parquet", ("data",), "Table: {title}"),
    (".csv", "text/csv", ("data",), "Table: {title}"),
    (".json", "application/json", ("metadata",), "{title}"),
    (".md", "text/markdown", ("metadata",), "{title}"),
    (".txt", "text/plain", ("metadata",), "{title}"),
    (".zip", "application/zip", ("data",), "Archive: {title}"),
)
_ZONE_SUFFIX = re.compile(r"_\d{2}[NS]$")
#: Titles of files known by name.
_NAMED = {"report.html": "Run report: maps, tables and forecasts at a glance"}
#: Asset keys of files known by name, and of the only file of a run with a suffix.
_KEYS = {"report.html": "report"}
_ONLY_KEYS = {".qgz": "qgis_project", ".qgs": "qgis_project"}


def _kind_of(path: Path, layers: Mapping[str, Layer]) -> tuple[str, tuple[str, ...], str]:
    """Media type, roles and title of a file by its name."""
    name = path.name.lower()
    for suffix, media_type, roles, template in _SUFFIX_TYPES:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = path.name[: -len(suffix)]
            # A style or quicklook of a layer takes the layer's title, zone suffix aside.
            layer = layers.get(_ZONE_SUFFIX.sub("", stem)) or layers.get(stem)
            title = layer.title if layer is not None else stem.replace("_", " ")
            title = _NAMED.get(name) or template.format(stem=stem, title=title)
            return media_type, roles, title
    return "application/octet-stream", ("data",), path.name


def _run_item(
    run_id: str,
    span: _Span,
    folder: Path,
    paths: Sequence[Path],
    layers: Mapping[str, Layer],
    footprint: BaseGeometry | None,
) -> pystac.Item:
    """An item for the run's other files, typed by suffix, keyed by their relative path."""
    item = span.item(f"{run_id}-run", footprint)
    suffixes = [p.suffix.lower() for p in paths]
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        only = suffixes.count(path.suffix.lower()) == 1
        # Readers find the report and the project under a fixed key; others by file name.
        key = base = (
            _KEYS.get(rel)
            or (_ONLY_KEYS.get(path.suffix.lower()) if only else None)
            or re.sub(r"[^0-9A-Za-z]+", "_", rel).strip("_")
            or "file"
        )
        n = 1
        while key in item.assets:
            n += 1
            key = f"{base}_{n}"
        media_type, roles, title = _kind_of(path, layers)
        asset = pystac.Asset(href=str(path), media_type=media_type, title=title, roles=list(roles))
        if path.suffix.lower() in (".tif", ".tiff"):
            _describe_raster(item, asset, path, with_projection=True)
        item.add_asset(key, asset)
    _add_file_info(item)
    return item


def _declare(item: pystac.Item, schema: str) -> None:
    if schema not in item.stac_extensions:
        item.stac_extensions.append(schema)


def _describe_raster(
    item: pystac.Item, asset: pystac.Asset, path: Path, *, with_projection: bool
) -> None:
    """``raster:bands`` (and classes, and projection) of a GeoTIFF, read from the file."""
    with rasterio.open(path) as src:
        layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        dtype = src.dtypes[0]
        nodata = src.nodata
        unit = src.units[0] if src.units else None
        res = float(sum(abs(r) for r in src.res) / 2)
        names = src.tags(1).get("CATEGORY_NAMES")
        colours = src.colormap(1) if names and src.colorinterp[0].name == "palette" else {}
        epsg = src.crs.to_epsg() if src.crs is not None else None
        wkt = src.crs.to_wkt() if src.crs is not None else None
        shape, transform = [src.height, src.width], list(src.transform)[:6]
    if layout == "COG":
        asset.media_type = pystac.MediaType.COG
    band: dict[str, Any] = {"data_type": dtype, "spatial_resolution": res}
    if nodata is not None:
        if math.isnan(nodata):
            band["nodata"] = "nan"
        else:
            band["nodata"] = int(nodata) if float(nodata).is_integer() else float(nodata)
    if unit:
        band["unit"] = unit
    stats = read_statistics(path)
    if stats is not None:
        values = {
            "minimum": stats.minimum,
            "maximum": stats.maximum,
            "mean": stats.mean,
            "stddev": stats.stddev,
            "valid_percent": stats.valid_percent,
        }
        band["statistics"] = {k: v for k, v in values.items() if v is not None}
    asset.extra_fields["raster:bands"] = [band]
    _declare(item, RASTER_SCHEMA)
    if names:
        classes = _classes(json.loads(names), colours)
        if classes:
            asset.extra_fields["classification:classes"] = classes
            _declare(item, CLASSIFICATION_SCHEMA)
    if with_projection:
        # Asset-level projection: a raster of the run item need not share a zone's grid.
        if epsg is not None:
            asset.extra_fields["proj:code"] = f"EPSG:{epsg}"
        elif wkt is not None:
            asset.extra_fields["proj:wkt2"] = wkt
        asset.extra_fields["proj:shape"] = shape
        asset.extra_fields["proj:transform"] = transform
        _declare(item, PROJECTION_SCHEMA)


def _classes(names: Sequence[str], colours: Mapping[int, tuple[int, ...]]) -> list[dict[str, Any]]:
    """Classification classes of the named pixel values (unnamed ones, e.g. nodata, left out)."""
    classes = []
    for value, name in enumerate(names):
        if not name:
            continue
        entry: dict[str, Any] = {"value": value, "name": name, "description": name}
        if value in colours:
            red, green, blue = colours[value][:3]
            entry["color_hint"] = f"{red:02X}{green:02X}{blue:02X}"
        classes.append(entry)
    return classes


def _add_file_info(item: pystac.Item) -> None:
    """``file:size`` and ``file:checksum`` (SHA-256 multihash) of every asset of ``item``."""
    for asset in item.assets.values():
        path = Path(asset.href)
        asset.extra_fields["file:size"] = path.stat().st_size
        asset.extra_fields["file:checksum"] = SHA256_MULTIHASH + sha256_file(path)
    if item.assets:
        _declare(item, FILE_SCHEMA)
