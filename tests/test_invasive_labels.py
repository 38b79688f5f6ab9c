"""Training labels: reading and checking files, burning them onto a grid, the QGIS template.

Rasterisation is checked on hand-made grids whose pixel sets are worked out by hand; every
user error is one line naming the file; the template is read back with GDAL (pyogrio and,
when present, the system's GDAL), with sqlite, and opened and edited in real QGIS.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from typer.testing import CliRunner

from agrimon.aoi import DEFAULT_AOI, read_aoi
from agrimon.cli import app
from agrimon.errors import AgrimonError, LabelError
from agrimon.invasive.labels import (
    DEFAULT_TEMPLATE_CLASSES,
    DOMAIN_NAME,
    IGNORE,
    LabelWarning,
    class_pixel_counts,
    coverage,
    labels_qml,
    rasterise_labels,
    read_labels,
    write_template,
)
from tests.test_qgis import RESULT_PREFIX, SYSTEM_PYTHON, probe_env, qgis_missing_reason

runner = CliRunner()

#: The hand-made grid: 10 × 10 pixels of 10 m in UTM 33S, top-left corner at (X0, Y0).
X0, Y0, RES, SIZE = 500_000.0, 7_800_000.0, 10.0, 10
UTM = "EPSG:32733"


def grid(size: int = SIZE, crs: str = UTM, x0: float = X0, y0: float = Y0) -> GeoBox:
    return GeoBox((size, size), Affine(RES, 0, x0, 0, -RES, y0), crs)


def centre(row: int, col: int) -> tuple[float, float]:
    """Map coordinates of a pixel centre of `grid()`."""
    return X0 + RES * (col + 0.5), Y0 - RES * (row + 0.5)


def cells(rows: Iterable[int], cols: Iterable[int]) -> set[tuple[int, int]]:
    return {(r, c) for r in rows for c in cols}


def pixels(mask: np.ndarray[Any, Any], value: int) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask == value), strict=True)}


def write(
    path: Path,
    features: list[tuple[Any, BaseGeometry | None]],
    crs: str | None = UTM,
    column: str = "class",
    **columns: list[Any],
) -> Path:
    """Write features ``(class, geometry)`` with GDAL, the driver chosen by the suffix."""
    frame = gpd.GeoDataFrame(
        {column: [c for c, _ in features], **columns},
        geometry=[g for _, g in features],
        crs=crs,
    )
    frame.to_file(path)
    return path


def labels_in(tmp_path: Path, features: list[tuple[Any, BaseGeometry | None]], **kw: Any) -> Any:
    """Labels of `features` written to and read back from a GeoPackage."""
    classes = kw.pop("classes", None)
    path = write(tmp_path / "labels.gpkg", features, **kw)
    return read_labels(path, "class", classes)


def square(row0: int, col0: int, row1: int, col1: int, margin: float) -> Polygon:
    """Box through the centres of pixels (row0, col0) .. (row1, col1), grown by `margin`."""
    left, top = centre(row0, col0)
    right, bottom = centre(row1, col1)
    return box(left - margin, bottom - margin, right + margin, top + margin)


# --- rasterisation ----------------------------------------------------------------------------


def test_edges_through_pixel_centres_include_them(tmp_path: Path) -> None:
    # Edges exactly on the centres of rows 1..4 and columns 2..6: those 20 pixels, all of
    # them (GDAL alone would drop the column on the left edge).
    labels = labels_in(tmp_path, [("a", square(1, 2, 4, 6, 0.0)), ("b", Point(centre(9, 9)))])
    mask = rasterise_labels(labels, grid())
    assert mask.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE)
    assert pixels(mask, 1) == cells(range(1, 5), range(2, 7))
    assert pixels(mask, 2) == {(9, 9)}
    assert pixels(mask, IGNORE) == cells(range(10), range(10)) - cells(range(1, 5), range(2, 7)) - {
        (9, 9)
    }


def test_edges_just_inside_or_outside_the_centres(tmp_path: Path) -> None:
    shrunk = labels_in(tmp_path, [("a", square(1, 2, 4, 6, -0.01)), ("b", Point(centre(0, 0)))])
    assert pixels(rasterise_labels(shrunk, grid()), 1) == cells(range(2, 4), range(3, 6))
    grown = tmp_path / "grown"
    grown.mkdir()
    labels = labels_in(grown, [("a", square(1, 2, 4, 6, 0.01)), ("b", Point(centre(0, 0)))])
    assert pixels(rasterise_labels(labels, grid()), 1) == cells(range(1, 5), range(2, 7))


def test_diagonal_edge_through_centres(tmp_path: Path) -> None:
    # Right triangle with its corners on the centres of (0, 0), (0, 9) and (9, 0): its
    # hypotenuse passes through every centre with row + col == 9, all included.
    triangle = Polygon([centre(0, 0), centre(0, 9), centre(9, 0)])
    labels = labels_in(tmp_path, [("a", triangle), ("b", Point(centre(9, 9)))])
    mask = rasterise_labels(labels, grid())
    assert pixels(mask, 1) == {(r, c) for r in range(10) for c in range(10) if r + c <= 9}
    assert len(pixels(mask, 1)) == 55


def test_polygon_with_hole_and_multipolygon(tmp_path: Path) -> None:
    outer = square(0, 0, 4, 4, 2.0)
    hole = square(2, 2, 2, 2, 2.0)
    ring = Polygon(outer.exterior.coords, [hole.exterior.coords])
    parts = MultiPolygon([square(7, 0, 7, 1, 2.0), square(9, 8, 9, 9, 2.0)])
    labels = labels_in(tmp_path, [("a", ring), ("b", parts)])
    mask = rasterise_labels(labels, grid())
    assert pixels(mask, 1) == cells(range(5), range(5)) - {(2, 2)}
    assert pixels(mask, 2) == {(7, 0), (7, 1), (9, 8), (9, 9)}


def test_points_mark_the_pixel_that_holds_them(tmp_path: Path) -> None:
    features: list[tuple[Any, BaseGeometry | None]] = [
        ("a", Point(X0 + 23, Y0 - 37)),  # row 3, col 2
        ("a", Point(X0 + 30, Y0 - 40)),  # on the corner of four pixels: right and below
        ("b", Point(X0 + 0.5, Y0 - 99.5)),  # bottom-left pixel
        ("b", Point(X0 + 100, Y0 - 50)),  # on the grid's right edge: outside
        ("b", Point(X0 - 5, Y0 - 5)),  # outside
    ]
    labels = labels_in(tmp_path, features)
    mask = rasterise_labels(labels, grid())
    assert pixels(mask, 1) == {(3, 2), (4, 3)}
    assert pixels(mask, 2) == {(9, 0)}
    assert coverage(labels, grid()) == 4  # the point on the right edge touches the footprint


def test_lonlat_labels_are_reprojected_onto_the_utm_grid(tmp_path: Path) -> None:
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    utm_a = square(2, 3, 5, 6, 2.5)  # 4 × 4 pixels, edges 2.5 m off the centres
    utm_b = square(8, 0, 9, 2, 2.5)
    lonlat = [
        (
            "a",
            shapely.transform(
                shapely.segmentize(utm_a, 1.0), to_lonlat.transform, interleaved=False
            ),
        ),
        (
            "b",
            shapely.transform(
                shapely.segmentize(utm_b, 1.0), to_lonlat.transform, interleaved=False
            ),
        ),
    ]
    path = write(tmp_path / "lonlat.geojson", lonlat, crs="EPSG:4326")
    labels = read_labels(path, "class")
    assert labels.frame.crs.to_epsg() == 4326
    lon, lat = lonlat[0][1].centroid.coords[0]
    assert 14.9 < lon < 15.1
    assert -20 < lat < -19.8
    mask = rasterise_labels(labels, grid())
    assert pixels(mask, 1) == cells(range(2, 6), range(3, 7))
    assert pixels(mask, 2) == cells(range(8, 10), range(3))
    assert class_pixel_counts(mask, labels.classes) == {"a": 16, "b": 6}


def test_overlap_of_two_classes_is_ignored_same_class_is_kept(tmp_path: Path) -> None:
    features: list[tuple[Any, BaseGeometry | None]] = [
        ("a", square(0, 0, 3, 3, 2.0)),
        ("b", square(2, 2, 5, 5, 2.0)),  # overlaps a on rows 2..3, cols 2..3
        ("a", square(0, 2, 1, 6, 2.0)),  # overlaps the first a on rows 0..1, cols 2..3
        ("b", Point(centre(0, 0))),  # a point of b inside a polygon of a
    ]
    labels = labels_in(tmp_path, features)
    mask = rasterise_labels(labels, grid())
    a = (cells(range(4), range(4)) | cells(range(2), range(2, 7))) - {(0, 0)}
    b = cells(range(2, 6), range(2, 6))
    conflicts = (a & b) | {(0, 0)}
    assert conflicts == cells(range(2, 4), range(2, 4)) | {(0, 0)}
    assert pixels(mask, 1) == a - b
    assert pixels(mask, 2) == b - a
    assert class_pixel_counts(mask, labels.classes) == {"a": len(a - b), "b": len(b - a)}
    assert all(mask[r, c] == IGNORE for r, c in conflicts)


def test_classes_order_is_respected(tmp_path: Path) -> None:
    features: list[tuple[Any, BaseGeometry | None]] = [
        ("open", Point(centre(0, 0))),
        ("encroached", Point(centre(1, 1))),
    ]
    default = labels_in(tmp_path, features)
    assert default.classes == ("encroached", "open")
    mask = rasterise_labels(default, grid())
    assert (mask[0, 0], mask[1, 1]) == (2, 1)
    other = tmp_path / "other"
    other.mkdir()
    given = labels_in(other, features, classes=["open", "encroached", "water"])
    assert given.classes == ("open", "encroached", "water")
    assert given.value_of("water") == 3
    mask = rasterise_labels(given, grid())
    assert (mask[0, 0], mask[1, 1]) == (1, 2)
    assert class_pixel_counts(mask, given.classes) == {"open": 1, "encroached": 1, "water": 0}


def test_numeric_class_values_read_as_text(tmp_path: Path) -> None:
    path = write(tmp_path / "n.gpkg", [(1, Point(centre(0, 0))), (2, Point(centre(0, 1)))])
    labels = read_labels(path, "class")
    assert labels.classes == ("1", "2")
    assert list(labels.frame["class"]) == ["1", "2"]


def test_features_outside_the_grid_are_left_out(tmp_path: Path) -> None:
    far = box(X0 + 5_000, Y0 - 5_000, X0 + 5_100, Y0 - 4_900)
    labels = labels_in(tmp_path, [("a", square(0, 0, 0, 0, 2.0)), ("b", far)])
    assert coverage(labels, grid()) == 1
    mask = rasterise_labels(labels, grid())
    assert pixels(mask, 1) == {(0, 0)}
    assert class_pixel_counts(mask, labels.classes) == {"a": 1, "b": 0}


def test_class_pixel_counts_refuses_values_above_the_classes() -> None:
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    assert class_pixel_counts(mask, ["x", "y", "z"]) == {"x": 1, "y": 1, "z": 1}
    with pytest.raises(ValueError, match="value 3"):
        class_pixel_counts(mask, ["x", "y"])


# --- reading: formats -------------------------------------------------------------------------


TWO_POINTS: list[tuple[Any, BaseGeometry | None]] = [
    ("a", Point(centre(0, 0))),
    ("b", Point(centre(1, 1))),
]


def test_reads_a_zipped_shapefile(tmp_path: Path) -> None:
    folder = tmp_path / "shp"
    folder.mkdir()
    write(folder / "labels.shp", TWO_POINTS)
    archive = tmp_path / "labels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in sorted(folder.iterdir()):
            zf.write(part, part.name)
    labels = read_labels(archive, "class")
    assert labels.classes == ("a", "b")
    assert labels.path == archive
    assert pixels(rasterise_labels(labels, grid()), 2) == {(1, 1)}


def test_prefers_the_labels_layer_of_a_template(tmp_path: Path) -> None:
    path = tmp_path / "t.gpkg"
    write_template(DEFAULT_AOI, path)
    frame = gpd.GeoDataFrame(
        {"class": ["open", "encroached"], "note": ["", "dense"]},
        geometry=[
            MultiPolygon([box(18.2, -19.62, 18.201, -19.619)]),
            MultiPolygon([box(18.21, -19.62, 18.211, -19.619)]),
        ],
        crs="EPSG:4326",
    )
    pyogrio.write_dataframe(frame, path, layer="labels", append=True)
    labels = read_labels(path, "class", DEFAULT_TEMPLATE_CLASSES)
    assert labels.classes == ("encroached", "open")
    assert list(labels.frame["class"]) == ["open", "encroached"]
    aoi_layer = read_labels(path, "name", layer="aoi")
    assert len(aoi_layer.frame) == len(read_aoi(DEFAULT_AOI).zones)


# --- reading: every error is one line naming the file -----------------------------------------


def assert_one_line(err: pytest.ExceptionInfo[LabelError], path: Path, *needles: str) -> str:
    text = str(err.value)
    assert isinstance(err.value, AgrimonError)
    assert err.value.exit_code == 2
    assert "\n" not in text
    assert str(path) in text
    for needle in needles:
        assert needle in text, text
    return text


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gpkg"
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "does not exist")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.geojson"
    path.write_bytes(b"")
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "is empty")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.geojson"
    path.write_text("this is not json {")
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "cannot be read", "GeoPackage")


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError) as err:
        read_labels(tmp_path, "class")
    assert_one_line(err, tmp_path, "is not a file")


def test_no_features(tmp_path: Path) -> None:
    path = tmp_path / "none.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "has no features", "agrimon labels template")


def test_no_such_class_column(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", TWO_POINTS, column="kind", note=["x", "y"])
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "no column 'class'", "(it has: kind, note)", "--class-column")


def test_empty_class_values_are_dropped(tmp_path: Path) -> None:
    features: list[tuple[Any, BaseGeometry | None]] = [
        ("a", Point(centre(0, 0))),
        (None, Point(centre(0, 1))),
        ("  ", Point(centre(0, 2))),
        ("b", Point(centre(0, 3))),
    ]
    path = write(tmp_path / "l.gpkg", features)
    with pytest.warns(LabelWarning, match=r"dropped 2 of 4 features .* \(features 2, 3\)"):
        labels = read_labels(path, "class")
    assert list(labels.frame["class"]) == ["a", "b"]
    assert pixels(rasterise_labels(labels, grid()), IGNORE) == cells(range(10), range(10)) - {
        (0, 0),
        (0, 3),
    }


def test_no_class_values_at_all(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", [(None, Point(centre(0, 0))), ("", Point(centre(1, 1)))])
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "none of its 2 features has a value", "--class-column")


def test_only_one_class(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", [("a", Point(centre(0, 0))), ("a", Point(centre(1, 1)))])
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(
        err,
        path,
        "only class 'a'",
        "needs at least two classes to train: add polygons of another class",
    )


def test_value_not_in_classes(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", [*TWO_POINTS, ("shrub", Point(centre(2, 2)))])
    with pytest.raises(LabelError) as err:
        read_labels(path, "class", ["a", "b"])
    assert_one_line(err, path, "'shrub'", "--classes a,b")


@pytest.mark.parametrize(
    ("classes", "needle"),
    [(["a", "a"], "'a' is repeated"), (["a", ""], "empty"), (["a"], "at least two")],
)
def test_bad_given_classes(tmp_path: Path, classes: list[str], needle: str) -> None:
    path = write(tmp_path / "l.gpkg", TWO_POINTS)
    with pytest.raises(LabelError) as err:
        read_labels(path, "class", classes)
    assert_one_line(err, path, needle, "--classes")


def test_too_many_classes(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", TWO_POINTS)
    with pytest.raises(LabelError) as err:
        read_labels(path, "class", ["a", "b", *(f"c{i}" for i in range(253))])
    assert_one_line(err, path, "255 classes", "254")


def test_no_crs(tmp_path: Path) -> None:
    path = write(tmp_path / "l.shp", TWO_POINTS)
    path.with_suffix(".prj").unlink()
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "has no CRS: save it with one, e.g. EPSG:4326")


def test_invalid_polygon_is_repaired(tmp_path: Path) -> None:
    # A bow tie through the centre of pixel (2, 2): two triangles once repaired.
    bowtie = Polygon([centre(0, 0), centre(4, 4), centre(0, 4), centre(4, 0)])
    assert not bowtie.is_valid
    path = write(tmp_path / "l.gpkg", [("a", bowtie), ("b", Point(centre(9, 9)))])
    with pytest.warns(LabelWarning, match=r"repaired 1 invalid polygons \(features 1;"):
        labels = read_labels(path, "class")
    repaired = labels.frame.geometry.iloc[0]
    assert repaired.is_valid
    assert repaired.geom_type == "MultiPolygon"
    assert repaired.area == pytest.approx(800.0)  # two triangles, 40 m base, 20 m high
    mask = rasterise_labels(labels, grid())
    # Centres in the left and right triangles, edges included: |c - 2| >= |r - 2| for r and
    # c in 0..4, i.e. columns 0 and 4 fully, 1 and 3 on rows 1..3, column 2 on row 2.
    assert pixels(mask, 1) == {
        (r, c) for r in range(5) for c in range(5) if abs(c - 2) >= abs(r - 2)
    }


def test_feature_without_geometry_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "l.geojson", [*TWO_POINTS, ("b", None)], crs="EPSG:32733")
    with pytest.warns(LabelWarning, match=r"dropped 1 features without geometry \(features 3\)"):
        labels = read_labels(path, "class")
    assert len(labels.frame) == 2


def test_line_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "l.gpkg", [*TWO_POINTS, ("a", LineString([centre(0, 0), centre(5, 5)]))]
    )
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "feature 3 is a LineString", "polygons or points")


def test_layers_to_choose_from(tmp_path: Path) -> None:
    path = tmp_path / "two.gpkg"
    frame = gpd.GeoDataFrame({"class": ["a", "b"]}, geometry=[g for _, g in TWO_POINTS], crs=UTM)
    pyogrio.write_dataframe(frame, path, layer="one")
    pyogrio.write_dataframe(frame, path, layer="two")
    with pytest.raises(LabelError) as err:
        read_labels(path, "class")
    assert_one_line(err, path, "2 layers (one, two)", "--layer")
    with pytest.raises(LabelError) as err:
        read_labels(path, "class", layer="three")
    assert_one_line(err, path, "no layer 'three'", "--layer")
    assert read_labels(path, "class", layer="two").classes == ("a", "b")


def test_no_feature_inside_the_grid(tmp_path: Path) -> None:
    path = write(
        tmp_path / "far.geojson",
        [("a", box(10.0, 50.0, 10.01, 50.01)), ("b", Point(10.02, 50.02))],
        crs="EPSG:4326",
    )
    labels = read_labels(path, "class")
    assert coverage(labels, grid()) == 0
    with pytest.raises(LabelError) as err:
        rasterise_labels(labels, grid())
    assert_one_line(
        err,
        path,
        "none of its 2 features falls inside the feature raster "
        "(bounds 500000, 7799900, 500100, 7800000 in EPSG:32733; the labels lie within "
        "10.000000, 50.000000, 10.020000, 50.020000 in EPSG:4326): check the file's CRS and area",
    )


def test_features_too_small_for_a_pixel_centre(tmp_path: Path) -> None:
    x, y = X0 + 21, Y0 - 21  # inside pixel (2, 2), away from its centre
    path = write(
        tmp_path / "l.gpkg", [("a", box(x, y - 2, x + 2, y)), ("b", box(x + 3, y - 2, x + 5, y))]
    )
    labels = read_labels(path, "class")
    with pytest.raises(LabelError) as err:
        rasterise_labels(labels, grid())
    assert_one_line(err, path, "its 2 of 2 features inside", "no pixel centre", "10 m")


def test_every_labelled_pixel_in_conflict(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", [("a", square(1, 1, 2, 2, 2)), ("b", square(1, 1, 2, 2, 3))])
    with pytest.raises(LabelError) as err:
        rasterise_labels(read_labels(path, "class"), grid())
    assert_one_line(err, path, "claimed by two classes", "overlap")


def test_feature_that_cannot_be_projected_is_outside(tmp_path: Path) -> None:
    # The far side of the Earth has no place in UTM 33S: outside, not a crash.
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    near = Point(to_lonlat.transform(*centre(0, 0)))
    path = write(tmp_path / "l.geojson", [("a", near), ("b", Point(-165.0, 20.0))], crs="EPSG:4326")
    labels = read_labels(path, "class")
    mask = rasterise_labels(labels, grid())
    assert pixels(mask, 1) == {(0, 0)}
    assert coverage(labels, grid()) == 1


# --- the template -----------------------------------------------------------------------------


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "labels.gpkg"
    assert write_template(DEFAULT_AOI, path) == path
    return path


def test_template_layers_read_back(template: Path) -> None:
    layers = {str(name): kind for name, kind in pyogrio.list_layers(template)}
    assert layers == {"labels": "MultiPolygon", "aoi": "MultiPolygon", "layer_styles": None}
    info = pyogrio.read_info(template, layer="labels")
    assert list(info["fields"]) == ["class", "note"]
    assert list(info["ogr_types"]) == ["OFTString", "OFTString"]
    assert info["features"] == 0
    assert info["crs"] == "EPSG:4326"
    frame = gpd.read_file(template, layer="labels")
    assert len(frame) == 0
    aoi = gpd.read_file(template, layer="aoi")
    zones = read_aoi(DEFAULT_AOI).zones
    assert len(aoi) == len(zones) >= 1
    assert aoi.crs.to_epsg() == 4326
    assert list(aoi["name"]) == list(zones["name"])
    assert aoi.total_bounds == pytest.approx(zones.total_bounds, abs=1e-9)
    # Nothing but the template was left in the folder.
    assert sorted(p.name for p in template.parent.iterdir()) == ["labels.gpkg"]


def test_template_enum_constraint(template: Path) -> None:
    with sqlite3.connect(template) as db:
        columns = db.execute(
            "SELECT table_name, column_name, constraint_name FROM gpkg_data_columns"
        ).fetchall()
        values = db.execute(
            "SELECT value FROM gpkg_data_column_constraints WHERE constraint_name = ? "
            "AND constraint_type = 'enum' ORDER BY rowid",
            (DOMAIN_NAME,),
        ).fetchall()
        extensions = db.execute(
            "SELECT table_name FROM gpkg_extensions WHERE extension_name = 'gpkg_schema'"
        ).fetchall()
        contents = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchall()
    db.close()
    assert columns == [("labels", "class", DOMAIN_NAME)]
    assert [v for (v,) in values] == ["encroached", "open"]
    assert sorted(t for (t,) in extensions) == [
        "gpkg_data_column_constraints",
        "gpkg_data_columns",
    ]
    assert contents == [("attributes",)]


def test_template_style_has_value_map_and_categories(template: Path) -> None:
    with sqlite3.connect(template) as db:
        rows = db.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "useAsDefault, styleQML, styleSLD FROM layer_styles ORDER BY id"
        ).fetchall()
    db.close()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("", "", "labels", "geom", 1),
        ("", "", "aoi", "geom", 1),
    ]
    qml = ET.fromstring(rows[0][5].split("\n", 1)[1])
    widget = qml.find("fieldConfiguration/field[@name='class']/editWidget")
    assert widget is not None
    assert widget.get("type") == "ValueMap"
    entries = widget.findall("config/Option/Option[@name='map']/Option/Option")
    assert [(e.get("name"), e.get("value")) for e in entries] == [
        ("encroached", "encroached"),
        ("open", "open"),
    ]
    renderer = qml.find("renderer-v2")
    assert renderer is not None
    assert (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "class")
    categories = renderer.findall("categories/category")
    assert [c.get("value") for c in categories] == ["encroached", "open"]
    fills = [
        s.find("layer/Option/Option[@name='color']") for s in renderer.findall("symbols/symbol")
    ]
    alphas = [int(f.get("value", "").split(",")[3]) for f in fills if f is not None]
    assert len(alphas) == 2
    assert all(0 < a < 255 for a in alphas)
    assert "<ogc:Literal>open</ogc:Literal>" in rows[0][6]
    aoi_qml = ET.fromstring(rows[1][5].split("\n", 1)[1])
    assert aoi_qml.get("readOnly") == "1"


def test_template_with_own_classes(tmp_path: Path) -> None:
    path = write_template(DEFAULT_AOI, tmp_path / "mine.gpkg", ["water", "bush", "grass"])
    with sqlite3.connect(path) as db:
        values = db.execute(
            "SELECT value FROM gpkg_data_column_constraints WHERE constraint_name = ? "
            "ORDER BY rowid",
            (DOMAIN_NAME,),
        ).fetchall()
    db.close()
    assert [v for (v,) in values] == ["water", "bush", "grass"]


def test_qml_escapes_class_names() -> None:
    qml = labels_qml(["a & b", '"quoted" <c>'])
    root = ET.fromstring(qml.split("\n", 1)[1])
    assert [c.get("value") for c in root.findall("renderer-v2/categories/category")] == [
        "a & b",
        '"quoted" <c>',
    ]


def system_gdal_reason() -> str | None:
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing: the field-domain check needs Debian's python3-gdal"
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "from osgeo import gdal"],
        capture_output=True,
        env=probe_env_clean(),
        timeout=60,
        check=False,
    )
    return None if proc.returncode == 0 else f"{SYSTEM_PYTHON} has no osgeo: install python3-gdal"


def probe_env_clean() -> dict[str, str]:
    leaky = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "GDAL_DATA", "PROJ_LIB", "PROJ_DATA"}
    return {k: v for k, v in os.environ.items() if k not in leaky}


DOMAIN_SCRIPT = r"""
import json, sys
from osgeo import gdal
gdal.UseExceptions()
ds = gdal.OpenEx(sys.argv[1], gdal.OF_VECTOR)
layer = ds.GetLayerByName("labels")
field = layer.GetLayerDefn().GetFieldDefn(layer.GetLayerDefn().GetFieldIndex("class"))
domain = ds.GetFieldDomain(field.GetDomainName())
print(json.dumps({
    "domain": field.GetDomainName(),
    "names": ds.GetFieldDomainNames(),
    "coded": domain.GetDomainType() == 0,
    "values": sorted(domain.GetEnumeration()),
}))
"""


def test_gdal_reads_the_field_domain(template: Path) -> None:
    reason = system_gdal_reason()
    if reason is not None:
        pytest.skip(reason)
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", DOMAIN_SCRIPT, str(template)],
        capture_output=True,
        text=True,
        env=probe_env_clean(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {
        "domain": DOMAIN_NAME,
        "names": [DOMAIN_NAME],
        "coded": True,
        "values": ["encroached", "open"],
    }


# --- the template refuses, from Python and from the command line ------------------------------


def test_existing_out_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "labels.gpkg"
    out.write_bytes(b"my precious labels \x00\x01")
    before = out.read_bytes()
    with pytest.raises(LabelError) as err:
        write_template(DEFAULT_AOI, out)
    assert_one_line(err, out, "exists already", "--out")
    result = runner.invoke(app, ["labels", "template", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "exists already" in result.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gpkg"]


@pytest.mark.parametrize(
    ("out_name", "classes", "needle"),
    [
        ("labels.geojson", "encroached,open", "does not end in .gpkg"),
        ("labels.gpkg", "encroached,encroached", "'encroached' is repeated"),
        ("labels.gpkg", "encroached,,open", "a class name is empty"),
        ("labels.gpkg", "encroached", "at least two classes"),
        ("missing/labels.gpkg", "encroached,open", "folder"),
    ],
)
def test_template_bad_cases_exit_2(
    tmp_path: Path, out_name: str, classes: str, needle: str
) -> None:
    out = tmp_path / out_name
    result = runner.invoke(app, ["labels", "template", "--out", str(out), "--classes", classes])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert str(out) in lines[0]
    assert needle in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_template_bad_aoi_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "labels.gpkg"
    aoi = tmp_path / "nope.geojson"
    result = runner.invoke(app, ["labels", "template", str(aoi), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.stderr
    assert str(aoi) in result.stderr
    assert not out.exists()


def test_template_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "labels.gpkg"
    result = runner.invoke(
        app, ["labels", "template", "--out", str(out), "--classes", "encroached, open ,water"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"wrote {out}: open it in QGIS, draw polygons on its layer 'labels' inside the AOI "
        "outline and pick a class (encroached, open, water) for each"
    )
    assert pyogrio.read_info(out, layer="labels")["features"] == 0
    result = runner.invoke(app, ["labels", "--help"])
    assert result.exit_code == 0
    assert "template" in result.stdout


# --- in QGIS ----------------------------------------------------------------------------------

#: Opens a template in QGIS, reports what a user sees, then draws polygons in it as a user
#: would (an edit session on the labels layer) and saves them.
QGIS_SCRIPT = r"""
import json, os, sys

