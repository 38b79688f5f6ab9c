"""Polygons of a class map: seams, the MMU sieve, coverage simplification, attributes, writers.

Every map is a hand-made array written as a real GeoTIFF (UTM 33S, 10 m pixels); expected
patches, pixel counts and means are worked out from the array itself with scipy's labelling,
independently of the vectoriser. Small windows (16 and 37 pixels) make patches cross many
window seams and corners.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize
from scipy import ndimage

from agrimon.area import polygons as poly
from agrimon.area.polygons import (
    ArrayMaps,
    mmu_pixels,
    sieve,
    vectorise,
    vectorise_maps,
    write_polygons,
)
from agrimon.errors import ConfigError, ProductError
from agrimon.products import vectors
from agrimon.products.cog import CogWriter, Layer
from agrimon.products.vectors import write_geojson, write_geopackage

EPSG = 32733  # UTM 33S: a Namibian savanna
TRANSFORM = Affine(10, 0, 500_000, 0, -10, 7_800_000)
CLASSES = ["grass", "bush", "water"]
GRASS, BUSH, WATER = 1, 2, 3
NODATA = 255  # of the percent rasters, as the monitor writes them


def write_tif(path: Path, values: NDArray[Any], *, nodata: float | None = None) -> Path:
    """A single-band GeoTIFF of ``values`` on :data:`TRANSFORM`."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=values.shape[1],
        height=values.shape[0],
        count=1,
        dtype=values.dtype,
        crs=f"EPSG:{EPSG}",
        transform=TRANSFORM,
        nodata=nodata,
    ) as dst:
        dst.write(values, 1)
    return path


def seam_map() -> NDArray[np.uint8]:
    """80 x 90 pixels whose patches cross window seams of 16 and 37 pixels in every way."""
    a = np.full((80, 90), GRASS, dtype=np.uint8)
    a[10:42, 10:42] = BUSH  # a ring of bush ...
    a[14:38, 14:38] = WATER  # ... around water: a polygon with a hole holding another
    a[44:52, 44:52] = BUSH  # over the corner (48, 48) of four 16 px windows
    a[56:64, 56:64] = BUSH  # two squares meeting only at the window corner (64, 64):
    a[64:72, 64:72] = BUSH  # two patches with 4-connectivity
    a[76, 2:88] = BUSH  # a one-pixel line through six windows
    a[0:6, 80:90] = 0  # nodata
    return a


