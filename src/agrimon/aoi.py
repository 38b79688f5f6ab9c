"""Read, validate and repair areas of interest (AOIs).

An AOI is a vector file with one polygon feature per zone (a field, a farm, a district).
`read_aoi` reads it in any of the supported formats, brings it to lon/lat (EPSG:4326), keeps
the polygon parts, repairs invalid polygons with a warning and checks its size, so that every
later stage can trust `Aoi.zones` and `Aoi.geometry` without checking them again.

Every problem a user can fix raises a subclass of `AoiError` with a one-line message that names
the file, says what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS, Geod
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from agrimon.errors import (
    AoiCoordinateError,
    AoiFormatError,
    AoiGeometryError,
    AoiNotFoundError,
    AoiTooLargeError,
    ConfigError,
)

__all__ = [
    "DEFAULT_AOI",
    "DEFAULT_MAX_AREA_KM2",
    "SUPPORTED_FORMATS",
    "Aoi",
    "AoiRepairedWarning",
    "geodesic_area_km2",
    "read_aoi",
]

DEFAULT_MAX_AREA_KM2: float = 50_000.0
"""Largest AOI `read_aoi` accepts unless told otherwise: a big district, not a country."""

DEFAULT_AOI: Path = Path(__file__).parent / "data" / "grootfontein.geojson"
"""The AOI shipped with the package: about 10 × 10 km of farmland near Grootfontein, Namibia."""

# File suffix -> format name, in the order the error message lists them.
_SUFFIXES: dict[str, str] = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GeoPackage",
    ".shp": "Shapefile",
    ".zip": "zipped Shapefile",
    ".kml": "KML",
    ".kmz": "KML",
}
SUPPORTED_FORMATS: str = (
    "GeoJSON (.geojson, .json), GeoPackage (.gpkg), Shapefile (.shp), "
    "zipped Shapefile (.zip), KML (.kml, .kmz)"
)
"""Human-readable list of the formats `read_aoi` accepts, for messages and docs."""

# Members of a .zip that can hold an AOI; GDAL opens them through /vsizip/.
_ZIP_MEMBER_SUFFIXES = (".shp", ".geojson", ".json", ".gpkg", ".kml")

_WGS84 = Geod(ellps="WGS84")
_POLYGONAL = ("Polygon", "MultiPolygon")


class AoiRepairedWarning(UserWarning):
    """An AOI feature was changed to make it usable (made valid, or dropped as non-polygon)."""


@dataclass(frozen=True, eq=False)
class Aoi:
    """A validated area of interest.

    Attributes:
        name: Slug of the file stem (lowercase ``[a-z0-9_-]``), e.g. ``"grootfontein"``.
        path: The file as given to `read_aoi`.
        zones: One row per polygon feature in file order, EPSG:4326, with columns
            ``zone_id`` (int, 1..n), ``name`` (str) and ``geometry`` (valid Polygon or
            MultiPolygon).
        geometry: Union of all zones in EPSG:4326, a valid Polygon or MultiPolygon.
        area_km2: Geodesic area of `geometry` on the WGS84 ellipsoid, in km².
        sha256: Hex digest of the file's bytes, for the provenance manifest.
    """

    name: str
    path: Path
    zones: gpd.GeoDataFrame
    geometry: BaseGeometry
    area_km2: float
    sha256: str


def geodesic_area_km2(geometry: BaseGeometry) -> float:
    """Return the geodesic area of a lon/lat geometry on the WGS84 ellipsoid.

    Args:
        geometry: Polygonal geometry in lon/lat degrees (EPSG:4326 axis order). Non-polygonal
            geometries have no area and give 0.

    Returns:
        The area in km², always >= 0; holes are subtracted.
    """
    if geometry.is_empty:
        return 0.0
    # pyproj sums signed ring areas, so rings must be consistently oriented (exterior CCW,
    # holes CW) for holes to be subtracted rather than added.
    oriented = shapely.orient_polygons(geometry, exterior_cw=False)
    area_m2, _ = _WGS84.geometry_area_perimeter(oriented)
    return abs(float(area_m2)) / 1e6


def read_aoi(path: str | Path, *, max_area_km2: float = DEFAULT_MAX_AREA_KM2) -> Aoi:
    """Read an AOI file, bring it to EPSG:4326, repair it and check its size.

    Args:
        path: GeoJSON, GeoPackage, Shapefile, zipped Shapefile or KML file with one polygon
            feature per zone. Any CRS; a file without CRS must be in lon/lat.
        max_area_km2: Largest accepted area of the union of all zones, in km².

    Returns:
        The validated `Aoi`.

    Raises:
        AoiNotFoundError: The file does not exist.
        AoiFormatError: The file is not a readable vector file of a supported format.
        AoiGeometryError: The file has no polygon, or a feature has no geometry.
        AoiCoordinateError: The coordinates are not valid lon/lat (no CRS, wrong CRS, swapped).
        AoiTooLargeError: The AOI is larger than `max_area_km2`.
        ConfigError: `max_area_km2` is not a positive number.

    Warns:
        AoiRepairedWarning: A feature was invalid and was repaired, or non-polygon features
            were dropped.
    """
    path = Path(path)
    if not (max_area_km2 > 0 and math.isfinite(max_area_km2)):
        raise ConfigError(
            f"maximum AOI area {max_area_km2!r} km² is not a positive number: "
            "give a limit such as --max-area 50000"
        )
    digest = _sha256(path)
    frame = _read_frame(path)
    frame = _to_lonlat(frame, path)
    zones = _build_zones(frame, path)
    geometry = _polygonal(shapely.union_all(zones.geometry.array))
    if geometry is None:  # pragma: no cover - every zone has area, so their union has too
        raise AoiGeometryError(f"AOI file '{path}' has no area: redraw its polygons")
    area = geodesic_area_km2(geometry)
    if area > max_area_km2:
        raise AoiTooLargeError(
            f"AOI file '{path}' covers {area:,.0f} km², more than the limit of "
            f"{max_area_km2:,.0f} km²: split it into smaller AOIs or raise the limit with "
            f"--max-area {_suggest_limit(area)}"
        )
    return Aoi(
        name=_slug(path),
        path=path,
        zones=zones,
        geometry=geometry,
        area_km2=area,
        sha256=digest,
    )


# --- I/O --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    """Hash the file, raising AoiNotFoundError if it is not there."""
    if not path.exists():
        raise AoiNotFoundError(
            f"AOI file '{path}' does not exist: check the path, or give one of the shipped "
            f"examples such as '{DEFAULT_AOI}'"
        )
    if not path.is_file():
        raise AoiFormatError(
            f"AOI file '{path}' is a folder, not a file: give the vector file itself, "
            f"one of {SUPPORTED_FORMATS}"
        )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_frame(path: Path) -> gpd.GeoDataFrame:
    """Read every layer of the file into one frame, still in the file's CRS."""
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise AoiFormatError(
            f"AOI file '{path}' has an unsupported extension '{path.suffix}': save it as "
            f"one of {SUPPORTED_FORMATS}"
        )
    sources = _zip_sources(path) if suffix == ".zip" else [str(path)]
    frames: list[gpd.GeoDataFrame] = []
    try:
        for source in sources:
            for layer, geometry_type in pyogrio.list_layers(source):
                # Attribute-only tables (e.g. in a GeoPackage) hold no AOI geometry.
                if geometry_type is not None:
                    frames.append(pyogrio.read_dataframe(source, layer=str(layer)))
    except (RuntimeError, ValueError) as err:  # pyogrio's errors derive from RuntimeError
        raise AoiFormatError(
            f"AOI file '{path}' cannot be read as {_SUFFIXES[suffix]} "
            f"(GDAL: {_gdal_reason(err, sources)}): check that it is a complete "
            f"{_SUFFIXES[suffix]} file, or save it as one of {SUPPORTED_FORMATS}"
        ) from err
    if not frames:
        raise AoiGeometryError(
            f"AOI file '{path}' has no polygon features (no layer with geometry): draw the "
            "area as one polygon per zone"
        )
    if len(frames) == 1:
        return frames[0]
    crs = frames[0].crs
    if any(f.crs != crs for f in frames):
        # Layers in different CRSs: bring each to lon/lat (a layer without CRS must be
        # lon/lat already) before joining them.
        frames = [f.to_crs(4326) if f.crs is not None else f.set_crs(4326) for f in frames]
        crs = CRS.from_epsg(4326)
    joined = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(joined, geometry="geometry", crs=crs)


