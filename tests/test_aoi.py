"""Tests for agrimon.aoi: reading, repairing and validating areas of interest."""

from __future__ import annotations

import hashlib
import json
import shutil
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