def percent_maps(shape: tuple[int, int]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Probability and uncertainty in percent (uint8), with some nodata in the probability."""
    rows, cols = np.indices(shape)
    probability = ((rows * 7 + cols * 3) % 101).astype(np.uint8)
    probability[46:50, 40:50] = NODATA  # inside the corner patch and the grass around it
    uncertainty = ((rows + 2 * cols) % 50).astype(np.uint8)
    return probability, uncertainty


def components(classes: NDArray[np.uint8]) -> list[tuple[int, NDArray[np.bool_]]]:
    """Every 4-connected patch as (class value, mask), from scipy alone."""
    found = []
    for value in np.unique(classes[classes > 0]):
        labels, count = ndimage.label(classes == value)
        found += [(int(value), labels == i) for i in range(1, count + 1)]
    return found


def burn(frame: gpd.GeoDataFrame, shape: tuple[int, int]) -> NDArray[np.int32]:
    """Polygon ids on the pixel grid (0 outside every polygon)."""
    if frame.empty:
        return np.zeros(shape, dtype=np.int32)
    pairs = zip(frame.geometry, frame["id"], strict=True)
    burnt = rasterize(pairs, out_shape=shape, transform=TRANSFORM, fill=0, dtype="int32")
    return np.asarray(burnt, dtype=np.int32)


def maps_files(tmp_path: Path, classes: NDArray[np.uint8]) -> dict[str, Path]:
    probability, uncertainty = percent_maps(classes.shape)
    return {
        "class_path": write_tif(tmp_path / "invasive_class.tif", classes, nodata=0),
        "probability_path": write_tif(tmp_path / "p.tif", probability, nodata=NODATA),
        "uncertainty_path": write_tif(tmp_path / "u.tif", uncertainty, nodata=NODATA),
    }


# --- seams ---------------------------------------------------------------------------------


def test_patches_cut_by_window_seams_are_one_polygon_each(tmp_path: Path) -> None:
    classes = seam_map()
    files = maps_files(tmp_path, classes)
    frames = {
        w: vectorise(**files, classes=CLASSES, mmu_ha=0, simplify_px=0, window_px=w)
        for w in (16, 37, 200)
    }
    frame = frames[16]
    expected = components(classes)
    assert len(frame) == len(expected)
    ids = burn(frame, classes.shape)
    probability, uncertainty = percent_maps(classes.shape)
    for value, mask in expected:
        # Exactly one polygon covers exactly this patch's pixels, with its numbers.
        (number,) = np.unique(ids[mask])
        assert (ids == number).sum() == mask.sum()
        row = frame.set_index("id").loc[number]
        assert row["class"] == CLASSES[value - 1]
        assert row["pixels"] == mask.sum()
        assert row["area_ha"] == mask.sum() * 100 / 10_000
        assert row.geometry.area == pytest.approx(mask.sum() * 100, rel=1e-12)
        valid = mask & (probability != NODATA)
        assert row["mean_probability"] == pytest.approx(probability[valid].mean(), rel=1e-12)
        assert row["mean_uncertainty"] == pytest.approx(uncertainty[mask].mean(), rel=1e-12)
    assert frame.geometry.is_valid.all()
    assert set(frame.geometry.geom_type) == {"Polygon"}
    # The ring is one polygon with one hole, and the water fills the hole.
    ring = frame[(frame["class"] == "bush") & (frame["pixels"] == 32 * 32 - 24 * 24)]
    (geometry,) = ring.geometry
    assert len(geometry.interiors) == 1
    (water,) = frame[frame["class"] == "water"].geometry
    assert shapely.Polygon(geometry.interiors[0]).equals(water)
    # The two squares that meet at a window corner stay two patches of 64 pixels.
    assert (frame[frame["class"] == "bush"]["pixels"] == 64).sum() == 3
    for w in (37, 200):
        assert_same(frames[w], frame)


def assert_same(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    """Identical attributes and identical vertices."""
    assert list(got.columns) == list(want.columns)
    for column in got.columns.drop("geometry"):
        assert got[column].tolist() == want[column].tolist(), column
    assert shapely.equals_exact(got.geometry.values, want.geometry.values, 0).all()


def test_noisy_map_gives_the_same_polygons_for_any_window() -> None:
    classes = noisy_map(seed=5, shape=(70, 83))
    frames = [
        vectorise_maps(
            ArrayMaps(classes),
            transform=TRANSFORM,
            crs=EPSG,
            classes=CLASSES,
            mmu_ha=0.2,
            window_px=w,
        )
        for w in (16, 37, 100)
    ]
    assert len(frames[0]) > 5
    for frame in frames[1:]:
        assert_same(frame, frames[0])


def noisy_map(seed: int, shape: tuple[int, int]) -> NDArray[np.uint8]:
    """Blobs of three classes with salt-and-pepper pixels and a nodata bay."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.uniform_filter(rng.random(shape), 5)
    classes = np.digitize(smooth, np.quantile(smooth, [0.4, 0.8])).astype(np.uint8) + 1
    salt = rng.random(shape) < 0.03
    classes[salt] = rng.integers(1, 4, int(salt.sum()))
    classes[: shape[0] // 3, : shape[1] // 4] = 0
    return np.asarray(classes, dtype=np.uint8)


# --- the sieve -----------------------------------------------------------------------------


def test_sieve_removes_exactly_the_patches_below_the_mmu(tmp_path: Path) -> None:
    a = np.full((40, 60), GRASS, dtype=np.uint8)
    a[2:9, 2:9] = BUSH  # 49 px < 0.5 ha: merged into the grass
    a[2:7, 15:25] = BUSH  # 50 px = 0.5 ha: kept
    a[12:15, 2:19] = BUSH  # 51 px: kept
    a[30:, :] = 0  # nodata ...
    a[34:36, 10:15] = BUSH  # ... around 10 px of bush: dropped
    a[32:38, 30:40] = BUSH  # ... and around 60 px: kept
    path = write_tif(tmp_path / "c.tif", a, nodata=0)
    frame = vectorise(path, classes=CLASSES, window_px=16)
    assert mmu_pixels(0.5, TRANSFORM) == 50
    assert sorted(frame[frame["class"] == "bush"]["pixels"]) == [50, 51, 60]
    (grass,) = frame[frame["class"] == "grass"]["pixels"]
    assert grass == (a == GRASS).sum() + 49
    assert frame["pixels"].sum() == (a > 0).sum() - 10
    assert (frame["area_ha"] >= 0.5).all()
    ids = burn(vectorise(path, classes=CLASSES, window_px=16, simplify_px=0), a.shape)
    assert (ids[34:36, 10:15] == 0).all()  # the dropped island left a hole in the map
    assert len(np.unique(ids[2:9, 2:9])) == 1  # the small patch lies in the grass polygon


def test_sieved_map_is_a_map_of_whole_patches_none_below_the_mmu() -> None:
    classes = noisy_map(seed=11, shape=(90, 75))
    frame = vectorise_maps(
        ArrayMaps(classes), transform=TRANSFORM, crs=EPSG, classes=CLASSES, simplify_px=0
    )
    ids = burn(frame, classes.shape)
    assert (ids[classes == 0] == 0).all()  # nothing grows into nodata
    sieved = np.zeros_like(classes)
    for number, name in zip(frame["id"], frame["class"], strict=True):
        sieved[ids == number] = CLASSES.index(name) + 1
    # The polygons are exactly the 4-connected patches of the sieved map, none under 50 px,
    # and each polygon's pixel count is its patch's.
    patches = components(sieved)
    assert len(patches) == len(frame)
    assert min(int(mask.sum()) for _, mask in patches) >= 50
    counts = frame.set_index("id")["pixels"]
    for _, mask in patches:
        (number,) = np.unique(ids[mask])
        assert counts[number] == mask.sum()
    assert frame.geometry.area.to_numpy() == pytest.approx(frame["pixels"] * 100.0, rel=1e-12)


def test_sieve_merges_into_the_neighbour_with_the_longest_border() -> None:
    borders = (np.array([0, 1]), np.array([1, 2]), np.array([2, 4]))
    # Patch 1 (3 px) shares 2 edges with the large patch 0 and 4 with patch 2.
    got = sieve(np.array([1, 2, 3]), np.array([100, 3, 60]), np.arange(3), borders, 10)
    assert got.tolist() == [0, 2, 2]


def test_sieve_joins_the_patches_a_merge_connects() -> None:
    # A thin bush patch between two grass patches: equal borders and sizes, so the lower key
    # wins; the other grass patch then touches it and joins.
    borders = (np.array([0, 1]), np.array([1, 2]), np.array([5, 5]))
    got = sieve(np.array([1, 2, 1]), np.array([100, 5, 100]), np.arange(3), borders, 10)
    assert got.tolist() == [0, 0, 0]


def test_sieve_merges_small_patches_until_none_is_small() -> None:
    # Two 4 px patches: the first merges into the second, which is still small and merges on.
    borders = (np.array([0, 1]), np.array([1, 2]), np.array([3, 1]))
    got = sieve(np.array([1, 2, 1]), np.array([4, 4, 100]), np.arange(3), borders, 10)
    assert got.tolist() == [2, 2, 2]


def test_sieve_drops_small_patches_with_only_nodata_around() -> None:
    borders = (np.array([1]), np.array([2]), np.array([2]))
    got = sieve(np.array([1, 1, 2]), np.array([5, 4, 3]), np.arange(3), borders, 10)
    assert got.tolist() == [-1, -1, -1]
    got = sieve(np.array([1, 1, 2]), np.array([50, 4, 30]), np.arange(3), borders, 10)
    assert got.tolist() == [0, 2, 2]


# --- simplification ------------------------------------------------------------------------


def test_simplification_opens_no_gap_and_no_overlap() -> None:
    classes = noisy_map(seed=3, shape=(80, 80))
    kwargs: dict[str, Any] = {"transform": TRANSFORM, "crs": EPSG, "classes": CLASSES}
    exact = vectorise_maps(ArrayMaps(classes), simplify_px=0, **kwargs)
    simple = vectorise_maps(ArrayMaps(classes), simplify_px=1.0, **kwargs)
    assert simple.drop(columns="geometry").equals(exact.drop(columns="geometry"))
    geometries = simple.geometry.to_numpy()
    assert shapely.is_valid(geometries).all()
    assert shapely.get_num_coordinates(geometries).sum() < (
        0.8 * shapely.get_num_coordinates(exact.geometry.to_numpy()).sum()
    )
    # No overlaps: every pair of polygons meets at most along lines.
    assert shapely.coverage_is_valid(geometries)
    tree = shapely.STRtree(geometries)
    left, right = tree.query(geometries, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(geometries[left[pairs]], geometries[right[pairs]]))
    assert overlap.max() < 1e-6
    # No gaps: the union has the same holes and outline, moved by at most two tolerances.
    before, after = shapely.union_all(exact.geometry), shapely.union_all(geometries)
    assert shapely.get_num_interior_rings(after) == shapely.get_num_interior_rings(before)
    assert shapely.hausdorff_distance(before, after) <= 20.0
    assert after.area == pytest.approx(before.area, rel=0.01)
    assert after.area == pytest.approx(shapely.area(geometries).sum(), rel=1e-9)


# --- attributes and the monitor's files ----------------------------------------------------


def write_cog(path: Path, values: NDArray[Any], layer: Layer) -> Path:
    grid = GeoBox(values.shape, TRANSFORM, f"EPSG:{EPSG}")
    with CogWriter(path, grid, layer) as writer:
        writer.write(grid, values)
    return path


def test_reads_the_monitor_cogs_and_their_class_names(tmp_path: Path) -> None:
    classes = seam_map()
    probability, uncertainty = percent_maps(classes.shape)
    categories = ("", *CLASSES)
    class_layer = Layer("invasive_class", "c", "uint8", 0, "1", "nearest", (), categories)
    percent = Layer("invasive_probability", "p", "uint8", NODATA, "%")
    frame = vectorise(
        write_cog(tmp_path / "invasive_class.tif", classes, class_layer),
        probability_path=write_cog(tmp_path / "invasive_probability.tif", probability, percent),
        uncertainty_path=write_cog(tmp_path / "invasive_uncertainty.tif", uncertainty, percent),
        mmu_ha=0,
        window_px=37,
    )
    assert set(frame["class"]) == set(CLASSES)
    assert frame["pixels"].sum() == (classes > 0).sum()
    assert frame.crs.to_epsg() == EPSG
    (water,) = frame[frame["class"] == "water"].itertuples()
    assert water.mean_probability == pytest.approx(probability[classes == WATER].mean())


def test_means_by_hand(tmp_path: Path) -> None:
    classes = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 2, 2], [0, 0, 0, 0]], np.uint8)
    probability = np.array(
        [[10, 20, 50, 60], [30, 40, 70, 80], [0, 0, 90, 255], [0, 0, 0, 0]], np.uint8
    )
    uncertainty = np.full((4, 4), 7, np.uint8)
    frame = vectorise(
        write_tif(tmp_path / "c.tif", classes, nodata=0),
        probability_path=write_tif(tmp_path / "p.tif", probability, nodata=NODATA),
        uncertainty_path=write_tif(tmp_path / "u.tif", uncertainty, nodata=NODATA),
        classes=CLASSES,
        mmu_ha=0,
        window_px=3,
    )
    assert frame["class"].tolist() == ["grass", "bush"]
    assert frame["pixels"].tolist() == [4, 6]
    assert frame["area_ha"].tolist() == [0.04, 0.06]
    assert frame["mean_probability"].tolist() == [25.0, 70.0]  # the 255 is nodata
    assert frame["mean_uncertainty"].tolist() == [7.0, 7.0]