from qgis.core import (
    Qgis, QgsApplication, QgsFeature, QgsGeometry, QgsVectorLayer,
)


def main():
    request = json.load(sys.stdin)
    app = QgsApplication([], False)
    QgsApplication.setPrefixPath("/usr", True)
    QgsApplication.initQgis()
    out = {"qgis_version": Qgis.QGIS_VERSION}
    layers = []
    for name in ("labels", "aoi"):
        layer = QgsVectorLayer(request["path"] + "|layername=" + name, name, "ogr")
        layers.append(layer)
        seen = {"valid": layer.isValid()}
        out[name] = seen
        if not layer.isValid():
            continue
        seen.update(
            crs=layer.crs().authid(),
            fields=[f.name() for f in layer.fields()],
            feature_count=layer.featureCount(),
            renderer=layer.renderer().type(),
            read_only=layer.readOnly(),
        )
        idx = layer.fields().indexOf("class")
        if idx < 0:
            continue
        setup = layer.editorWidgetSetup(idx)
        seen["widget"] = setup.type()
        seen["value_map"] = [list(entry.values())[0] for entry in setup.config().get("map", [])]
        seen["categories"] = [
            [c.value(), c.symbol().color().alpha()] for c in layer.renderer().categories()
        ]
    edit = QgsVectorLayer(request["edit_path"] + "|layername=labels", "edit", "ogr")
    layers.append(edit)
    edit.startEditing()
    added = []
    for cls, wkt in request["draw"]:
        feature = QgsFeature(edit.fields())
        feature.setAttribute("class", cls)
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        added.append(edit.addFeature(feature))
    out["edit"] = {"added": added, "committed": edit.commitChanges(), "errors": edit.commitErrors()}
    print("AGRIMON-QGIS-PROBE " + json.dumps(out), flush=True)


