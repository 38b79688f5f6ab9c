"""Tests for agrimon.aoi: reading, repairing and validating areas of interest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import socket
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from pyproj import CRS
from shapely.geometry import GeometryCollection, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from agrimon import aoi as aoi_module
from agrimon.aoi import (
    DEFAULT_AOI,
    DEFAULT_MAX_AREA_KM2,
    Aoi,
    AoiRepairedWarning,
    _check_lonlat,
    _polygonal,
    _slug,
    _suggest_limit,
    _zone_names,
    geodesic_area_km2,
    read_aoi,
)
from agrimon.errors import (
    AoiCoordinateError,
    AoiError,
    AoiFormatError,
    AoiGeometryError,
    AoiNotFoundError,
    AoiTooLargeError,
    ConfigError,
)
from agrimon.grid import plan_tiles

REAL_AOI = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "aoi"
DEFAULT_ZONES = [
    "Grootfontein farmland",
    "North-west fields",
    "Central rangeland",
    "South-east block",
    "Eastern camp",
]
HAS_KML = bool({"KML", "LIBKML"} & set(pyogrio.list_drivers(read=True)))
HAS_LIBKML = "LIBKML" in pyogrio.list_drivers(write=True)


def _real(name: str) -> Path:
    path = REAL_AOI / name
    if not path.exists():
        pytest.skip(f"real AOI data {path} is not available (expected ../shared/data/real/aoi)")
    return path


def _write_geojson(path: Path, features: list[dict[str, Any]], crs: str | None = None) -> Path:
    """Write raw GeoJSON, so tests control exactly what is in the file."""
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        collection["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(collection))
    return path


def _feature(name: str | None, geometry: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"name": name}, "geometry": geometry}


def _square(x: float = 18.2, y: float = -19.6, size: float = 0.01) -> dict[str, Any]:
    return dict(shapely.geometry.mapping(box(x, y, x + size, y + size)))


def _one_line_error(excinfo: pytest.ExceptionInfo[AoiError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- the shipped default AOI ------------------------------------------------------------------


def test_default_aoi_reads_as_grootfontein_farmland() -> None:
    aoi = read_aoi(DEFAULT_AOI)

    assert isinstance(aoi, Aoi)
    assert aoi.name == "grootfontein"
    assert aoi.path == DEFAULT_AOI
    assert 90 <= aoi.area_km2 <= 110
    assert aoi.zones["name"].tolist() == DEFAULT_ZONES
    assert aoi.zones["zone_id"].tolist() == [1, 2, 3, 4, 5]
    assert aoi.zones.crs == CRS.from_epsg(4326)
    assert list(aoi.zones.columns) == ["zone_id", "name", "geometry"]
    minx, miny, maxx, maxy = aoi.geometry.bounds
    assert 18.1 <= minx < maxx <= 18.3
    assert -19.7 <= miny < maxy <= -19.5
    assert aoi.geometry.is_valid
    assert aoi.geometry.geom_type == "Polygon"
    assert aoi.sha256 == hashlib.sha256(DEFAULT_AOI.read_bytes()).hexdigest()


def test_default_aoi_zones_lie_inside_the_outline_and_are_field_sized() -> None:
    aoi = read_aoi(DEFAULT_AOI)
    outline = aoi.zones.geometry.iloc[0]

    for zone in aoi.zones.geometry.iloc[1:]:
        assert outline.contains(zone)
        assert 1.0 < geodesic_area_km2(zone) < 10.0
    # Not every zone is a rectangle: a rectangle fills its bounding box.
    fill = [z.area / box(*z.bounds).area for z in aoi.zones.geometry.iloc[1:]]
    assert min(fill) < 0.9


def test_default_aoi_is_the_repo_file() -> None:
    repo_file = Path(__file__).resolve().parents[1] / "aoi" / "grootfontein.geojson"
    assert DEFAULT_AOI.resolve() == repo_file.resolve()


# --- every format -----------------------------------------------------------------------------


def _zip(files: list[Path], target: Path, folder: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for f in files:
            archive.write(f, f"{folder}{f.name}")
    return target


def _write_shapefile(frame: gpd.GeoDataFrame, folder: Path) -> list[Path]:
    folder.mkdir()
    frame.to_file(folder / "zones.shp")
    return sorted(folder.iterdir())


def _as_geojson(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "zones.geojson"
    frame.to_file(path, driver="GeoJSON")
    return path


def _as_gpkg_utm(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "zones.gpkg"
    frame.to_crs(32734).to_file(path, driver="GPKG")
    return path


def _as_shp_utm(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    _write_shapefile(frame.to_crs(32734), tmp_path / "shp")
    return tmp_path / "shp" / "zones.shp"


def _as_zip(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    files = _write_shapefile(frame, tmp_path / "shp")
    return _zip(files, tmp_path / "zones.zip")


def _as_zip_with_folder(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    files = _write_shapefile(frame.to_crs(32734), tmp_path / "shp")
    return _zip(files, tmp_path / "zones.zip", folder="zones/")


def _as_kml(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    if not HAS_KML:
        pytest.skip("pyogrio's GDAL has no KML or LIBKML driver")
    path = tmp_path / "zones.kml"
    frame.to_file(path, driver="KML")
    return path


def _as_kmz(frame: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    if not HAS_LIBKML:
        pytest.skip("pyogrio's GDAL has no LIBKML driver to write KMZ")
    path = tmp_path / "zones.kmz"
    frame.to_file(path, driver="LIBKML")
    return path


@pytest.mark.parametrize(
    "write",
    [
        _as_geojson,
        _as_gpkg_utm,
        _as_shp_utm,
        _as_zip,
        _as_zip_with_folder,
        _as_kml,
        _as_kmz,
    ],
    ids=["geojson", "gpkg-utm", "shp-utm", "zip", "zip-folder", "kml", "kmz"],
)
def test_every_format_round_trips_the_default_aoi(write: Any, tmp_path: Path) -> None:
    original = read_aoi(DEFAULT_AOI)
    path = write(original.zones[["name", "geometry"]], tmp_path)

    aoi = read_aoi(path)

    assert aoi.name == "zones"
    assert aoi.zones["name"].tolist() == DEFAULT_ZONES
    assert aoi.zones["zone_id"].tolist() == [1, 2, 3, 4, 5]
    assert aoi.zones.crs == CRS.from_epsg(4326)
    assert aoi.area_km2 == pytest.approx(original.area_km2, rel=1e-3)
    for got, want in zip(aoi.zones.geometry, original.zones.geometry, strict=True):
        assert geodesic_area_km2(got) == pytest.approx(geodesic_area_km2(want), rel=1e-3)
    assert aoi.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


GOOGLE_EARTH_KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2">
<Document><name>My farm</name>
<Folder><name>Fields</name>
<Placemark><name>Maize 1</name><Polygon><outerBoundaryIs><LinearRing><coordinates>
18.20,-19.60,0 18.21,-19.60,0 18.21,-19.59,0 18.20,-19.59,0 18.20,-19.60,0
</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>
<Placemark><name>Maize 2</name><Polygon><outerBoundaryIs><LinearRing><coordinates>
18.22,-19.60,0 18.23,-19.60,0 18.23,-19.59,0 18.22,-19.59,0 18.22,-19.60,0
</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>
</Folder>
<Folder><name>Water</name>
<Placemark><name>Borehole</name><Point><coordinates>18.215,-19.595,0</coordinates></Point>
</Placemark>
</Folder>
</Document></kml>
"""