def test_means_are_left_out_without_their_rasters() -> None:
    frame = vectorise_maps(
        ArrayMaps(seam_map()), transform=TRANSFORM, crs=EPSG, classes=CLASSES, window_px=37
    )
    assert list(frame.columns) == ["id", "class", "pixels", "area_ha", "geometry"]
    assert frame["id"].tolist() == list(range(1, len(frame) + 1))


def test_an_empty_map_gives_no_polygons(tmp_path: Path) -> None:
    frame = vectorise_maps(
        ArrayMaps(np.zeros((20, 20), np.uint8)), transform=TRANSFORM, crs=EPSG, classes=CLASSES
    )
    assert frame.empty
    written = write_polygons(frame, tmp_path / "p.geojson", tmp_path / "p.gpkg")
    assert [len(gpd.read_file(p)) for p in written] == [0, 0]


# --- errors --------------------------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo[Exception], *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_float_raster_is_not_a_class_raster(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "probability.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(ConfigError) as err:
        vectorise(path, classes=CLASSES)
    one_line(err, str(path), "uint8")


def test_class_values_beyond_the_classes_are_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "c.tif", np.full((40, 40), 3, np.uint8), nodata=0)
    with pytest.raises(ConfigError) as err:
        vectorise(path, classes=CLASSES[:2], window_px=16)
    one_line(err, str(path), "class value 3", "2 classes")


