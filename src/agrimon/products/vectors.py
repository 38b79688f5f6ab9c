"""Vector writers: RFC 7946 GeoJSON, and GeoPackages that QGIS 3.22 LTR opens without a warning.

GeoJSON is lon/lat (EPSG:4326) without a ``crs`` member, exterior rings counter-clockwise
and holes clockwise, coordinates rounded to 7 decimals (about 1 cm). GeoPackages are
written as version 1.2: GDAL 3.10+ writes 1.4 by default, which the GDAL 3.6 of QGIS 3.22
(still common on agency desktops) opens with a "may only be partially supported" warning.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from agrimon.products.folder import writing

#: GeoPackage version every GeoPackage of agrimon is written as.
GPKG_VERSION = "1.2"
#: Dataset creation options of a GeoPackage (pyogrio's ``dataset_options``).
GPKG_OPTIONS = {"VERSION": GPKG_VERSION}
#: Decimals of GeoJSON coordinates (RFC 7946 recommends no more than needed: 1e-7° ≈ 1 cm).
GEOJSON_DECIMALS = 7


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; rename it onto ``path`` on success.

    On any failure the temporary file (and any SQLite sidecar) is removed and ``path`` is
    left as it was; GDAL and OS errors become a one-line ProductError.
    """
    # The same extension: GDAL drivers look at it.
    temporary = path.with_name(
        f".{path.stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}"
    )
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield temporary
            os.replace(temporary, path)
    finally:
        for leftover in (
            temporary,
            *(Path(f"{temporary}{s}") for s in ("-journal", "-wal", "-shm")),
        ):
            leftover.unlink(missing_ok=True)


def _write(frame: gpd.GeoDataFrame, path: Path, **options: Any) -> None:
    import pyogrio

    extra: dict[str, Any] = {}
    if frame.empty and "geometry" in frame:
        extra["geometry_type"] = "Polygon"
    pyogrio.write_dataframe(frame, path, **extra, **options)


def rfc7946(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``frame`` in lon/lat with RFC 7946's ring orientation (exteriors counter-clockwise)."""
    lonlat = frame.to_crs(4326)
    oriented = shapely.orient_polygons(lonlat.geometry.to_numpy(), exterior_cw=False)
    return lonlat.set_geometry(gpd.GeoSeries(oriented, index=lonlat.index, crs=4326))


def write_geojson(frame: gpd.GeoDataFrame, path: Path) -> Path:
    """Write features as RFC 7946 GeoJSON, atomically (see the module docstring)."""
    with replacing(path) as temporary:
        _write(
            rfc7946(frame),
            temporary,
            driver="GeoJSON",
            layer=path.stem,
            layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": str(GEOJSON_DECIMALS)},
        )
    return path


def write_geopackage(frame: gpd.GeoDataFrame, path: Path, *, layer: str) -> Path:
    """Write features as one GeoPackage layer in their own (projected) CRS, atomically.

    The file is replaced whole: it holds this one layer.
    """
    with replacing(path) as temporary:
        _write(frame, temporary, driver="GPKG", layer=layer, dataset_options=GPKG_OPTIONS)
    return path


def add_layer(frame: gpd.GeoDataFrame | pd.DataFrame, path: Path, *, layer: str) -> Path:
    """Add ``frame`` as ``layer`` to the GeoPackage ``path``, creating the file if needed.

    For a run's GeoPackage, which lives in the run's staging folder (the folder, not the
    file, is published atomically). A frame without geometry becomes an attribute table.

    Raises:
        ProductError: GDAL could not write the layer (a full disk, permissions).
    """
    import pyogrio

    with writing(path):
        if "geometry" not in frame:
            pyogrio.write_dataframe(
                frame, path, layer=layer, driver="GPKG", dataset_options=GPKG_OPTIONS
            )
            return path
        _write(frame, path, driver="GPKG", layer=layer, dataset_options=GPKG_OPTIONS)
    return path