def test_google_earth_kml_with_folders_and_heights(tmp_path: Path) -> None:
    if not HAS_KML:
        pytest.skip("pyogrio's GDAL has no KML or LIBKML driver")
    path = tmp_path / "My farm.kml"
    path.write_text(GOOGLE_EARTH_KML)

    with pytest.warns(AoiRepairedWarning, match="ignored 1 Point"):
        aoi = read_aoi(path)

    assert aoi.name == "my-farm"
    assert aoi.zones["name"].tolist() == ["Maize 1", "Maize 2"]
    assert not aoi.geometry.has_z
    expected = geodesic_area_km2(box(18.20, -19.60, 18.21, -19.59)) + geodesic_area_km2(
        box(18.22, -19.60, 18.23, -19.59)
    )
    assert aoi.area_km2 == pytest.approx(expected, rel=1e-9)


def test_uppercase_extension_and_name_column(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"NAME": ["Camp A", "Camp B"]},
        geometry=[box(18.2, -19.6, 18.21, -19.59), box(18.22, -19.6, 18.23, -19.59)],
        crs=4326,
    )
    path = tmp_path / "My Farm 2024.GeoJSON"
    frame.to_file(path, driver="GeoJSON")

    aoi = read_aoi(path)

    assert aoi.name == "my-farm-2024"
    assert aoi.zones["name"].tolist() == ["Camp A", "Camp B"]
    assert aoi.geometry.geom_type == "MultiPolygon"


def test_shapefile_without_prj_in_lonlat_is_assumed_wgs84(tmp_path: Path) -> None:
    files = _write_shapefile(read_aoi(DEFAULT_AOI).zones, tmp_path / "shp")
    (tmp_path / "shp" / "zones.prj").unlink()
    assert any(f.suffix == ".prj" for f in files)

    aoi = read_aoi(tmp_path / "shp" / "zones.shp")

    assert aoi.zones.crs == CRS.from_epsg(4326)
    assert 90 <= aoi.area_km2 <= 110


def test_shapefile_without_prj_in_utm_asks_for_the_crs(tmp_path: Path) -> None:
    _write_shapefile(read_aoi(DEFAULT_AOI).zones.to_crs(32734), tmp_path / "shp")
    (tmp_path / "shp" / "zones.prj").unlink()

    with pytest.raises(AoiCoordinateError) as excinfo:
        read_aoi(tmp_path / "shp" / "zones.shp")

    message = _one_line_error(excinfo)
    assert "zones.shp" in message
    assert "no CRS" in message
    assert "save the file with its CRS" in message


def test_gpkg_layers_are_all_read(tmp_path: Path) -> None:
    path = tmp_path / "two_layers.gpkg"
    a = gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(18.2, -19.6, 18.21, -19.59)], crs=4326)
    b = gpd.GeoDataFrame({"name": ["b"]}, geometry=[box(18.3, -19.6, 18.31, -19.59)], crs=4326)
    a.to_file(path, layer="first")
    b.to_crs(32734).to_file(path, layer="second")
    pyogrio.write_dataframe(pd.DataFrame({"note": ["attribute-only table"]}), path, layer="notes")

    aoi = read_aoi(path)

    assert aoi.zones["name"].tolist() == ["a", "b"]
    assert aoi.zones.geometry.iloc[1].bounds == pytest.approx((18.3, -19.6, 18.31, -19.59))


# --- real boundaries --------------------------------------------------------------------------