def test_rasters_on_other_grids_are_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "c.tif", np.ones((8, 8), np.uint8), nodata=0)
    other = write_tif(tmp_path / "p.tif", np.ones((8, 9), np.uint8), nodata=NODATA)
    with pytest.raises(ConfigError) as err:
        vectorise(path, probability_path=other, classes=CLASSES)
    one_line(err, str(other), str(path))


def test_a_raster_without_class_names_needs_them(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "c.tif", np.ones((8, 8), np.uint8), nodata=0)
    with pytest.raises(ConfigError) as err:
        vectorise(path)
    one_line(err, str(path), "classes=")


@pytest.mark.parametrize("classes", [CLASSES, None])
def test_a_missing_raster_is_one_line(tmp_path: Path, classes: list[str] | None) -> None:
    with pytest.raises(ConfigError) as err:
        vectorise(tmp_path / "nothing.tif", classes=classes)
    one_line(err, "nothing.tif")


def test_corners_and_nodes_of_pixel_polygons() -> None:
    # A union along a seam keeps the seam's vertex (2, 0); a multipolygon keeps its parts.
    cut = shapely.Polygon([(0, 0), (2, 0), (4, 0), (4, 1), (0, 1)])
    two = shapely.MultiPolygon([shapely.box(6, 0, 7, 1), shapely.box(8, 0, 9, 3)])
    plain = poly.corners_only(np.array([cut, two], dtype=object))
    assert shapely.get_num_coordinates(plain).tolist() == [5, 10]
    assert shapely.equals(plain, np.array([cut, two], dtype=object)).all()
    # Below the long edge, two neighbours meet at x = 2: the edge must get that vertex.
    left, right = shapely.box(0, 1, 2, 3), shapely.box(2, 1, 4, 3)
    noded = poly.node_coverage(np.array([plain[0], left, right], dtype=object))
    assert not shapely.coverage_is_valid([plain[0], left, right])
    assert shapely.coverage_is_valid(noded)
    assert shapely.get_num_coordinates(noded[0]) == 6
    assert shapely.area(noded).tolist() == [4.0, 4.0, 4.0]


