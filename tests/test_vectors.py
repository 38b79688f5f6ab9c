"""Vectors of a run: RFC 7946 GeoJSON, and one GeoPackage that QGIS 3.22's GDAL opens cleanly."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
import shapely
from shapely.geometry import Polygon, shape

from agrimon.products.vectors import GEOJSON_DECIMALS, add_layer, write_geojson

from .conftest import run_gpkg

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _rings(geometry: dict[str, Any]) -> list[list[list[float]]]:
    polygons = (
        [geometry["coordinates"]]
        if geometry["type"] == "Polygon"
        else geometry["coordinates"]
        if geometry["type"] == "MultiPolygon"
        else []
    )
    return [ring for polygon in polygons for ring in polygon]


def _assert_rfc7946(path: Path) -> int:
    """Check one GeoJSON file; return its feature count."""
    text = path.read_text()
    doc = json.loads(text, parse_float=Decimal)
    assert "crs" not in doc, f"{path.name}: RFC 7946 has no crs member"
    features = doc["features"]
    for feature in features:
        geometry = feature["geometry"]
        for ring in _rings(geometry):
            for x, y in ring:
                assert -180 <= x <= 180 and -90 <= y <= 90, f"{path.name}: not lon/lat"
                for value in (Decimal(x), Decimal(y)):
                    exponent = int(value.as_tuple().exponent)
                    decimals = -exponent if exponent < 0 else 0
                    assert decimals <= GEOJSON_DECIMALS, f"{path.name}: {value} not rounded"
        if geometry["type"] in ("Polygon", "MultiPolygon"):
            parts = [geometry["coordinates"]]
            if geometry["type"] == "MultiPolygon":
                parts = geometry["coordinates"]
            for polygon in parts:
                floats = [[[float(v) for v in p] for p in ring] for ring in polygon]
                exterior = shapely.LinearRing(floats[0])
                assert exterior.is_ccw, f"{path.name}: exterior ring is clockwise"
                for hole in floats[1:]:
                    assert not shapely.LinearRing(hole).is_ccw, f"{path.name}: hole is CCW"
    return len(features)


def test_geojson_writer_orients_and_rounds(tmp_path: Path) -> None:
    # A clockwise exterior with a counter-clockwise hole, in UTM 34S, at sub-cm precision.
    exterior = [
        (600000.123456, 7800000.0),
        (600000.123456, 7801000.0),
        (601000.0, 7801000.0),
        (601000.0, 7800000.0),
    ]
    hole = [
        (600200.0, 7800200.0),
        (600400.0, 7800200.0),
        (600400.0, 7800400.0),
        (600200.0, 7800400.0),
    ]
    polygon = Polygon(exterior, [hole])
    assert not polygon.exterior.is_ccw
    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[polygon], crs=32734)
    path = write_geojson(frame, tmp_path / "x.geojson")
    assert _assert_rfc7946(path) == 1
    back = shape(json.loads(path.read_text())["features"][0]["geometry"])
    expected = frame.to_crs(4326).geometry.iloc[0]
    assert back.hausdorff_distance(expected) <= 1e-7  # the same place, to the rounding


def test_every_geojson_of_a_run_is_rfc7946(season_runs: tuple[Path, Path]) -> None:
    _, later = season_runs
    files = sorted(later.glob("*.geojson"))
    names = {p.stem for p in files}
    assert {"invasive_polygons", "yield_forecast", "invasive_change_polygons"} <= names
    for path in files:
        assert _assert_rfc7946(path) > 0


def test_the_run_geopackage_holds_every_vector_layer(season_runs: tuple[Path, Path]) -> None:
    _, later = season_runs
    gpkg = run_gpkg(later)
    layers = dict(pyogrio.list_layers(gpkg).tolist())
    assert set(layers) == {
        "aoi",
        "zones",
        "zonal_stats",
        "invasive_polygons",
        "yield_forecast",
        "invasive_change_polygons",
        "layer_styles",  # QGIS's table of the layers' default styles
    }
    assert layers["zonal_stats"] is None  # an attribute table
    # No other GeoPackage in the folder: one file holds them all.
    assert [p.name for p in later.glob("*.gpkg")] == [gpkg.name]
    zones = gpd.read_file(gpkg, layer="zones")
    assert zones.crs.to_epsg() == 32734
    assert list(zones["name"]) == ["farm block", "north & camp"]
    # The zones overlap: each zone's share counts all of its own pixels.
    assert (zones["encroached_ha"] <= zones["area_ha"] + 1e-6).all()
    whole, north = zones["encroached_ha"]
    assert whole > north > 0
    with sqlite3.connect(gpkg) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    assert version == 10200  # GeoPackage 1.2: QGIS 3.22 (GDAL 3.6) reads it fully


def test_add_layer_builds_one_file_of_layers(tmp_path: Path) -> None:
    gpkg = tmp_path / "run.gpkg"
    square = gpd.GeoDataFrame({"n": [1]}, geometry=[shapely.box(0, 0, 10, 10)], crs=32734)
    add_layer(square, gpkg, layer="a")
    add_layer(square.assign(n=2), gpkg, layer="b")
    add_layer(square.drop(columns="geometry").assign(n=3), gpkg, layer="table")
    assert [row[0] for row in pyogrio.list_layers(gpkg)] == ["a", "b", "table"]
    assert int(gpd.read_file(gpkg, layer="b")["n"].iloc[0]) == 2


@pytest.mark.skipif(
    subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "from osgeo import gdal"], capture_output=True, check=False
    ).returncode
    != 0
    if SYSTEM_PYTHON.exists()
    else True,
    reason="Debian's GDAL for Python (python3-gdal, with python3-qgis) is not installed",
)
def test_qgis_gdal_opens_the_geopackage_without_a_warning(season_runs: tuple[Path, Path]) -> None:
    """The GDAL QGIS 3.22 runs on (3.6 in Debian 12) warns on GeoPackage 1.4; not on ours."""
    _, later = season_runs
    script = (
        "import json, sys\n"
        "from osgeo import gdal\n"
        "messages = []\n"
        "gdal.PushErrorHandler(lambda c, n, m: messages.append(m))\n"
        "ds = gdal.OpenEx(sys.argv[1], gdal.OF_VECTOR)\n"
        "layers = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]\n"
        "print(json.dumps({'version': gdal.__version__, 'messages': messages, "
        "'layers': layers}))\n"
    )
    out = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", script, str(run_gpkg(later))],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["messages"] == [], report
    assert "zones" in report["layers"] and "yield_forecast" in report["layers"]