def test_kenya_counties_are_too_large_by_default() -> None:
    path = _real("kenya_counties.geojson")

    with pytest.raises(AoiTooLargeError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "kenya_counties.geojson" in message
    assert "km²" in message
    assert "50,000 km²" in message
    assert "split it into smaller AOIs or raise the limit with --max-area" in message
    suggested = int(message.rsplit("--max-area ", 1)[1])
    assert suggested >= 580_000


def test_kenya_counties_read_with_a_raised_limit() -> None:
    aoi = read_aoi(_real("kenya_counties.geojson"), max_area_km2=1e6)

    assert aoi.name == "kenya_counties"
    assert len(aoi.zones) == 47
    assert aoi.zones["zone_id"].tolist() == list(range(1, 48))
    names = set(aoi.zones["name"])  # the file's only text column is `county`, lowercase
    assert {"nairobi", "mombasa", "kisumu", "turkana", "nakuru"} <= names
    # Kenya is about 580,000 km² (land and inland water).
    assert aoi.area_km2 == pytest.approx(580_000, rel=0.03)
    assert all(aoi.zones.geometry.is_valid)
    minx, miny, maxx, maxy = aoi.geometry.bounds
    assert 33.8 < minx < 34.2
    assert 41.8 < maxx < 42.0
    assert -4.8 < miny < -4.6
    assert 4.5 < maxy < 5.1


@pytest.fixture
def namibia_gpkg(tmp_path: Path) -> Path:
    countries = gpd.read_file(_real("african_countries.gpkg"))
    namibia = countries[countries["COUNTRY"] == "Namibia"]
    assert len(namibia) > 1  # mainland and islands, one polygon per row
    # One feature, a MultiPolygon, as a national boundary usually is.
    dissolved = namibia.dissolve(by="COUNTRY").reset_index()[["COUNTRY", "CODE", "geometry"]]
    path = tmp_path / "namibia.gpkg"
    dissolved.to_file(path, driver="GPKG")
    return path


def test_namibia_is_too_large_by_default(namibia_gpkg: Path) -> None:
    with pytest.raises(AoiTooLargeError) as excinfo:
        read_aoi(namibia_gpkg)

    message = _one_line_error(excinfo)
    assert "namibia.gpkg" in message
    assert "824," in message  # ≈ 824,000 km²
    assert "--max-area 830000" in message


def test_namibia_multipolygon_reads_with_a_raised_limit(namibia_gpkg: Path) -> None:
    aoi = read_aoi(namibia_gpkg, max_area_km2=1_000_000)

    assert aoi.name == "namibia"
    assert aoi.zones["name"].tolist() == ["Namibia"]
    assert aoi.zones.geometry.iloc[0].geom_type == "MultiPolygon"
    assert aoi.area_km2 == pytest.approx(824_000, rel=0.01)
    minx, miny, maxx, maxy = aoi.geometry.bounds
    assert minx == pytest.approx(11.7, abs=0.05)
    assert maxx == pytest.approx(25.26, abs=0.05)
    assert miny == pytest.approx(-28.97, abs=0.05)
    assert maxy == pytest.approx(-16.96, abs=0.05)
    assert aoi.geometry.contains(Point(17.08, -22.57))  # Windhoek


# --- repairs ----------------------------------------------------------------------------------


def test_bow_tie_is_repaired_with_a_warning(tmp_path: Path) -> None:
    x, y, d = 18.2, -19.6, 0.02
    bow_tie = {
        "type": "Polygon",
        "coordinates": [[[x, y], [x + d, y + d], [x + d, y], [x, y + d], [x, y]]],
    }
    path = _write_geojson(tmp_path / "bowtie.geojson", [_feature("Bow tie camp", bow_tie)])

    with pytest.warns(AoiRepairedWarning, match="Self-intersection") as record:
        aoi = read_aoi(path)

    message = str(record[0].message)
    assert "bowtie.geojson" in message
    assert "feature 1 ('Bow tie camp')" in message
    assert "\n" not in message
    geometry = aoi.zones.geometry.iloc[0]
    assert geometry.is_valid
    assert geometry.geom_type == "MultiPolygon"
    cx, cy = x + d / 2, y + d / 2
    triangles = MultiPolygon(
        [
            Polygon([(x, y), (cx, cy), (x, y + d)]),
            Polygon([(x + d, y), (x + d, y + d), (cx, cy)]),
        ]
    )
    assert aoi.area_km2 == pytest.approx(geodesic_area_km2(triangles), rel=1e-9)
    assert aoi.area_km2 == pytest.approx(geodesic_area_km2(box(x, y, x + d, y + d)) / 2, rel=1e-3)


def test_valid_file_gives_no_warning(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "ok.geojson", [_feature("ok", _square())])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_aoi(path)


def test_polygon_parts_of_a_geometry_collection_are_kept(tmp_path: Path) -> None:
    collection = {
        "type": "GeometryCollection",
        "geometries": [
            {"type": "Point", "coordinates": [18.0, -19.0]},
            {"type": "LineString", "coordinates": [[18.0, -19.0], [18.1, -19.1]]},
            _square(),
        ],
    }
    path = _write_geojson(tmp_path / "gc.geojson", [_feature("mixed", collection)])

    aoi = read_aoi(path)

    assert aoi.zones.geometry.iloc[0].geom_type == "Polygon"
    assert aoi.zones.geometry.iloc[0].equals(box(18.2, -19.6, 18.21, -19.59))


def test_points_and_lines_beside_polygons_are_dropped_with_a_warning(tmp_path: Path) -> None:
    features = [
        _feature("well", {"type": "Point", "coordinates": [18.2, -19.6]}),
        _feature("field", _square()),
        _feature("road", {"type": "LineString", "coordinates": [[18.2, -19.6], [18.3, -19.6]]}),
    ]
    path = _write_geojson(tmp_path / "mixed.geojson", features)

    with pytest.warns(AoiRepairedWarning, match=r"ignored 1 LineString, 1 Point"):
        aoi = read_aoi(path)

    assert aoi.zones["name"].tolist() == ["field"]
    assert aoi.zones["zone_id"].tolist() == [1]


def test_3d_polygons_are_flattened(tmp_path: Path) -> None:
    ring = [[18.2, -19.6, 1200.0], [18.21, -19.6, 1200.0], [18.21, -19.59, 1210.0]]
    polygon = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    path = _write_geojson(tmp_path / "z.geojson", [_feature("hill", polygon)])

    aoi = read_aoi(path)

    assert not aoi.zones.geometry.iloc[0].has_z
    assert not aoi.geometry.has_z


# --- bad AOIs: one-line messages that say how to fix them -------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AoiNotFoundError) as excinfo:
        read_aoi(tmp_path / "nowhere.geojson")
    message = _one_line_error(excinfo)
    assert "nowhere.geojson" in message
    assert "does not exist" in message
    assert "check the path" in message


def test_folder_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "aoi.gpkg"
    folder.mkdir()
    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(folder)
    assert "is a folder" in _one_line_error(excinfo)


def test_garbage_geojson(tmp_path: Path) -> None:
    path = tmp_path / "garbage.geojson"
    path.write_text("this is not\nGeoJSON at all\n")
    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "garbage.geojson" in message
    assert "cannot be read as GeoJSON" in message
    assert "not recognized as being in a supported file format" in message
    assert "<DRIVER>" not in message  # GDAL's hint would mislead a user
    assert "GeoPackage (.gpkg)" in message
    assert "KML" in message


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "fields.csv"
    path.write_text("name,wkt\nfield,POLYGON((0 0,1 0,1 1,0 0))\n")
    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "fields.csv" in message
    assert "unsupported extension '.csv'" in message
    assert "GeoJSON (.geojson, .json)" in message
    assert "zipped Shapefile (.zip)" in message


def test_zip_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK not really")
    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "not a valid zip archive" in message


def test_zip_without_a_shapefile(tmp_path: Path) -> None:
    readme = tmp_path / "readme.txt"
    readme.write_text("no shapes here")
    path = _zip([readme], tmp_path / "empty.zip")
    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "contains no .shp file" in message
    assert ".prj" in message


def test_points_only(tmp_path: Path) -> None:
    features = [
        _feature("well", {"type": "Point", "coordinates": [18.2, -19.6]}),
        _feature("pump", {"type": "Point", "coordinates": [18.3, -19.6]}),
    ]
    path = _write_geojson(tmp_path / "points.geojson", features)
    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "points.geojson" in message
    assert "no polygon features (found 2 Point)" in message
    assert "one polygon per zone" in message


def test_empty_layer(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "empty.geojson", [])
    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "no polygon features (found no features)" in message


def test_empty_gpkg_layer(tmp_path: Path) -> None:
    path = tmp_path / "empty.gpkg"
    empty = gpd.GeoDataFrame({"name": pd.Series([], dtype=str)}, geometry=[], crs=32734)
    empty.to_file(path, driver="GPKG")
    with pytest.raises(AoiGeometryError, match="no polygon features"):
        read_aoi(path)


def test_gpkg_with_only_an_attribute_table(tmp_path: Path) -> None:
    path = tmp_path / "table.gpkg"
    pyogrio.write_dataframe(pd.DataFrame({"name": ["field"]}), path, layer="fields")
    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "no polygon features (no layer with geometry)" in message


@pytest.mark.parametrize(
    "geometry",
    [None, {"type": "Polygon", "coordinates": []}],
    ids=["null", "empty"],
)
def test_feature_without_geometry_is_named(tmp_path: Path, geometry: Any) -> None:
    features = [_feature("Good field", _square()), _feature("Lost camp", geometry)]
    path = _write_geojson(tmp_path / "holes.geojson", features)
    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "feature 2 ('Lost camp') has no geometry" in message
    assert "remove the feature or redraw" in message


def test_polygon_with_no_area_after_repair(tmp_path: Path) -> None:
    flat = {"type": "Polygon", "coordinates": [[[18.2, -19.6], [18.3, -19.6], [18.2, -19.6]]]}
    path = _write_geojson(tmp_path / "flat.geojson", [_feature("Sliver", flat)])
    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "feature 1 ('Sliver') is invalid" in message
    assert "no area once repaired" in message


def test_swapped_coordinates(tmp_path: Path) -> None:
    # Grootfontein written as lat, lon: x = -19.6, y = 18.2 fits both ranges, so use a place
    # east of 90°E (Bangladesh) where the swap puts y beyond ±90.
    swapped = {
        "type": "Polygon",
        "coordinates": [[[23.7, 90.4], [23.8, 90.4], [23.8, 90.5], [23.7, 90.5], [23.7, 90.4]]],
    }
    path = _write_geojson(tmp_path / "dhaka.geojson", [_feature("Dhaka", swapped)])
    with pytest.raises(AoiCoordinateError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "dhaka.geojson" in message
    assert "look swapped" in message
    assert "write them as lon, lat" in message


def test_projected_coordinates_declared_as_wgs84(tmp_path: Path) -> None:
    utm = read_aoi(DEFAULT_AOI).zones.to_crs(32734)
    path = tmp_path / "utm_as_4326.geojson"
    utm.set_crs(4326, allow_override=True).to_file(path, driver="GeoJSON")
    with pytest.raises(AoiCoordinateError) as excinfo:
        read_aoi(path)
    message = _one_line_error(excinfo)
    assert "declares EPSG:4326" in message
    assert "look projected" in message
    assert "save the file with the CRS its coordinates are in" in message


def test_too_large_with_a_custom_limit() -> None:
    with pytest.raises(AoiTooLargeError) as excinfo:
        read_aoi(DEFAULT_AOI, max_area_km2=50)
    message = _one_line_error(excinfo)
    assert "98 km²" in message
    assert "limit of 50 km²" in message
    assert "--max-area 99" in message


def test_limit_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="not a positive number"):
        read_aoi(DEFAULT_AOI, max_area_km2=0)


def test_default_limit_value() -> None:
    assert DEFAULT_MAX_AREA_KM2 == 50_000.0


# --- pure helpers -----------------------------------------------------------------------------


def test_zone_names_prefer_the_name_column_in_any_case() -> None:
    frame = pd.DataFrame({"id": ["x1", "x2"], "Name": ["North", "South"]})
    assert _zone_names(frame) == ["North", "South"]


def test_zone_names_fall_back_to_the_first_text_column() -> None:
    frame = pd.DataFrame({"fid": [1, 2], "county": ["nairobi", "mombasa"], "code": ["a", "b"]})
    assert _zone_names(frame) == ["nairobi", "mombasa"]


def test_zone_names_skip_empty_text_columns_and_fill_blanks() -> None:
    frame = pd.DataFrame(
        {"id": ["", ""], "name": [None, None], "label": ["  Camp A ", None], "n": [1, 2]}
    )
    assert _zone_names(frame) == ["Camp A", "zone 2"]


def test_zone_names_without_text_columns() -> None:
    frame = pd.DataFrame({"fid": [10, 20, 30]})
    assert _zone_names(frame) == ["zone 1", "zone 2", "zone 3"]


def test_check_lonlat_accepts_lonlat() -> None:
    assert _check_lonlat((18.15, -19.66, 18.245, -19.57), CRS.from_epsg(4326)) is None
    assert _check_lonlat((-180.0, -90.0, 180.0, 90.0), None) is None


def test_check_lonlat_reports_problems() -> None:
    wgs84 = CRS.from_epsg(4326)
    swapped = _check_lonlat((-19.66, 18.15, -19.57, 118.2), wgs84)
    assert swapped is not None
    assert "look swapped" in swapped
    no_crs = _check_lonlat((500_000.0, 7_800_000.0, 510_000.0, 7_810_000.0), None)
    assert no_crs is not None
    assert "no CRS" in no_crs
    projected = _check_lonlat((500_000.0, 7_800_000.0, 510_000.0, 7_810_000.0), wgs84)
    assert projected is not None
    assert "declares EPSG:4326" in projected
    infinite = _check_lonlat((float("inf"), 0.0, 1.0, 1.0), CRS.from_epsg(32734), reprojected=True)
    assert infinite is not None
    assert "cannot be converted from EPSG:32734" in infinite


def test_suggest_limit_rounds_up_to_two_digits() -> None:
    assert _suggest_limit(824_292.4) == 830_000
    assert _suggest_limit(584_150.8) == 590_000
    assert _suggest_limit(98.47) == 99
    assert _suggest_limit(7.2) == 8
    assert _suggest_limit(50_000.0) == 50_000


def test_slug() -> None:
    assert _slug(Path("aoi/grootfontein.geojson")) == "grootfontein"
    assert _slug(Path("My Farm (2024).shp.zip")) == "my-farm-2024"
    assert _slug(Path("Kenya_Counties.GPKG")) == "kenya_counties"
    assert _slug(Path("___.kml")) == "aoi"


def test_polygonal_keeps_only_polygon_parts() -> None:
    square = box(0, 0, 1, 1)
    mixed = GeometryCollection([Point(5, 5), square, MultiPolygon([box(2, 2, 3, 3)])])
    kept = _polygonal(mixed)
    assert kept is not None
    assert kept.geom_type == "MultiPolygon"
    assert kept.area == pytest.approx(2.0)
    assert _polygonal(Point(0, 0)) is None
    kept_square = _polygonal(square)
    assert kept_square is not None
    assert kept_square.equals(square)


def test_geodesic_area_of_a_one_degree_cell_at_the_equator() -> None:
    # 1° × 1° at the equator on WGS84: 12,308.8 km².
    assert geodesic_area_km2(box(0, 0, 1, 1)) == pytest.approx(12_308.8, rel=1e-4)


def test_geodesic_area_subtracts_holes_whatever_the_ring_orientation() -> None:
    outer = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]  # clockwise
    hole = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]  # counter-clockwise
    with_hole = Polygon(outer, [hole])
    expected = geodesic_area_km2(box(0, 0, 1, 1)) - geodesic_area_km2(Polygon(hole))
    assert geodesic_area_km2(with_hole) == pytest.approx(expected, rel=1e-9)
    assert geodesic_area_km2(Polygon()) == 0.0


