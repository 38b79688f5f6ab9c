"""Read, validate and repair areas of interest (AOIs).

An AOI is a vector file with one polygon feature per zone (a field, a farm, a district).
`read_aoi` reads it in any of the supported formats, brings it to lon/lat (EPSG:4326), keeps
the polygon parts, repairs invalid polygons with a warning, splits polygons that cross the
180° meridian and checks its size, so that every later stage can trust `Aoi.zones` and
`Aoi.geometry` without checking them again.

Every problem a user can fix raises a subclass of `AoiError` with a one-line message that names
the file, says what is wrong and how to fix it. Hostile or broken files (pipes, devices, zip
bombs, huge archives) are refused before GDAL reads them, within the limits below.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import stat
import unicodedata
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS, Geod
from pyproj.exceptions import CRSError
from shapely.geometry import MultiPolygon, Polygon, box
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
    "MAX_FILE_BYTES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "MAX_ZIP_RATIO",
    "MAX_ZIP_VECTOR_FILES",
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

MAX_FILE_BYTES: int = 1 << 30
"""Largest AOI file accepted (1 GiB): the county boundaries of a whole country take a few MB."""

MAX_FEATURE_VERTICES: int = 100_000
"""Most vertices one AOI feature may have: a country's border has about 20,000 (Africa's 54
countries hold 206,000 in all), a field a few dozen. More is a line traced by GPS at every
step or a raster outline, which costs minutes to clip and rasterise for nothing."""

MAX_ZIP_MEMBERS: int = 1_000
"""Most members a .zip or .kmz may hold; a zipped Shapefile has four to eight."""

MAX_ZIP_VECTOR_FILES: int = 100
"""Most vector files (.shp, .geojson, ...) a .zip may hold; each is read as zones."""

MAX_ZIP_BYTES: int = 1 << 30
"""Largest total uncompressed size (1 GiB) of what GDAL reads from a .zip or .kmz: no more
than a plain AOI file may hold."""

MAX_ZIP_RATIO: float = 100.0
"""Largest compression ratio of an archive member over `_ZIP_RATIO_MIN_BYTES`: vector files
compress 2 to 20 times, a zip bomb about 1000 times."""

# Small members may compress better than MAX_ZIP_RATIO (a .dbf of blank text fields) and are
# harmless; the ratio only tells a bomb from a big genuine file.
_ZIP_RATIO_MIN_BYTES = 16 << 20

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
_GEOJSON_SUFFIXES = (".geojson", ".json")
_ZIP_FIX = "zip only the Shapefile's .shp, .shx, .dbf and .prj files"
_KMZ_FIX = "save it again as KMZ from Google Earth, or as KML"

_BLOCK = 1 << 20  # read files in blocks of 1 MiB: memory stays flat whatever the file size
# A legacy GeoJSON `crs` member is a small object; this many bytes after its key hold it.
_CRS_WINDOW = 4096
_CRS_KEY = re.compile(rb'"crs"\s*:\s*\{')

_WGS84 = Geod(ellps="WGS84")
_POLYGONAL = ("Polygon", "MultiPolygon")

# Slugs name output folders: keep them short (file systems allow 255 bytes, CJK takes 3 a
# character) and off the names Windows reserves for devices.
_SLUG_MAX_CHARS = 64
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)


class AoiRepairedWarning(UserWarning):
    """An AOI feature was changed to make it usable (made valid, or dropped as non-polygon)."""


@dataclass(frozen=True, eq=False)
class Aoi:
    """A validated area of interest.

    Attributes:
        name: Slug of the file stem, used as the output folder name: lowercase Unicode
            letters, digits, ``_`` and ``-`` (NFC), e.g. ``"grootfontein"`` or ``"農場"``.
        path: The file as given to `read_aoi`.
        zones: One row per polygon feature in file order, EPSG:4326, with columns
            ``zone_id`` (int, 1..n), ``name`` (str) and ``geometry`` (valid Polygon or
            MultiPolygon, longitudes within -180..180; a zone crossing the 180° meridian is
            a MultiPolygon with parts on both sides).
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
        AoiFormatError: The file is not a readable vector file of a supported format (a
            folder, pipe or device; a broken or suspicious archive).
        AoiGeometryError: The file has no polygon, or a feature has no geometry.
        AoiCoordinateError: The coordinates are not valid lon/lat (no CRS, wrong or unknown
            CRS, swapped, not numbers).
        AoiTooLargeError: The AOI is larger than `max_area_km2`, or the file (or what a zip
            holds) is larger than `MAX_FILE_BYTES` (`MAX_ZIP_BYTES`).
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
    _check_vertices(frame, path)
    _check_finite(frame, path)
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
    """Hash a regular file in blocks, refusing what is missing, not a file or too big."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise AoiNotFoundError(
            f"AOI file '{path}' does not exist: check the path, or give one of the shipped "
            f"examples such as '{DEFAULT_AOI}'"
        ) from None
    except OSError as err:
        raise AoiFormatError(
            f"AOI file '{path}' cannot be examined ({_one_line(err.strerror or str(err))}): "
            "check the path and its permissions"
        ) from err
    _check_regular(path, info.st_mode)
    _check_file_size(path, info.st_size)
    digest = hashlib.sha256()
    try:
        # O_NONBLOCK: should a pipe replace the file after the check, opening it must not
        # hang waiting for a writer; fstat then sees what was really opened.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise AoiFormatError(
            f"AOI file '{path}' cannot be opened ({_one_line(err.strerror or str(err))}): "
            "check that you may read it"
        ) from err
    with os.fdopen(fd, "rb") as stream:
        opened = os.fstat(stream.fileno())
        _check_regular(path, opened.st_mode)
        _check_file_size(path, opened.st_size)
        while block := stream.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _check_regular(path: Path, mode: int) -> None:
    """Refuse anything but a regular file, naming what it is."""
    if stat.S_ISREG(mode):
        return
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise AoiFormatError(
        f"AOI file '{path}' is {kind}, not a file: give the vector file itself, "
        f"one of {SUPPORTED_FORMATS}"
    )


def _check_file_size(path: Path, size: int) -> None:
    """Refuse a file larger than MAX_FILE_BYTES before anything reads it."""
    if size > MAX_FILE_BYTES:
        raise AoiTooLargeError(
            f"AOI file '{path}' is {_bytes(size)} ({size:,} bytes), more than the limit of "
            f"{_bytes(MAX_FILE_BYTES)} for an AOI file: simplify its polygons (e.g. QGIS "
            "Vector ▸ Geometry Tools ▸ Simplify) or split it into smaller AOIs"
        )


def _read_frame(path: Path) -> gpd.GeoDataFrame:
    """Read every layer of the file into one frame, still in the file's CRS."""
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise AoiFormatError(
            f"AOI file '{path}' has an unsupported extension '{path.suffix}': save it as "
            f"one of {SUPPORTED_FORMATS}"
        )
    sources: list[tuple[str, str | None]]  # (what GDAL opens, zip member or None)
    if suffix == ".zip":
        members = _zip_members(path)
        sources = [(f"/vsizip/{path.resolve()}/{m}", m) for m in members]
    else:
        if suffix == ".kmz":
            _check_archive(path, kmz=True)
        sources = [(str(path), None)]
    frames: list[gpd.GeoDataFrame] = []
    gdal_paths = [source for source, _ in sources]
    try:
        for source, member in sources:
            for layer, geometry_type in pyogrio.list_layers(source):
                # Attribute-only tables (e.g. in a GeoPackage) hold no AOI geometry.
                if geometry_type is None:
                    continue
                with warnings.catch_warnings():
                    # NaN coordinates make shapely warn; _check_finite names the feature.
                    warnings.filterwarnings(
                        "ignore", "invalid value encountered", category=RuntimeWarning
                    )
                    frame = pyogrio.read_dataframe(source, layer=str(layer))
                _check_declared_crs(frame, path, member)
                frames.append(frame)
    except (RuntimeError, ValueError) as err:  # pyogrio's errors derive from RuntimeError
        raise AoiFormatError(
            f"AOI file '{path}' cannot be read as {_SUFFIXES[suffix]} "
            f"(GDAL: {_gdal_reason(err, gdal_paths)}): check that it is a complete "
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


def _zip_members(path: Path) -> list[str]:
    """Return the vector files inside a zip archive, after checking the archive's limits."""
    infos = _check_archive(path, kmz=False)
    # Skip folders and the macOS resource forks (__MACOSX/, ._name) that zip tools add.
    vectors = sorted(
        i.filename
        for i in infos
        if not i.is_dir()
        and i.filename.lower().endswith(_ZIP_MEMBER_SUFFIXES)
        and "__MACOSX" not in i.filename
        and not Path(i.filename).name.startswith("._")
    )
    if not vectors:
        raise AoiFormatError(
            f"AOI file '{path}' contains no .shp file: zip the Shapefile's .shp, .shx, .dbf "
            f"and .prj files, or give one of {SUPPORTED_FORMATS}"
        )
    if len(vectors) > MAX_ZIP_VECTOR_FILES:
        raise AoiFormatError(
            f"AOI file '{path}' holds {len(vectors):,} vector files, more than the limit of "
            f"{MAX_ZIP_VECTOR_FILES:,}: put the zones in one Shapefile or GeoPackage, one "
            "feature per zone"
        )
    # What GDAL reads: the vector files and their sidecars (.shx, .dbf, .prj, ...).
    stems = {v.rsplit(".", 1)[0] for v in vectors}
    read = [i for i in infos if not i.is_dir() and i.filename.rsplit(".", 1)[0] in stems]
    _check_unzipped_size(path, read, _ZIP_FIX)
    return vectors


def _check_archive(path: Path, *, kmz: bool) -> list[zipfile.ZipInfo]:
    """List a .zip or .kmz, refusing broken archives, too many members and zip bombs."""
    fix = _KMZ_FIX if kmz else _ZIP_FIX
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as err:
        if kmz:
            raise AoiFormatError(
                f"AOI file '{path}' is not a valid KMZ (zip) archive ({_one_line(str(err))}): {fix}"
            ) from err
        raise AoiFormatError(
            f"AOI file '{path}' is not a valid zip archive ({_one_line(str(err))}): zip the "
            f"Shapefile's .shp, .shx, .dbf and .prj files, or give one of {SUPPORTED_FORMATS}"
        ) from err
    if len(infos) > MAX_ZIP_MEMBERS:
        raise AoiFormatError(
            f"AOI file '{path}' is an archive of {len(infos):,} members, more than the limit "
            f"of {MAX_ZIP_MEMBERS:,}: {fix}"
        )
    for info in infos:
        compressed = max(info.compress_size, 1)
        if info.file_size > _ZIP_RATIO_MIN_BYTES and info.file_size > MAX_ZIP_RATIO * compressed:
            raise AoiFormatError(
                f"AOI file '{path}': member '{_one_line(info.filename)}' expands "
                f"{info.file_size / compressed:,.0f} times (from {_bytes(info.compress_size)} "
                f"to {_bytes(info.file_size)}), more than the limit of {MAX_ZIP_RATIO:,.0f} "
                f"times, as a zip bomb does: {fix}"
            )
    if kmz:
        _check_unzipped_size(path, [i for i in infos if not i.is_dir()], fix)
    return infos


def _check_unzipped_size(path: Path, infos: Sequence[zipfile.ZipInfo], fix: str) -> None:
    """Refuse an archive whose members GDAL reads add up to more than MAX_ZIP_BYTES."""
    total = sum(i.file_size for i in infos)
    if total > MAX_ZIP_BYTES:
        raise AoiTooLargeError(
            f"AOI file '{path}' unzips to {_bytes(total)} ({total:,} bytes) of vector data, "
            f"more than the limit of {_bytes(MAX_ZIP_BYTES)}: simplify its polygons or split "
            f"it into smaller AOIs, then {fix}"
        )


def _check_declared_crs(frame: gpd.GeoDataFrame, path: Path, member: str | None) -> None:
    """Refuse a CRS the file declares but GDAL could not read (it would drop it silently).

    Args:
        frame: What GDAL read from the file (or from `member` of the zip archive `path`).
        path: The AOI file.
        member: The archive member read, or None for the file itself.
    """
    name = member if member is not None else path.name
    suffix = Path(name).suffix.lower()
    if suffix in _GEOJSON_SUFFIXES:
        # GDAL reads a GeoJSON `crs` member it does not know as EPSG:4326, without a word.
        for declared in _geojson_crs_names(path, member):
            try:
                CRS.from_user_input(declared)
            except CRSError:
                raise AoiCoordinateError(
                    f"AOI file '{path}' declares the CRS '{_one_line(declared)}' in its "
                    '"crs" member, which is not a known CRS: write a known one (e.g. '
                    "EPSG:32734), or remove the member and save the coordinates as lon/lat"
                ) from None
    elif suffix == ".shp" and frame.crs is None and _has_prj(path, member):
        raise AoiCoordinateError(
            f"AOI file '{path}' has a .prj file that GDAL cannot read, so its CRS is "
            "unknown: export the Shapefile again with its CRS (e.g. from QGIS), or remove "
            "the .prj if the coordinates are lon/lat"
        )


def _has_prj(path: Path, member: str | None) -> bool:
    """True if the Shapefile (a file, or a member of the zip `path`) has a .prj beside it."""
    if member is None:
        return any(path.with_suffix(s).is_file() for s in (".prj", ".PRJ", ".Prj"))
    stem = member.rsplit(".", 1)[0]
    with zipfile.ZipFile(path) as archive:
        return any(
            n.rsplit(".", 1)[0] == stem and n.lower().endswith(".prj") for n in archive.namelist()
        )


def _geojson_crs_names(path: Path, member: str | None) -> list[str]:
    """CRS names in the legacy `crs` members (RFC 7946 dropped them) of a GeoJSON text."""
    names: list[str] = []
    try:
        if member is None:
            with path.open("rb") as stream:
                objects = list(_crs_objects(stream))
        else:
            with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
                objects = list(_crs_objects(stream))
    except (zipfile.BadZipFile, OSError):
        return names  # GDAL read it; what it read is checked further on
    for obj in objects:
        properties = obj.get("properties")
        if not isinstance(properties, dict):
            continue
        if obj.get("type") == "name" and isinstance(properties.get("name"), str):
            names.append(properties["name"])
        elif obj.get("type") == "EPSG" and isinstance(properties.get("code"), int | str):
            names.append(f"EPSG:{properties['code']}")
    return names


def _crs_objects(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Yield the objects that follow a ``"crs":`` key in a JSON byte stream, block by block.

    Scanning the bytes keeps memory flat (no parse of the whole file); a `crs` object is a
    few hundred bytes, so `_CRS_WINDOW` bytes after its key always hold it.
    """
    decoder = json.JSONDecoder()
    buf, base, done = b"", 0, 0  # buf starts at offset `base`; keys before `done` are seen
    while True:
        block = stream.read(_BLOCK)
        buf += block
        for match in _CRS_KEY.finditer(buf):
            if base + match.start() < done:
                continue
            if block and len(buf) - match.start() < _CRS_WINDOW:
                break  # the object may go on in the next block
            text = buf[match.end() - 1 : match.end() - 1 + _CRS_WINDOW]
            done = base + match.start() + 1
            try:
                obj, _ = decoder.raw_decode(text.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj
        if not block:
            return
        cut = max(0, len(buf) - _CRS_WINDOW)
        base, buf = base + cut, buf[cut:]


# --- pure checks and repairs ------------------------------------------------------------------


def _check_vertices(frame: gpd.GeoDataFrame, path: Path) -> None:
    """Refuse a feature of more than `MAX_FEATURE_VERTICES` vertices, naming it."""
    counts = shapely.get_num_coordinates(frame.geometry.array)
    if not len(counts) or counts.max() <= MAX_FEATURE_VERTICES:
        return
    first = int(np.argmax(counts > MAX_FEATURE_VERTICES))
    name = _zone_names(frame)[first]
    raise AoiGeometryError(
        f"AOI file '{path}': feature {first + 1} ('{_one_line(name)}') has "
        f"{int(counts[first]):,} vertices, more than {MAX_FEATURE_VERTICES:,}: simplify it "
        "(QGIS: Vector > Geometry Tools > Simplify, a tolerance of 1 m keeps its shape)"
    )


def _check_finite(frame: gpd.GeoDataFrame, path: Path) -> None:
    """Refuse NaN or infinite coordinates (GDAL reads ``NaN`` in GeoJSON), naming the feature."""
    coords, index = shapely.get_coordinates(frame.geometry.array, return_index=True)
    bad = ~np.isfinite(coords).all(axis=1)
    if not bad.any():
        return
    features = np.unique(index[bad])
    first = int(features[0])
    x, y = (float(v) for v in coords[bad][0])
    name = _zone_names(frame)[first]
    more = f" (and {len(features) - 1} more features)" if len(features) > 1 else ""
    raise AoiCoordinateError(
        f"AOI file '{path}': feature {first + 1} ('{_one_line(name)}'){more} has a "
        f"coordinate that is not a number (x {x:.6g}, y {y:.6g}): fix or remove that vertex, "
        "or redraw the polygon"
    )


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
    if not declared.is_geographic and _degrees_in_projected_crs(frame, lonlat, declared):
        minx, miny, maxx, maxy = (float(b) for b in frame.total_bounds)
        raise AoiCoordinateError(
            f"AOI file '{path}' declares the projected CRS {declared.to_string()} but its "
            f"coordinates (x {minx:.6g}…{maxx:.6g}, y {miny:.6g}…{maxy:.6g}) look like lon/lat "
            "degrees: if they are lon/lat, save the file as EPSG:4326, else save it with the "
            "CRS its coordinates are in"
        )
    problem = _check_lonlat(tuple(lonlat.total_bounds), declared, reprojected=True)
    if problem:
        raise AoiCoordinateError(f"AOI file '{path}' {problem}")
    return lonlat


def _degrees_in_projected_crs(
    frame: gpd.GeoDataFrame, lonlat: gpd.GeoDataFrame, declared: CRS
) -> bool:
    """True if coordinates declared in a projected CRS are really lon/lat degrees.

    Degrees read as metres make a footprint of a few square metres at the CRS's false origin.
    Small genuine coordinates (a local grid with its origin at the farm) are told apart by
    their area: a real AOI is many square metres per vertex. Degrees are also told by a
    footprint outside the CRS's area of use.

    Args:
        frame: The features in the declared CRS.
        lonlat: The same features reprojected to EPSG:4326.
        declared: The projected CRS the file declares.

    Returns:
        True when every coordinate is within lon/lat range and the footprint is either under
        1 m² per vertex or outside the CRS's area of use.
    """
    minx, miny, maxx, maxy = (float(b) for b in frame.total_bounds)
    if not (abs(minx) <= 180.0 and abs(maxx) <= 180.0 and abs(miny) <= 90.0 and abs(maxy) <= 90.0):
        return False
    areas = shapely.area(frame.geometry.array)
    polygonal = areas > 0
    if not polygonal.any():
        return False  # no polygon at all: the "no polygon features" error says it better
    vertices = int(shapely.get_num_coordinates(frame.geometry.array[polygonal]).sum())
    metres = declared.axis_info[0].unit_conversion_factor if declared.axis_info else 1.0
    if float(areas.sum()) * metres**2 < 1.0 * vertices:
        return True
    use = declared.area_of_use
    if use is None:
        return False
    lon0, lat0, lon1, lat1 = (float(b) for b in lonlat.total_bounds)
    if not all(math.isfinite(b) for b in (lon0, lat0, lon1, lat1)):
        return True  # degrees beyond the projection's domain
    margin = 1.0  # degrees: AOIs often reach a little past a UTM zone's border
    if lat1 < use.south - margin or lat0 > use.north + margin:
        return True
    if use.west <= use.east:  # an area of use across the 180° meridian has west > east
        return lon1 < use.west - margin or lon0 > use.east + margin
    return lon0 > use.east + margin and lon1 < use.west - margin


def _check_lonlat(
    bounds: Sequence[float], declared_crs: CRS | None, *, reprojected: bool = False
) -> str | None:
    """Say what is wrong with lon/lat bounds, or None if they are fine.

    Longitudes a little past ±180 are fine: tools write a polygon across the 180° meridian as
    179.9…180.1, or use 0…360; `_build_zones` brings them back to -180…180.

    Args:
        bounds: ``(minx, miny, maxx, maxy)`` of the geometries.
        declared_crs: The CRS the file declares, or None if it has none.
        reprojected: The bounds are the result of reprojecting from `declared_crs`.

    Returns:
        None if the bounds are within lon -360..360 (spanning at most 360°) and lat
        -90..90, else the end of a one-line message (without the file name) saying what is
        wrong and how to fix it.
    """
    minx, miny, maxx, maxy = (float(b) for b in bounds)
    if not all(math.isfinite(b) for b in (minx, miny, maxx, maxy)):
        crs_name = declared_crs.to_string() if declared_crs is not None else "lon/lat"
        return (
            f"has coordinates that cannot be converted from {crs_name} to lon/lat: "
            "check that the file declares the CRS its coordinates are in"
        )
    x_ok = minx >= -360.0 and maxx <= 360.0 and maxx - minx <= 360.0
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
            # GDAL also reads a geometry with null coordinates as no geometry.
            raise AoiGeometryError(
                f"AOI file '{path}': {label} has no geometry, or none that can be read (e.g. "
                "null coordinates): remove the feature or redraw its polygon"
            )
        # Heights (KML, some GeoJSON) play no part in an AOI and upset 2D overlay ops.
        geom = shapely.force_2d(geom)
        polygon = _polygonal(geom)
        if polygon is None:
            dropped[geom.geom_type] = dropped.get(geom.geom_type, 0) + 1
            continue
        # Repairs and the cut at 180° need the polygon drawn without the jump at 180°.
        polygon = _unwrap(polygon, f"AOI file '{path}': {label}")
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
        kept_geoms.append(_cut_at_antimeridian(polygon))
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
    unique = unique_names(kept_names)
    renamed = [f"'{_one_line(b)}'" for a, b in zip(kept_names, unique, strict=True) if a != b]
    if renamed:
        # Products key the zones by name (tables, the zones layer): two of one name would
        # merge, so the later ones get a number, as QGIS users see them in the tables.
        warnings.warn(
            f"AOI file '{path}': zone names repeat, so {len(renamed)} zone(s) were numbered "
            f"({', '.join(renamed[:3])}{' …' if len(renamed) > 3 else ''}): give each "
            "feature its own name to choose them",
            AoiRepairedWarning,
            stacklevel=3,
        )
    return gpd.GeoDataFrame(
        {"zone_id": range(1, len(kept_geoms) + 1), "name": unique},
        geometry=kept_geoms,
        crs=4326,
    )


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with each repeat numbered: ``a, a, b, a`` → ``a, a (2), b, a (3)``.

    A number already taken (a zone named ``a (2)`` in the file) is skipped.
    """
    taken = set(names)
    seen: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count == 1:
            out.append(name)
            continue
        candidate = f"{name} ({count})"
        while candidate in taken:
            count += 1
            candidate = f"{name} ({count})"
        seen[name] = count
        taken.add(candidate)
        out.append(candidate)
    return out


# --- the 180° meridian ------------------------------------------------------------------------


def _unwrap(polygon: Polygon | MultiPolygon, label: str) -> Polygon | MultiPolygon:
    """Redraw each part without jumps of more than 180° between consecutive longitudes.

    A ring from 179.9 to -179.9 crosses the 180° meridian (RFC 7946 §3.1.9), it does not go
    round the Earth: its western vertices are shifted by +360 (or eastern by -360) so that
    the part is one continuous shape, with longitudes past ±180 that `_cut_at_antimeridian`
    brings back. Parts without jumps are returned as they are, whatever their width.

    Args:
        polygon: A lon/lat Polygon or MultiPolygon.
        label: Start of an error message naming the file and feature.

    Returns:
        The same polygon when no ring jumps, else the unwrapped one.

    Raises:
        AoiGeometryError: A ring winds round a pole (its jumps do not cancel out), so it has
            no shape on the UTM grid.
    """
    parts = list(polygon.geoms) if isinstance(polygon, MultiPolygon) else [polygon]
    unwrapped = [_unwrap_part(p, label) for p in parts]
    if all(u is p for u, p in zip(unwrapped, parts, strict=True)):
        return polygon
    return unwrapped[0] if isinstance(polygon, Polygon) else MultiPolygon(unwrapped)


def _unwrap_part(polygon: Polygon, label: str) -> Polygon:
    """Unwrap one polygon's rings (see `_unwrap`), holes moved into the exterior's frame."""
    rings = [
        np.asarray(polygon.exterior.coords),
        *(np.asarray(r.coords) for r in polygon.interiors),
    ]
    unwrapped = [_unwrap_ring(r) for r in rings]
    if all(u is r for u, r in zip(unwrapped, rings, strict=True)):
        return polygon
    for ring, u in zip(rings, unwrapped, strict=True):
        if u is None:
            if _jumps_only_along_antimeridian(ring):
                # The usual drawing of a polar cap (e.g. Antarctica): already cut at 180°.
                return polygon
            raise AoiGeometryError(
                f"{label} winds round a pole (its longitudes jump across 180° without coming "
                "back): agrimon's UTM grid does not reach the poles, redraw it without the pole"
            )
    exterior = unwrapped[0]
    assert exterior is not None  # checked above
    middle = (exterior[:, 0].min() + exterior[:, 0].max()) / 2
    holes = []
    for hole in unwrapped[1:]:
        assert hole is not None
        hole_middle = (hole[:, 0].min() + hole[:, 0].max()) / 2
        shift = 360.0 * round((middle - hole_middle) / 360.0)
        holes.append(hole + np.array([shift, 0.0]) if shift else hole)
    return Polygon(exterior, holes)


def _unwrap_ring(ring: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, Any] | None:
    """Shift longitudes after each jump of more than 180°; None if the jumps do not cancel.

    Args:
        ring: ``(n, 2)`` closed ring coordinates.

    Returns:
        `ring` itself when it has no jump, a copy with shifted longitudes when its jumps
        cancel out (it crosses 180° and comes back), or None when it winds round a pole.
    """
    lon = ring[:, 0]
    # +1 where the next vertex is over 180° east (it really lies a little west, across 180°),
    # -1 where it is over 180° west; vertices after a jump move by -360 or +360.
    turns = np.round(np.diff(lon) / 360.0)
    if not turns.any():
        return ring
    laps = np.concatenate([[0.0], np.cumsum(-turns)])
    if laps[-1] != 0:
        return None
    out = ring.copy()
    out[:, 0] = lon + 360.0 * laps
    return out


def _jumps_only_along_antimeridian(ring: np.ndarray[Any, np.dtype[np.float64]]) -> bool:
    """True if every jump of the ring is between vertices exactly on ±180°."""
    lon = ring[:, 0]
    jumps = np.abs(np.diff(lon)) > 180.0
    on_meridian = (np.abs(lon[:-1]) == 180.0) & (np.abs(lon[1:]) == 180.0)
    return bool(np.all(on_meridian[jumps]))


def _cut_at_antimeridian(polygon: Polygon | MultiPolygon) -> Polygon | MultiPolygon:
    """Cut a polygon reaching past ±180° at the meridian and bring each piece into -180..180.

    Args:
        polygon: A valid lon/lat polygon, possibly unwrapped (longitudes within -360..360).

    Returns:
        `polygon` itself when its longitudes are within -180..180, else the pieces of each
        360° window shifted into -180..180 (a MultiPolygon with parts on both sides of 180°).
    """
    minx, _, maxx, _ = polygon.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return polygon
    pieces: list[BaseGeometry] = []
    for lap in range(math.floor((minx + 180.0) / 360.0), math.ceil((maxx + 180.0) / 360.0)):
        west = -180.0 + 360.0 * lap
        piece = polygon.intersection(box(west, -90.0, west + 360.0, 90.0))
        if not piece.is_empty:
            shift = np.array([-360.0 * lap, 0.0])
            pieces.append(shapely.transform(piece, lambda xy, s=shift: xy + s))
    # The union keeps the result valid should pieces of different parts meet once shifted.
    cut = _polygonal(shapely.union_all(pieces))
    assert cut is not None  # the polygon has area, so has at least one of its pieces
    return cut


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
    """Folder-safe name from the file stem, e.g. 'My Farm.shp.zip' -> 'my-farm'.

    Unicode letters, marks and digits are kept (lowercased, NFC) so that names in any script
    stay distinct and readable ('農場.kml' -> '農場'); every other run of characters (spaces,
    dots, slashes, control characters) becomes one ``-``. The result is never empty, ``.`` or
    ``..``, holds no path separator and cannot escape the output folder.
    """
    stem = path.name
    while Path(stem).suffix.lower() in _SUFFIXES:
        stem = Path(stem).stem
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", stem).lower())
    runs = itertools.groupby(text, key=_slug_char)
    slug = "".join("".join(chars) if kept else "-" for kept, chars in runs).strip("-_")
    if len(slug) > _SLUG_MAX_CHARS:
        # Keep long names distinct: a cut name ends with a hash of the whole stem.
        tag = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        slug = f"{slug[: _SLUG_MAX_CHARS - 9].rstrip('-_')}-{tag}"
    if slug in _WINDOWS_DEVICES:
        slug = f"{slug}-aoi"  # 'con', 'nul', ... are devices, not folders, on Windows
    return slug or "aoi"


def _slug_char(char: str) -> bool:
    """True for characters a slug keeps: letters, combining marks, digits, ``_`` and ``-``."""
    return char in "_-" or unicodedata.category(char)[0] in "LMN"


def _gdal_reason(err: Exception, sources: list[str]) -> str:
    """Shorten a GDAL/pyogrio error to its reason, without the path or GDAL's driver hint."""
    text = _one_line(str(err)).split("; It might help", 1)[0].rstrip(".;")
    for source in sources:
        text = text.replace(f"'{source}' ", "").replace(source, "the file")
    return text or type(err).__name__


def _one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a message stays on one line."""
    return " ".join(text.split())


def _bytes(size: int) -> str:
    """Size in binary units for messages, e.g. 1073741824 -> '1 GiB', 1610612736 -> '1.5 GiB'."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            text = f"{size:,}" if unit == "bytes" else f"{value:,.1f}".removesuffix(".0")
            return f"{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