try:
    main()
except BaseException as exc:
    print("probe failed: %r" % (exc,), file=sys.stderr, flush=True)
    os._exit(1)
os._exit(0)  # exitQgis() can crash at teardown in 3.22 headless
"""


@pytest.mark.qgis
def test_template_in_qgis(tmp_path: Path) -> None:
    reason = qgis_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    path = write_template(DEFAULT_AOI, tmp_path / "labels.gpkg")
    edit_path = write_template(DEFAULT_AOI, tmp_path / "drawn.gpkg", ["encroached", "open"])
    # Two squares of 4 × 4 pixels on a 10 m grid in UTM 34S inside the AOI, edges 2.5 m off
    # the pixel centres, drawn in lon/lat as the QGIS layer is.
    utm = "EPSG:32734"
    x0, y0 = 206_000.0, 7_830_000.0
    to_lonlat = Transformer.from_crs(utm, "EPSG:4326", always_xy=True)
    squares = {
        "encroached": box(x0 + 2.5, y0 - 37.5, x0 + 37.5, y0 - 2.5),
        "open": box(x0 + 52.5, y0 - 37.5, x0 + 87.5, y0 - 2.5),
    }
    draw = [
        [
            cls,
            shapely.transform(
                shapely.segmentize(sq, 1.0), to_lonlat.transform, interleaved=False
            ).wkt,
        ]
        for cls, sq in squares.items()
    ]
    request = {"path": str(path), "edit_path": str(edit_path), "draw": draw}
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", QGIS_SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=probe_env(tmp_path),
        timeout=180,
        check=False,
    )
    report = f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    assert lines, report
    seen = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    labels = seen["labels"]
    assert labels["valid"]
    assert labels["crs"] == "EPSG:4326"
    assert labels["feature_count"] == 0
    assert {"class", "note"} <= set(labels["fields"])
    assert labels["widget"] == "ValueMap"
    assert labels["value_map"] == list(DEFAULT_TEMPLATE_CLASSES)
    assert labels["renderer"] == "categorizedSymbol"
    assert [c[0] for c in labels["categories"]] == list(DEFAULT_TEMPLATE_CLASSES)
    assert all(0 < c[1] < 255 for c in labels["categories"])
    aoi = seen["aoi"]
    assert aoi["valid"]
    assert aoi["feature_count"] == len(read_aoi(DEFAULT_AOI).zones)
    assert aoi["read_only"]
    # What QGIS saved reads back as labels, and burns onto the UTM grid as drawn.
    assert seen["edit"] == {
        "added": [True, True],
        "committed": True,
        "errors": ["SUCCESS: 2 feature(s) added."],
    }, seen
    read = read_labels(edit_path, "class", DEFAULT_TEMPLATE_CLASSES)
    assert list(read.frame["class"]) == ["encroached", "open"]
    geobox = GeoBox((5, 10), Affine(RES, 0, x0, 0, -RES, y0), utm)
    mask = rasterise_labels(read, geobox)
    assert pixels(mask, 1) == cells(range(4), range(4))
    assert pixels(mask, 2) == cells(range(4), range(5, 9))
    assert class_pixel_counts(mask, read.classes) == {"encroached": 16, "open": 16}


def test_no_warnings_on_a_clean_file(tmp_path: Path) -> None:
    path = write(tmp_path / "l.gpkg", TWO_POINTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_labels(path, "class")


def test_template_not_yet_drawn_in(template: Path) -> None:
    with pytest.raises(LabelError) as err:
        read_labels(template, "class")
    assert_one_line(err, template, "has no features", "draw polygons")