@given(
    lon=st.floats(-179.0, 178.0),
    lat=st.floats(-85.0, 84.0),
    width=st.floats(0.001, 1.0),
    height=st.floats(0.001, 1.0),
)
def test_geodesic_area_is_additive_and_orientation_free(
    lon: float, lat: float, width: float, height: float
) -> None:
    east, north = lon + width, lat + height
    whole = box(lon, lat, east, north)
    # Edges are geodesics, so split along the diagonal (a shared geodesic edge), not a
    # meridian, whose new corners would not lie on the original top and bottom edges.
    lower = Polygon([(lon, lat), (east, lat), (east, north)])
    upper = Polygon([(lon, lat), (east, north), (lon, north)])
    area = geodesic_area_km2(whole)
    assert area > 0
    assert geodesic_area_km2(whole.reverse()) == pytest.approx(area, rel=1e-9)
    assert geodesic_area_km2(lower) + geodesic_area_km2(upper) == pytest.approx(area, rel=1e-9)


def test_shipped_file_copy_reads_identically(tmp_path: Path) -> None:
    copy = tmp_path / "grootfontein.geojson"
    shutil.copyfile(DEFAULT_AOI, copy)
    a, b = read_aoi(DEFAULT_AOI), read_aoi(copy)
    assert a.sha256 == b.sha256
    assert a.area_km2 == b.area_km2
    assert a.geometry.equals(b.geometry)


