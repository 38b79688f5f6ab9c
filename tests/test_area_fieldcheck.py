"""The field check end to end: `agrimon sample`, `agrimon assess`, bad input, QGIS.

The sample is filled in as a field team would (the truth at each point), then assessed in
total and per zone, on the map it was drawn on and on another one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from agrimon.area.estimator import estimate
from agrimon.area.fieldcheck import SAMPLE_LAYER, STRATA_TABLE, assess
from agrimon.area.sampling import allocate
from tests.test_qgis import RESULT_PREFIX, SYSTEM_PYTHON, probe_env, qgis_missing_reason

from .conftest import agrimon_cli

TRANSFORM = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 7_830_000.0)
CRS = "EPSG:32733"
CLASSES = ["encroached", "open"]
SHAPE = (120, 200)


def _world() -> tuple[np.ndarray, np.ndarray]:
    """A map (1 encroached, 2 open, 0 no data) and the truth it gets partly wrong."""
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    truth = np.where((xx - 60) ** 2 + (yy - 60) ** 2 < 40**2, 1, 2).astype(np.uint8)
    mapped = truth.copy()
    mapped[(xx > 140) & (yy < 40)] = 1  # commission: a block mapped encroached
    mapped[(xx > 85) & (xx < 100)] = 2  # omission: a strip of the patch mapped open
    mapped[:, :5] = 0  # no data along the west edge
    truth[:, :5] = 0
    return mapped, truth


def _write_map(path: Path, values: np.ndarray, *, dtype: str = "uint8") -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=values.shape[1],
        height=values.shape[0],
        count=1,
        dtype=dtype,
        crs=CRS,
        transform=TRANSFORM,
        nodata=0,
    ) as dst:
        dst.write(values.astype(dtype)[None])
        dst.update_tags(1, CATEGORY_NAMES=json.dumps(["", *CLASSES]))
    return path


def _sample(tmp_path: Path, map_path: Path, name: str = "sample.gpkg", *args: str) -> Path:
    out = tmp_path / name
    proc = agrimon_cli("sample", str(map_path), "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    return out


def _fill(sample: Path, truth: np.ndarray, out: Path) -> gpd.GeoDataFrame:
    """Fill the reference field with the truth at each point, as the field team would."""
    shutil.copy(sample, out)
    points = gpd.read_file(out, layer=SAMPLE_LAYER)
    cols, rows = ~TRANSFORM * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    values = truth[np.floor(rows).astype(int), np.floor(cols).astype(int)]
    points["reference"] = [CLASSES[v - 1] for v in values]
    points.to_file(out, layer=SAMPLE_LAYER, driver="GPKG")
    return points


def test_the_sample_is_stratified_by_map_class_and_reproducible(tmp_path: Path) -> None:
    mapped, _ = _world()
    map_path = _write_map(tmp_path / "map.tif", mapped)
    sample = _sample(tmp_path, map_path, "a.gpkg", "--n", "120", "--seed", "4")
    points = gpd.read_file(sample, layer=SAMPLE_LAYER)
    strata = pyogrio.read_dataframe(sample, layer=STRATA_TABLE, read_geometry=False)
    pixels = np.bincount(mapped.ravel(), minlength=3)[1:]
    assert strata["stratum"].tolist() == CLASSES
    assert strata["pixels"].tolist() == pixels.tolist()
    expected = allocate(120, pixels)
    assert strata["points"].tolist() == expected.tolist()
    assert points["stratum"].value_counts().reindex(CLASSES).tolist() == expected.tolist()
    assert len(points) == 120 and points["id"].tolist() == list(range(1, 121))
    assert points["reference"].isna().all()
    assert points.crs.to_epsg() == 32733
    # Every point sits on a pixel centre of its stratum, no pixel twice.
    cols, rows = ~TRANSFORM * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    assert np.allclose(cols % 1, 0.5) and np.allclose(rows % 1, 0.5)
    r, c = rows.astype(int), cols.astype(int)
    assert [CLASSES[v - 1] for v in mapped[r, c]] == points["stratum"].tolist()
    assert len(set(zip(r, c, strict=True))) == 120
    assert np.allclose(points["lon"], points.geometry.to_crs(4326).x, atol=1e-6)
    # The same seed draws the same points; another seed others.
    again = gpd.read_file(
        _sample(tmp_path, map_path, "b.gpkg", "--n", "120", "--seed", "4"), layer=SAMPLE_LAYER
    )
    other = gpd.read_file(
        _sample(tmp_path, map_path, "c.gpkg", "--n", "120", "--seed", "5"), layer=SAMPLE_LAYER
    )
    assert again.geometry.equals(points.geometry)
    assert not other.geometry.equals(points.geometry)
    # An existing file is never replaced.
    proc = agrimon_cli("sample", str(map_path), "--out", str(sample), "--n", "10")
    assert proc.returncode == 2 and "never replaced" in proc.stderr


def test_cochran_sizes_the_sample_when_no_n_is_given(tmp_path: Path) -> None:
    mapped, _ = _world()
    map_path = _write_map(tmp_path / "map.tif", mapped)
    sample = _sample(
        tmp_path, map_path, "s.gpkg", "--expected-accuracy", "0.7,0.9", "--target-se", "0.02"
    )
    pixels = np.bincount(mapped.ravel(), minlength=3)[1:]
    w = pixels / pixels.sum()
    by_hand = int(np.ceil((w @ np.sqrt([0.7 * 0.3, 0.9 * 0.1]) / 0.02) ** 2))
    assert len(gpd.read_file(sample, layer=SAMPLE_LAYER)) == by_hand


def test_assess_reports_adjusted_areas_in_total_and_per_zone(tmp_path: Path) -> None:
    mapped, truth = _world()
    map_path = _write_map(tmp_path / "map.tif", mapped)
    sample = _sample(tmp_path, map_path, "s.gpkg", "--n", "200", "--seed", "1")
    filled = tmp_path / "filled.gpkg"
    points = _fill(sample, truth, filled)
    # Two zones: the west and the east half of the map.
    left, top = TRANSFORM.c, TRANSFORM.f
    mid = left + 1000.0
    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[box(left, top - 1200, mid, top), box(mid, top - 1200, left + 2000, top)],
        crs=CRS,
    ).to_crs(4326)
    zones_path = tmp_path / "zones.geojson"
    zones.to_file(zones_path)
    out = tmp_path / "assessment"
    proc = agrimon_cli(
        "assess", str(map_path), "--reference", str(filled), "--zones", str(zones_path),
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "assessment.json").read_text())
    # The total is the estimator's on the same sample (strata = map classes).
    stratum = np.array([CLASSES.index(s) for s in points["stratum"]])
    reference = np.array([CLASSES.index(s) for s in points["reference"]])
    pixels = np.bincount(mapped.ravel(), minlength=3)[1:]
    direct = estimate(
        stratum, stratum, reference, stratum_pixels=pixels, classes=CLASSES,
        pixel_area_ha=0.01, map_pixels=pixels,
    )  # fmt: skip
    total = result["total"]
    enc = total["per_class"]["encroached"]
    assert enc["area_ha"]["value"] == pytest.approx(direct.area_ha[0].value, rel=1e-12)
    assert enc["area_ha"]["ci95"] == pytest.approx(direct.area_ha[0].ci95, rel=1e-12)
    assert enc["map_area_ha_biased"] == pytest.approx(pixels[0] * 0.01)
    assert total["zone_area_ha"] == pytest.approx(pixels.sum() * 0.01)
    # The true area lies in the interval; the map's count (biased) is reported beside it.
    true_ha = (truth == 1).sum() * 0.01
    assert abs(enc["area_ha"]["value"] - true_ha) <= enc["area_ha"]["ci95"]
    # Zones: their map areas add up to the total's, the points split between them.
    zone_results = result["zones"]
    assert set(zone_results) == {"west", "east"}
    for cls in CLASSES:
        parts = [zone_results[z]["per_class"][cls]["map_area_ha_biased"] for z in zone_results]
        assert sum(parts) == pytest.approx(total["per_class"][cls]["map_area_ha_biased"])
    x = points.geometry.x.to_numpy()
    assert zone_results["west"]["samples_in_zone"] == int((x < mid).sum())
    west_map = (mapped[:, :100] == 1).sum() * 0.01
    assert zone_results["west"]["per_class"]["encroached"]["map_area_ha_biased"] == pytest.approx(
        west_map
    )
    # The CSV carries the same figures, the total first.
    rows = (out / "assessment.csv").read_text().splitlines()
    assert rows[0].startswith("zone,class,zone_area_ha,map_area_ha_biased,area_ha,area_ha_ci95")
    assert rows[1].startswith("total,encroached,")
    assert float(rows[1].split(",")[4]) == pytest.approx(enc["area_ha"]["value"], rel=1e-5)
    assert len(rows) == 1 + 3 * len(CLASSES)


def test_a_perfect_map_gives_its_own_areas_with_no_error(tmp_path: Path) -> None:
    mapped, _ = _world()
    map_path = _write_map(tmp_path / "map.tif", mapped)
    sample = _sample(tmp_path, map_path, "s.gpkg", "--n", "60")
    filled = tmp_path / "filled.gpkg"
    _fill(sample, mapped, filled)
    result = assess(map_path, filled)
    pixels = np.bincount(mapped.ravel(), minlength=3)[1:]
    assert result.total.overall_accuracy.value == pytest.approx(1.0)
    assert np.allclose(result.total.area_ha.value, pixels * 0.01)
    assert np.allclose(result.total.area_ha.se, 0.0)


def test_a_sample_drawn_on_one_map_assesses_another(tmp_path: Path) -> None:
    """Stehman (2014): the strata are last season's map classes, not this map's."""
    mapped, truth = _world()
    old = _write_map(tmp_path / "old.tif", mapped)
    new_values = truth.copy()
    new_values[100:, :] = np.where(new_values[100:, :] > 0, 1, 0)  # a new band of encroachment
    new = _write_map(tmp_path / "new.tif", new_values)
    sample = _sample(tmp_path, old, "s.gpkg", "--n", "150", "--seed", "2")
    filled = tmp_path / "filled.gpkg"
    points = _fill(sample, truth, filled)
    result = assess(new, filled)
    # The map classes at the points are the new map's; the strata stay the old map's.
    cols, rows = ~TRANSFORM * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    on_new = new_values[rows.astype(int), cols.astype(int)] - 1
    stratum = np.array([CLASSES.index(s) for s in points["stratum"]])
    reference = np.array([CLASSES.index(s) for s in points["reference"]])
    direct = estimate(
        stratum, on_new, reference, stratum_pixels=np.bincount(mapped.ravel())[1:],
        classes=CLASSES, pixel_area_ha=0.01, map_pixels=np.bincount(new_values.ravel())[1:],
    )  # fmt: skip
    assert np.allclose(
        result.total.users_accuracy.value, direct.users_accuracy.value, equal_nan=True
    )
    assert np.allclose(result.total.area_ha.value, direct.area_ha.value)
    # The truth did not change: its estimated area is still close to the truth's.
    true_ha = (truth == 1).sum() * 0.01
    assert abs(result.total.area_ha[0].value - true_ha) <= 2 * result.total.area_ha[0].ci95


def test_bad_field_check_input_gets_one_line_and_exit_2(tmp_path: Path) -> None:
    mapped, truth = _world()
    map_path = _write_map(tmp_path / "map.tif", mapped)
    sample = _sample(tmp_path, map_path, "s.gpkg", "--n", "40")
    filled = tmp_path / "filled.gpkg"
    points = _fill(sample, truth, filled)

    def variant(name: str, frame: gpd.GeoDataFrame) -> Path:
        path = tmp_path / f"{name}.gpkg"
        shutil.copy(filled, path)
        frame.to_file(path, layer=SAMPLE_LAYER, driver="GPKG")
        return path

    outside = points.copy()
    outside.loc[0, "geometry"] = outside.geometry[0].__class__(0.0, 0.0)
    few = points.copy()
    keep = (
        few.index[few["stratum"] == "encroached"][:1].tolist()
        + few.index[few["stratum"] == "open"].tolist()
    )
    unknown = points.copy()
    unknown.loc[3, "reference"] = "bush"
    empty = points.copy()
    empty.loc[[2, 5], "reference"] = None
    float_map = _write_map(tmp_path / "float.tif", mapped.astype(np.float32), dtype="float32")
    cases = {
        "no reference field": (map_path, variant("nofield", points.drop(columns="reference")),
                               "has no field 'reference'"),
        "unknown class": (map_path, variant("unknown", unknown), "'bush' are not classes"),
        "outside": (map_path, variant("outside", outside), "lie outside map"),
        "one point in a stratum": (map_path, variant("few", few.loc[keep]),
                                   "variance cannot be estimated with fewer than 2 points"),
        "not filled in": (map_path, variant("empty", empty), "2 point(s) have no reference"),
        "float map": (float_map, filled, "is not a class raster"),
    }  # fmt: skip
    for name, (the_map, reference, expect) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        proc = agrimon_cli("assess", str(the_map), "--reference", str(reference), "--out", str(out))
        assert proc.returncode == 2, (name, proc.stderr)
        assert expect in proc.stderr, (name, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (name, proc.stderr)
        assert not out.exists(), name
    proc = agrimon_cli("sample", str(float_map), "--out", str(tmp_path / "x.gpkg"), "--n", "9")
    assert proc.returncode == 2 and "is not a class raster" in proc.stderr
    assert not (tmp_path / "x.gpkg").exists()


#: Opens a sample in QGIS and reports what a field team sees.
QGIS_SCRIPT = r"""
import json, os, sys
from qgis.core import Qgis, QgsApplication, QgsVectorLayer