# --- writers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seam_frame() -> gpd.GeoDataFrame:
    classes = seam_map()
    probability, uncertainty = percent_maps(classes.shape)
    maps = ArrayMaps(
        classes,
        np.where(probability == NODATA, np.nan, probability),
        uncertainty.astype(np.float64),
    )
    return vectorise_maps(maps, transform=TRANSFORM, crs=EPSG, classes=CLASSES, mmu_ha=0)


def signed_area(ring: list[list[float]]) -> float:
    """Shoelace area, positive for a counter-clockwise ring (x east, y north)."""
    xy = np.asarray(ring)
    x, y = xy[:, 0], xy[:, 1]
    return float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) / 2)


def test_geojson_follows_rfc_7946(tmp_path: Path, seam_frame: gpd.GeoDataFrame) -> None:
    path = write_geojson(seam_frame, tmp_path / "out" / "invasive_polygons.geojson")
    document = json.loads(path.read_text())  # strict JSON: no NaN
    assert "crs" not in document
    features = document["features"]
    assert len(features) == len(seam_frame)
    holes = 0
    for feature in features:
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        exterior, *interiors = geometry["coordinates"]
        assert signed_area(exterior) > 0  # counter-clockwise
        assert all(signed_area(ring) < 0 for ring in interiors)  # clockwise
        holes += len(interiors)
        for lon, lat in (xy for ring in geometry["coordinates"] for xy in ring):
            # UTM 33S, 500 km east and 7800 km north: about 15° E, 19.9° S.
            assert 14.99 < lon < 15.02 and -19.92 < lat < -19.85
            assert round(lon, 7) == lon and round(lat, 7) == lat
    assert holes >= 2  # the bush ring's hole, and the grass around the patches
    read = gpd.read_file(path)
    assert read.crs.to_epsg() == 4326
    assert read["id"].tolist() == seam_frame["id"].tolist()
    assert read["mean_probability"].to_numpy() == pytest.approx(
        seam_frame["mean_probability"].to_numpy()
    )