# --- the 180° meridian ------------------------------------------------------------------------

# A 0.2° × 0.1° box across the date line near Fiji, as drawn by most tools (RFC 7946 asks for
# it to be cut at 180°, but few writers do).
FIJI_RING = [[179.9, -17.0], [-179.9, -17.0], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.0]]
FIJI_WEST = (179.9, -17.0, 180.0, -16.9)  # the part at the western end of zone 60
FIJI_EAST = (-180.0, -17.0, -179.9, -16.9)  # the part at the eastern end of zone 1


def _fiji_area_km2() -> float:
    # pyproj's geodesic area follows the short edge across 180°, so the ring as drawn is the
    # reference; 235.76 km² = 0.2° × 0.1° at 17° S.
    return geodesic_area_km2(Polygon(FIJI_RING))


def _parts_bounds(geometry: BaseGeometry) -> list[tuple[float, ...]]:
    return sorted(tuple(round(b, 9) for b in p.bounds) for p in shapely.get_parts(geometry))


@pytest.mark.parametrize(
    "ring",
    [
        FIJI_RING,
        [[-179.9, -17.0], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.0], [-179.9, -17.0]],
        # Longitudes past 180, as some tools write a crossing polygon.
        [[179.9, -17.0], [180.1, -17.0], [180.1, -16.9], [179.9, -16.9], [179.9, -17.0]],
        [[-180.1, -17.0], [-179.9, -17.0], [-179.9, -16.9], [-180.1, -16.9], [-180.1, -17.0]],
        # A ring already touching 180 that jumps along it.
        [
            [179.9, -17.0],
            [180.0, -17.0],
            [-180.0, -17.0],
            [-179.9, -17.0],
            [-179.9, -16.9],
            [-180.0, -16.9],
            [180.0, -16.9],
            [179.9, -16.9],
            [179.9, -17.0],
        ],
    ],
    ids=["jump-east", "jump-west", "past-180", "past-minus-180", "along-180"],
)
def test_polygon_across_the_antimeridian_is_cut_at_180(
    tmp_path: Path, ring: list[list[float]]
) -> None:
    polygon = {"type": "Polygon", "coordinates": [ring]}
    path = _write_geojson(tmp_path / "fiji.geojson", [_feature("Date line farm", polygon)])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to repair
        aoi = read_aoi(path)

    zone = aoi.zones.geometry.iloc[0]
    assert zone.geom_type == "MultiPolygon"
    assert zone.is_valid
    assert _parts_bounds(zone) == [FIJI_EAST, FIJI_WEST]
    assert aoi.geometry.geom_type == "MultiPolygon"
    assert _parts_bounds(aoi.geometry) == [FIJI_EAST, FIJI_WEST]
    assert aoi.geometry.bounds == pytest.approx((-180.0, -17.0, 180.0, -16.9))
    assert aoi.area_km2 == pytest.approx(_fiji_area_km2(), rel=1e-3)
    assert aoi.area_km2 == pytest.approx(235.76, rel=1e-4)


def test_antimeridian_aoi_gives_a_few_tiles_in_zones_1_and_60(tmp_path: Path) -> None:
    polygon = {"type": "Polygon", "coordinates": [FIJI_RING]}
    path = _write_geojson(tmp_path / "fiji.geojson", [_feature("Date line farm", polygon)])

    tiles = plan_tiles(read_aoi(path).geometry, tile_px=1024)

    # 10.6 km on each side of 180°, 11 km north-south: 2 × 2 tiles of 10.24 km in zone 1,
    # 3 × 2 in zone 60 (whose tile columns fall differently) - not a strip round the Earth.
    by_zone = {epsg: sum(t.epsg == epsg for t in tiles) for epsg in {t.epsg for t in tiles}}
    assert by_zone == {32701: 4, 32760: 6}
    lonlat_area = sum(geodesic_area_km2(t.footprint_lonlat()) for t in tiles)
    assert lonlat_area == pytest.approx(_fiji_area_km2(), rel=1e-3)


def test_antimeridian_polygon_with_a_hole_keeps_the_hole(tmp_path: Path) -> None:
    outer = [[179.8, -17.2], [-179.8, -17.2], [-179.8, -16.8], [179.8, -16.8], [179.8, -17.2]]
    hole = [[179.9, -17.1], [179.9, -16.9], [-179.9, -16.9], [-179.9, -17.1], [179.9, -17.1]]
    polygon = {"type": "Polygon", "coordinates": [outer, hole]}
    path = _write_geojson(tmp_path / "ring.geojson", [_feature("Ring farm", polygon)])

    aoi = read_aoi(path)

    expected = geodesic_area_km2(Polygon(outer)) - geodesic_area_km2(Polygon(hole))
    assert aoi.area_km2 == pytest.approx(expected, rel=1e-3)
    assert _parts_bounds(aoi.geometry) == [
        (-180.0, -17.2, -179.8, -16.8),
        (179.8, -17.2, 180.0, -16.8),
    ]
    assert not aoi.geometry.contains(Point(179.95, -17.0))  # in the hole
    assert not aoi.geometry.contains(Point(-179.95, -17.0))
    assert aoi.geometry.contains(Point(179.85, -17.0))
    assert aoi.geometry.contains(Point(-179.85, -17.0))