def _zip_sources(path: Path) -> list[str]:
    """Return the /vsizip/ paths of the vector files inside a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise AoiFormatError(
            f"AOI file '{path}' is not a valid zip archive ({_one_line(str(err))}): zip the "
            f"Shapefile's .shp, .shx, .dbf and .prj files, or give one of {SUPPORTED_FORMATS}"
        ) from err
    # Skip macOS resource forks (__MACOSX/, ._name) that zip tools add.
    vectors = sorted(
        m
        for m in members
        if m.lower().endswith(_ZIP_MEMBER_SUFFIXES)
        and "__MACOSX" not in m
        and not Path(m).name.startswith("._")
    )
    if not vectors:
        raise AoiFormatError(
            f"AOI file '{path}' contains no .shp file: zip the Shapefile's .shp, .shx, .dbf "
            f"and .prj files, or give one of {SUPPORTED_FORMATS}"
        )
    return [f"/vsizip/{path.resolve()}/{m}" for m in vectors]


# --- pure checks and repairs ------------------------------------------------------------------


def _to_lonlat(frame: gpd.GeoDataFrame, path: Path) -> gpd.GeoDataFrame:
    """Reproject to EPSG:4326 after checking that the coordinates fit the declared CRS."""
    declared: CRS | None = frame.crs
    has_geometry = bool((~(frame.geometry.isna() | frame.geometry.is_empty)).any())
    if not has_geometry:
        return frame.set_crs(4326, allow_override=True)  # nothing to check; fails later
    # Coordinates of a file without CRS, or in a geographic CRS, must already be lon/lat.
    if declared is None or declared.is_geographic:
        problem = _check_lonlat(tuple(frame.total_bounds), declared)
        if problem:
            raise AoiCoordinateError(f"AOI file '{path}' {problem}")
    if declared is None:
        return frame.set_crs(4326)
    lonlat = frame.to_crs(4326)
    problem = _check_lonlat(tuple(lonlat.total_bounds), declared, reprojected=True)
    if problem:
        raise AoiCoordinateError(f"AOI file '{path}' {problem}")
    return lonlat


def _check_lonlat(
    bounds: Sequence[float], declared_crs: CRS | None, *, reprojected: bool = False
) -> str | None:
    """Say what is wrong with lon/lat bounds, or None if they are fine.

    Args:
        bounds: ``(minx, miny, maxx, maxy)`` of the geometries.
        declared_crs: The CRS the file declares, or None if it has none.
        reprojected: The bounds are the result of reprojecting from `declared_crs`.

    Returns:
        None if the bounds are within lon -180..180 and lat -90..90, else the end of a
        one-line message (without the file name) saying what is wrong and how to fix it.
    """
    minx, miny, maxx, maxy = (float(b) for b in bounds)
    if not all(math.isfinite(b) for b in (minx, miny, maxx, maxy)):
        crs_name = declared_crs.to_string() if declared_crs is not None else "lon/lat"
        return (
            f"has coordinates that cannot be converted from {crs_name} to lon/lat: "
            "check that the file declares the CRS its coordinates are in"
        )
    x_ok = minx >= -180.0 and maxx <= 180.0
    y_ok = miny >= -90.0 and maxy <= 90.0
    if x_ok and y_ok:
        return None
    span = f"x {minx:.6g}…{maxx:.6g}, y {miny:.6g}…{maxy:.6g}"
    if reprojected and declared_crs is not None and not declared_crs.is_geographic:
        return (
            f"has coordinates ({span} after reprojection from {declared_crs.to_string()}) "
            "outside lon/lat range: check that the file declares the CRS its coordinates "
            "are in"
        )
    # y beyond ±90 but within ±180 while x fits latitude: the axes are the wrong way round.
    if minx >= -90.0 and maxx <= 90.0 and miny >= -180.0 and maxy <= 180.0:
        return (
            f"has coordinates that look swapped ({span}: y beyond ±90 cannot be a latitude): "
            "write them as lon, lat (x = longitude, y = latitude)"
        )
    if declared_crs is None:
        return (
            f"has no CRS and its coordinates ({span}) are not lon/lat degrees: save the file "
            "with its CRS (e.g. include the .prj of a Shapefile, or export from QGIS with "
            "the layer's CRS)"
        )
    return (
        f"declares {declared_crs.to_string()} but its coordinates ({span}) are outside "
        "lon/lat range and look projected: save the file with the CRS its coordinates are in"
    )


def _build_zones(frame: gpd.GeoDataFrame, path: Path) -> gpd.GeoDataFrame:
    """Turn a lon/lat frame into the zones table: names, polygon parts, repairs, ids."""
    names = _zone_names(frame)
    kept_names: list[str] = []
    kept_geoms: list[BaseGeometry] = []
    dropped: dict[str, int] = {}
    for i, (name, geom) in enumerate(zip(names, frame.geometry, strict=True), start=1):
        label = f"feature {i} ('{_one_line(name)}')"
        if geom is None or geom.is_empty:
            raise AoiGeometryError(
                f"AOI file '{path}': {label} has no geometry: remove the feature or redraw "
                "its polygon"
            )
        # Heights (KML, some GeoJSON) play no part in an AOI and upset 2D overlay ops.
        geom = shapely.force_2d(geom)
        polygon = _polygonal(geom)
        if polygon is None:
            dropped[geom.geom_type] = dropped.get(geom.geom_type, 0) + 1
            continue
        if not polygon.is_valid:
            reason = shapely.is_valid_reason(polygon)
            repaired = _polygonal(shapely.make_valid(polygon))
            if repaired is None:
                raise AoiGeometryError(
                    f"AOI file '{path}': {label} is invalid ({reason}) and has no area "
                    "once repaired: remove the feature or redraw its polygon"
                )
            warnings.warn(
                f"AOI file '{path}': {label} was invalid ({reason}) and was repaired with "
                "shapely.make_valid: check its outline",
                AoiRepairedWarning,
                stacklevel=3,
            )
            polygon = repaired
        kept_names.append(name)
        kept_geoms.append(polygon)
    if not kept_geoms:
        found = ", ".join(f"{n} {t}" for t, n in sorted(dropped.items())) or "no features"
        raise AoiGeometryError(
            f"AOI file '{path}' has no polygon features (found {found}): draw the area "
            "as one polygon per zone"
        )
    if dropped:
        found = ", ".join(f"{n} {t}" for t, n in sorted(dropped.items()))
        warnings.warn(
            f"AOI file '{path}': ignored {found} feature(s); only polygons define an AOI",
            AoiRepairedWarning,
            stacklevel=3,
        )
    return gpd.GeoDataFrame(
        {"zone_id": range(1, len(kept_geoms) + 1), "name": kept_names},
        geometry=kept_geoms,
        crs=4326,
    )


def _zone_names(frame: pd.DataFrame) -> list[str]:
    """Name each row: its `name` column (any case), else the first text column, else `zone i`.

    Args:
        frame: The features' attribute table (a geometry column is ignored).

    Returns:
        One name per row; rows whose value is missing or blank get ``f"zone {i}"`` (1-based).
    """
    columns = [c for c in frame.columns if c != "geometry" and isinstance(c, str)]
    chosen = next((c for c in columns if c.lower() == "name" and _has_text(frame[c])), None)
    if chosen is None:
        chosen = next((c for c in columns if _is_text(frame[c]) and _has_text(frame[c])), None)
    names: list[str] = []
    for i in range(len(frame)):
        value = frame[chosen].iloc[i] if chosen is not None else None
        text = str(value).strip() if isinstance(value, str) else ""
        names.append(text or f"zone {i + 1}")
    return names


def _is_text(column: pd.Series[Any]) -> bool:
    """True for a column whose non-missing values are all strings."""
    values = column.dropna()
    return len(values) > 0 and all(isinstance(v, str) for v in values)


def _has_text(column: pd.Series[Any]) -> bool:
    """True if at least one value is a non-blank string."""
    return any(isinstance(v, str) and v.strip() for v in column)


def _polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon | None:
    """Keep the polygon parts of a geometry, or None if it has none.

    Args:
        geom: Any geometry, e.g. the GeometryCollection `shapely.make_valid` may return.

    Returns:
        A Polygon (one part) or MultiPolygon (several), or None if nothing polygonal is left.
    """
    parts = [p for p in _flatten(geom) if isinstance(p, Polygon) and not p.is_empty]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return MultiPolygon(parts)


def _flatten(geom: BaseGeometry) -> list[BaseGeometry]:
    """Expand nested collections into their single-part members."""
    out: list[BaseGeometry] = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "GeometryCollection" or part.geom_type.startswith("Multi"):
            out.extend(_flatten(part))
        else:
            out.append(part)
    return out


def _suggest_limit(area_km2: float) -> int:
    """Round an area up to two significant digits, e.g. 824,292 -> 830,000."""
    if area_km2 <= 0:
        return 1
    step = 10 ** max(math.floor(math.log10(area_km2)) - 1, 0)
    return int(math.ceil(area_km2 / step) * step)


def _slug(path: Path) -> str:
    """Lowercase ``[a-z0-9_-]`` name from the file stem, e.g. 'My Farm.shp.zip' -> 'my-farm'."""
    stem = path.name
    while Path(stem).suffix.lower() in _SUFFIXES:
        stem = Path(stem).stem
    slug = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")
    return slug or "aoi"


def _gdal_reason(err: Exception, sources: list[str]) -> str:
    """Shorten a GDAL/pyogrio error to its reason, without the path or GDAL's driver hint."""
    text = _one_line(str(err)).split("; It might help", 1)[0].rstrip(".;")
    for source in sources:
        text = text.replace(f"'{source}' ", "").replace(source, "the file")
    return text or type(err).__name__


def _one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a message stays on one line."""
    return " ".join(text.split())