def test_geopackage_reads_back_the_same_layer(tmp_path: Path, seam_frame: gpd.GeoDataFrame) -> None:
    path = write_geopackage(seam_frame, tmp_path / "polygons.gpkg", layer="bush_polygons")
    assert pyogrio.list_layers(path).tolist() == [["bush_polygons", "Polygon"]]
    read = pyogrio.read_dataframe(path, layer="bush_polygons")
    assert read.crs.to_epsg() == EPSG
    assert len(read) == len(seam_frame)
    for column in ("id", "class", "pixels", "area_ha", "mean_probability", "mean_uncertainty"):
        assert read[column].tolist() == seam_frame[column].tolist(), column
    assert read.geometry.area.to_numpy() == pytest.approx(seam_frame.geometry.area.to_numpy())
    assert shapely.equals_exact(read.geometry.values, seam_frame.geometry.values, 1e-9).all()


@pytest.mark.parametrize("name", ["polygons.geojson", "polygons.gpkg"])
def test_a_failed_write_leaves_the_old_file_and_nothing_else(
    tmp_path: Path, seam_frame: gpd.GeoDataFrame, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = tmp_path / name
    geojson, gpkg = (path, None) if name.endswith("json") else (None, path)
    write_polygons(seam_frame, geojson, gpkg)
    before = path.read_bytes()

    def full_disk(frame: gpd.GeoDataFrame, target: Path, **options: Any) -> None:
        target.write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(vectors, "_write", full_disk)
    with pytest.raises(ProductError) as err:
        write_polygons(seam_frame.head(2), geojson, gpkg)
    one_line(err, name, "disk is full")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_mmu_in_pixels_follows_the_pixel_area() -> None:
    assert mmu_pixels(0.5, TRANSFORM) == 50
    assert mmu_pixels(0, TRANSFORM) == 0
    assert mmu_pixels(0.5, Affine(20, 0, 0, 0, -20, 0)) == math.ceil(5000 / 400)
    with pytest.raises(ConfigError):
        mmu_pixels(-1, TRANSFORM)