def test_projected_file_across_the_antimeridian_is_cut_too(tmp_path: Path) -> None:
    # A GeoPackage in UTM 60S: reprojected to lon/lat, its eastern corners land at -179.9.
    unwrapped = Polygon([(x if x > 0 else x + 360.0, y) for x, y in FIJI_RING])
    frame = gpd.GeoDataFrame({"name": ["Taveuni"]}, geometry=[unwrapped], crs=4326)
    path = tmp_path / "taveuni.gpkg"
    frame.to_crs(32760).to_file(path, driver="GPKG")

    aoi = read_aoi(path)

    assert _parts_bounds(aoi.geometry) == [
        pytest.approx(FIJI_EAST, abs=1e-3),
        pytest.approx(FIJI_WEST, abs=1e-3),
    ]
    assert aoi.area_km2 == pytest.approx(_fiji_area_km2(), rel=1e-3)


def test_wide_polygon_without_jumps_is_read_as_drawn(tmp_path: Path) -> None:
    # 200° of longitude with a vertex every 20°: no edge jumps across 180°, so it really
    # goes the long way round (and is far too large).
    xs = list(range(-100, 101, 20))
    ring = [[x, 0.0] for x in xs] + [[x, 10.0] for x in reversed(xs)] + [[-100, 0.0]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    path = _write_geojson(tmp_path / "belt.geojson", [_feature("Belt", polygon)])

    with pytest.raises(AoiTooLargeError) as excinfo:
        read_aoi(path)
    assert "24,742,402 km²" in _one_line_error(excinfo)
    aoi = read_aoi(path, max_area_km2=1e8)
    assert aoi.geometry.geom_type == "Polygon"
    assert aoi.geometry.bounds == (-100.0, 0.0, 100.0, 10.0)
    assert aoi.geometry.equals(Polygon(ring))


def test_ring_winding_round_a_pole_is_refused(tmp_path: Path) -> None:
    ring = [[0.0, 80.0], [90.0, 80.0], [180.0, 80.0], [-90.0, 80.0], [0.0, 80.0]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    path = _write_geojson(tmp_path / "arctic.geojson", [_feature("Cap", polygon)])

    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "arctic.geojson" in message
    assert "feature 1 ('Cap') winds round a pole" in message
    assert "redraw it without the pole" in message


def test_polar_cap_drawn_along_180_is_read_as_drawn(tmp_path: Path) -> None:
    # How Natural Earth draws Antarctica: along the coast from 180° W to 180° E (a vertex
    # every 2°), then down 180° to the pole and back along 90° S: its one jump is along 180°.
    ring = [[float(x), -70.0] for x in range(-180, 181, 2)]
    ring += [[180.0, -90.0], [-180.0, -90.0], [-180.0, -70.0]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    path = _write_geojson(tmp_path / "antarctic.geojson", [_feature("Cap", polygon)])

    aoi = read_aoi(path, max_area_km2=1e9)

    assert aoi.geometry.equals(Polygon(ring))
    assert aoi.area_km2 == pytest.approx(geodesic_area_km2(Polygon(ring)), rel=1e-9)
    # About the cap south of 70° S: 2πR²(1 - sin 70°) on the sphere of WGS84's area.
    assert aoi.area_km2 == pytest.approx(2 * math.pi * 6371.007**2 * (1 - 0.9396926), rel=0.02)


# --- coordinates that are not numbers ---------------------------------------------------------


def _text_with(tmp_path: Path, name: str, replace: str) -> Path:
    """A two-feature GeoJSON whose second polygon has ``replace`` for one latitude."""
    features = [_feature("Good field", _square()), _feature("Lost camp", _square(18.3))]
    path = _write_geojson(tmp_path / name, features)
    text = path.read_text()
    assert text.count("-19.59]") == 4
    # The third vertex of the second square: written after the first square's five.
    head, _, tail = text.partition('"Lost camp"')
    path.write_text(head + '"Lost camp"' + tail.replace("-19.59]", f"{replace}]", 1))
    return path


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_coordinates_name_the_feature(tmp_path: Path, literal: str) -> None:
    path = _text_with(tmp_path, "nan.geojson", literal)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray RuntimeWarning from shapely either
        with pytest.raises(AoiCoordinateError) as excinfo:
            read_aoi(path)

    message = _one_line_error(excinfo)
    assert "nan.geojson" in message
    assert "feature 2 ('Lost camp') has a coordinate that is not a number" in message
    assert f"(x 18.31, y {float(literal):.6g})" in message
    assert "fix or remove that vertex" in message


def test_null_coordinates_are_a_feature_without_geometry(tmp_path: Path) -> None:
    # GDAL reads a polygon with a null coordinate as no geometry at all.
    path = _text_with(tmp_path, "null.geojson", "null")

    with pytest.raises(AoiGeometryError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "null.geojson" in message
    assert "feature 2 ('Lost camp') has no geometry, or none that can be read" in message
    assert "null coordinates" in message


# --- what the file is: pipes, sockets, devices, sizes -----------------------------------------


def _read_within(path: Path, seconds: float = 20.0) -> BaseException | None:
    """Call read_aoi in a thread so that a file that blocks fails the test, not hangs it."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            read_aoi(path)
        except BaseException as err:  # handed to the test
            outcome.append(err)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"read_aoi({path}) still blocks after {seconds} s"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_fifo_is_named_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.geojson"
    os.mkfifo(fifo)

    err = _read_within(fifo)

    assert isinstance(err, AoiFormatError)
    message = str(err)
    assert "\n" not in message
    assert "pipe.geojson' is a named pipe (FIFO), not a file" in message
    assert "give the vector file itself" in message


def test_socket_is_named(tmp_path: Path) -> None:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets on this system")
    path = tmp_path / "sock.geojson"
    if len(str(path)) > 100:
        pytest.skip("tmp_path is too long for a Unix socket address")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        err = _read_within(path)
    assert isinstance(err, AoiFormatError)
    assert "sock.geojson' is a socket, not a file" in str(err)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_device_is_named(tmp_path: Path) -> None:
    link = tmp_path / "null.geojson"
    link.symlink_to("/dev/null")
    err = _read_within(link)
    assert isinstance(err, AoiFormatError)
    assert "null.geojson' is a character device, not a file" in str(err)


def test_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.geojson"
    with path.open("wb") as f:
        f.truncate(aoi_module.MAX_FILE_BYTES + 1)  # sparse: costs no disk, reads as zeros

    with pytest.raises(AoiTooLargeError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "huge.geojson' is 1 GiB (1,073,741,825 bytes), more than the limit of 1 GiB" in message
    assert "simplify its polygons" in message
    assert aoi_module.MAX_FILE_BYTES == 1 << 30


def test_sha256_is_hashed_in_blocks_over_the_whole_file(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "padded.geojson", [_feature("field", _square())])
    path.write_text(path.read_text() + " " * (3 * 1024 * 1024 + 7))  # over three blocks

    aoi = read_aoi(path)

    assert aoi.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- declared CRSs ----------------------------------------------------------------------------


def test_unknown_declared_crs_is_refused(tmp_path: Path) -> None:
    # GDAL reads an unknown `crs` member as EPSG:4326 without a word.
    path = _write_geojson(
        tmp_path / "odd.geojson", [_feature("field", _square())], "urn:ogc:def:crs:EPSG::999999"
    )
    assert pyogrio.read_dataframe(path).crs == CRS.from_epsg(4326)

    with pytest.raises(AoiCoordinateError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "odd.geojson" in message
    assert "declares the CRS 'urn:ogc:def:crs:EPSG::999999'" in message
    assert "not a known CRS" in message
    assert "remove the member and save the coordinates as lon/lat" in message


def test_unknown_declared_crs_in_a_zipped_geojson_is_refused(tmp_path: Path) -> None:
    inner = _write_geojson(tmp_path / "odd.geojson", [_feature("field", _square())], "EPSG:999999")
    path = _zip([inner], tmp_path / "odd.zip", folder="data/")
    with pytest.raises(AoiCoordinateError, match="declares the CRS 'EPSG:999999'"):
        read_aoi(path)


def test_known_declared_crs_is_used(tmp_path: Path) -> None:
    utm = box(200_000, 7_823_000, 201_000, 7_824_000)
    features = [_feature("field", dict(shapely.geometry.mapping(utm)))]
    path = _write_geojson(tmp_path / "utm.geojson", features, "urn:ogc:def:crs:EPSG::32734")

    aoi = read_aoi(path)

    assert aoi.area_km2 == pytest.approx(1.0, rel=2e-3)  # 1 km², UTM's scale error aside
    assert aoi.geometry.bounds == pytest.approx((18.1390, -19.6658, 18.1487, -19.6566), abs=1e-4)


def test_degrees_declared_as_utm_are_refused(tmp_path: Path) -> None:
    path = _write_geojson(
        tmp_path / "degrees.geojson", [_feature("field", _square())], "urn:ogc:def:crs:EPSG::32734"
    )

    with pytest.raises(AoiCoordinateError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "degrees.geojson" in message
    assert "declares the projected CRS EPSG:32734" in message
    assert "(x 18.2…18.21, y -19.6…-19.59) look like lon/lat degrees" in message
    assert "save the file as EPSG:4326" in message


def test_large_degree_box_declared_as_utm_is_refused(tmp_path: Path) -> None:
    # 6° × 10° read as metres is 60 m², more than 1 m² per vertex, but it lands near the
    # south pole, far outside UTM 34S's area of use (18–24° E, 80° S–0°).
    path = _write_geojson(
        tmp_path / "region.geojson",
        [_feature("region", dict(shapely.geometry.mapping(box(18, -20, 24, -10))))],
        "EPSG:32734",
    )
    with pytest.raises(AoiCoordinateError, match="look like lon/lat degrees"):
        read_aoi(path)


def test_small_coordinates_of_a_local_grid_are_accepted(tmp_path: Path) -> None:
    # A farm's own grid: transverse Mercator with its origin at the farm gate, fields of a
    # few hundred metres, so every coordinate is within ±180/±90 - and genuine.
    local = CRS.from_proj4("+proj=tmerc +lat_0=-19.6 +lon_0=18.2 +k=1 +x_0=0 +y_0=0 +ellps=WGS84")
    fields = [box(10, 20, 160, 85), box(-170, -80, -20, 0)]
    frame = gpd.GeoDataFrame({"name": ["North", "South"]}, geometry=fields, crs=local)
    path = tmp_path / "farm_grid.gpkg"
    frame.to_file(path, driver="GPKG")

    aoi = read_aoi(path)

    assert aoi.zones["name"].tolist() == ["North", "South"]
    assert aoi.area_km2 == pytest.approx((150 * 65 + 150 * 80) / 1e6, rel=1e-3)
    minx, _, _, maxy = aoi.geometry.bounds
    assert minx == pytest.approx(18.2 - 170 / 104_800, abs=1e-5)
    assert maxy == pytest.approx(-19.6 + 85 / 110_770, abs=1e-5)


def test_unreadable_prj_is_refused(tmp_path: Path) -> None:
    _write_shapefile(read_aoi(DEFAULT_AOI).zones, tmp_path / "shp")
    (tmp_path / "shp" / "zones.prj").write_text("not a CRS at all")

    with pytest.raises(AoiCoordinateError) as excinfo:
        read_aoi(tmp_path / "shp" / "zones.shp")

    message = _one_line_error(excinfo)
    assert "zones.shp" in message
    assert "has a .prj file that GDAL cannot read" in message


# --- hostile and odd zip files ----------------------------------------------------------------


def test_zip_with_too_many_members_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "crowd.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(20_000):
            archive.writestr(f"f{i}.geojson", "{}")

    started = time.perf_counter()
    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)

    assert time.perf_counter() - started < 5.0
    message = _one_line_error(excinfo)
    assert "crowd.zip' is an archive of 20,000 members, more than the limit of 1,000" in message
    assert "zip only the Shapefile's .shp, .shx, .dbf and .prj files" in message
    assert aoi_module.MAX_ZIP_MEMBERS == 1_000


def test_zip_with_too_many_vector_files_is_refused(tmp_path: Path) -> None:
    one = json.dumps({"type": "FeatureCollection", "features": [_feature("f", _square())]})
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(aoi_module.MAX_ZIP_VECTOR_FILES + 1):
            archive.writestr(f"f{i:03d}.geojson", one)

    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "holds 101 vector files, more than the limit of 100" in message
    assert "put the zones in one Shapefile or GeoPackage" in message


def test_zip_bomb_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zones.shp", bytes(20 << 20))  # 20 MiB of zeros deflate to 20 KiB

    with pytest.raises(AoiFormatError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "bomb.zip': member 'zones.shp' expands 1,0" in message  # about 1,030 times
    assert "to 20 MiB), more than the limit of 100 times" in message


def test_kmz_bomb_is_refused_before_gdal_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.kmz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("doc.kml", bytes(20 << 20))
    with pytest.raises(AoiFormatError, match=r"member 'doc\.kml' expands"):
        read_aoi(path)


def test_zip_unzipping_past_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lower the 1 GiB limit to 1 MiB to keep the file small; random bytes do not compress.
    monkeypatch.setattr(aoi_module, "MAX_ZIP_BYTES", 1 << 20)
    files = _write_shapefile(read_aoi(DEFAULT_AOI).zones, tmp_path / "shp")
    (tmp_path / "shp" / "zones.dbf").write_bytes(random.Random(1).randbytes(2 << 20))
    path = _zip(files, tmp_path / "big.zip")

    with pytest.raises(AoiTooLargeError) as excinfo:
        read_aoi(path)

    message = _one_line_error(excinfo)
    assert "big.zip' unzips to 2 MiB (" in message
    assert "bytes) of vector data, more than the limit of 1 MiB" in message
    assert "simplify its polygons or split it" in message


def test_zip_limit_counts_only_what_gdal_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aoi_module, "MAX_ZIP_BYTES", 1 << 20)
    files = _write_shapefile(read_aoi(DEFAULT_AOI).zones, tmp_path / "shp")
    photo = tmp_path / "farm photo.jpg"
    photo.write_bytes(random.Random(2).randbytes(2 << 20))  # beside the Shapefile, unread

    aoi = read_aoi(_zip([*files, photo], tmp_path / "with_photo.zip"))

    assert aoi.zones["name"].tolist() == DEFAULT_ZONES


def test_zip_with_two_shapefiles_reads_both_as_zones(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    camps = gpd.GeoDataFrame(
        {"name": ["Camp A"]}, geometry=[box(18.2, -19.6, 18.21, -19.59)], crs=4326
    )
    fields = gpd.GeoDataFrame(
        {"name": ["Field B"]}, geometry=[box(18.3, -19.6, 18.31, -19.59)], crs=4326
    )
    camps.to_file(folder / "camps.shp")
    fields.to_crs(32734).to_file(folder / "fields.shp")  # another CRS, too
    path = _zip(sorted(folder.iterdir()), tmp_path / "farm.zip")

    aoi = read_aoi(path)

    # Files in name order, features in file order.
    assert aoi.zones["name"].tolist() == ["Camp A", "Field B"]
    assert aoi.zones["zone_id"].tolist() == [1, 2]
    assert aoi.zones.geometry.iloc[0].bounds == pytest.approx((18.2, -19.6, 18.21, -19.59))
    assert aoi.zones.geometry.iloc[1].bounds == pytest.approx((18.3, -19.6, 18.31, -19.59))
    expected = geodesic_area_km2(box(18.2, -19.6, 18.21, -19.59)) + geodesic_area_km2(
        box(18.3, -19.6, 18.31, -19.59)
    )
    assert aoi.area_km2 == pytest.approx(expected, rel=1e-6)


def test_repeated_zone_names_are_numbered_with_one_warning(tmp_path: Path) -> None:
    # Two shapefiles of one farm tool, each naming its polygon "Camp": the products key the
    # zones by name, so the runs crashed assembling the zones layer before the numbering.
    folder = tmp_path / "two"
    folder.mkdir()
    for i, stem in enumerate(("north", "south")):
        gpd.GeoDataFrame(
            {"name": ["Camp", "Camp (2)"][: i + 1]},
            geometry=[
                box(18.2 + i / 10, -19.6, 18.21 + i / 10, -19.59),
                box(18.5, -19.6, 18.51, -19.59),
            ][: i + 1],
            crs=4326,
        ).to_file(folder / f"{stem}.shp")
    path = _zip(sorted(folder.iterdir()), tmp_path / "farm.zip")

    with pytest.warns(
        AoiRepairedWarning,
        match=r"zone names repeat, so 1 zone\(s\) were numbered \('Camp \(3\)'\)",
    ):
        aoi = read_aoi(path)

    # "Camp (2)" is the file's own name, so the repeated "Camp" becomes "Camp (3)".
    assert aoi.zones["name"].tolist() == ["Camp", "Camp (3)", "Camp (2)"]
    assert aoi.zones["zone_id"].tolist() == [1, 2, 3]
    assert aoi.zones.geometry.iloc[1].bounds == pytest.approx((18.3, -19.6, 18.31, -19.59))


# --- names of AOIs in any script --------------------------------------------------------------


def test_slug_keeps_letters_of_any_script() -> None:
    assert _slug(Path("aoi/農場.geojson")) == "農場"
    assert _slug(Path("北京.geojson")) == "北京"
    assert _slug(Path("My Farm.gpkg")) == "my-farm"
    assert _slug(Path("Ферма Иванова.kml")) == "ферма-иванова"
    assert _slug(Path("खेत 2.kml")) == "खेत-2"  # the vowel sign (a combining mark) is kept
    assert _slug(Path("Caf\u0065\u0301 Fields.zip")) == "caf\u00e9-fields"  # NFC
    assert _slug(Path("Åland (north).shp")) == "åland-north"


def test_slug_never_escapes_the_output_folder() -> None:
    assert _slug(Path("../../x")) == "x"
    assert _slug(Path("..")) == "aoi"
    assert _slug(Path("..geojson")) == "aoi"
    assert _slug(Path("...geojson")) == "aoi"
    assert _slug(Path(".hidden.kml")) == "hidden"
    assert _slug(Path("a\\..\\b.geojson")) == "a-b"
    assert _slug(Path("farm\x00\n\x1b[31m.kml")) == "farm-31m"
    assert _slug(Path("CON.geojson")) == "con-aoi"  # a device, not a folder, on Windows
    assert _slug(Path("nul.kml")) == "nul-aoi"


def test_long_names_are_cut_but_stay_distinct() -> None:
    a, b = _slug(Path("農" * 200 + "a.kml")), _slug(Path("農" * 200 + "b.kml"))
    assert len(a) == len(b) == 64
    assert a != b
    assert a.startswith("農" * 55 + "-")


@given(st.text(max_size=80))
def test_slug_is_always_one_safe_path_component(text: str) -> None:
    slug = _slug(Path(text))
    assert slug
    assert slug not in {".", ".."}
    assert len(slug) <= 64
    assert not any(c in slug for c in "/\\.:\x00")
    assert all(c.isprintable() for c in slug)
    base = Path("/outputs")
    assert (base / slug).parent == base
    assert Path(slug).name == slug


def test_non_latin_aoi_names_stay_apart(tmp_path: Path) -> None:
    names = set()
    for stem in ("農場", "北京"):
        path = _write_geojson(tmp_path / f"{stem}.geojson", [_feature("field", _square())])
        names.add(read_aoi(path).name)
    assert names == {"農場", "北京"}