def main():
    request = json.load(sys.stdin)
    app = QgsApplication([], False)
    QgsApplication.setPrefixPath("/usr", True)
    QgsApplication.initQgis()
    layer = QgsVectorLayer(request["path"] + "|layername=reference_sample", "s", "ogr")
    out = {"valid": layer.isValid()}
    if layer.isValid():
        idx = layer.fields().indexOf("reference")
        setup = layer.editorWidgetSetup(idx)
        out.update(
            crs=layer.crs().authid(),
            feature_count=layer.featureCount(),
            renderer=layer.renderer().type(),
            widget=setup.type(),
            value_map=[list(e.values())[0] for e in setup.config().get("map", [])],
        )
    print("AGRIMON-QGIS-PROBE " + json.dumps(out), flush=True)

try:
    main()
except BaseException as exc:
    print("probe failed: %r" % (exc,), file=sys.stderr, flush=True)
    os._exit(1)
os._exit(0)
"""


@pytest.mark.qgis
def test_the_sample_opens_styled_in_qgis(tmp_path: Path) -> None:
    reason = qgis_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    mapped, _ = _world()
    sample = _sample(tmp_path, _write_map(tmp_path / "map.tif", mapped), "s.gpkg", "--n", "30")
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", QGIS_SCRIPT],
        input=json.dumps({"path": str(sample)}),
        capture_output=True,
        text=True,
        env=probe_env(tmp_path),
        timeout=180,
        check=False,
    )
    report = f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, report
    seen = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    assert seen["valid"], report
    assert seen["crs"] == "EPSG:32733" and seen["feature_count"] == 30
    assert seen["renderer"] == "RuleRenderer"
    assert seen["widget"] == "ValueMap" and seen["value_map"] == CLASSES
